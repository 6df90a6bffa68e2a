"""`python -m negotiax.cli <verb> ...` (as `accelerate launch -m negotiax.cli` runs it) is the `negotiax` command."""
import sys

from . import main

sys.exit(main())
