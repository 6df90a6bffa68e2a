"""`python -m negotiax <verb> ...` is the same as the `negotiax` command."""
import sys

from .cli import main

sys.exit(main())
