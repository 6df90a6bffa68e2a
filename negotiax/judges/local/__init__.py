"""Local judges: small logistic heads on a frozen backbone's hidden states, trained and shipped with the
library (heads in judges/heads/). `judge` loads and runs a head (and registers local-safety / local-truth /
local-info), `features` extracts the hidden-state features, `data` builds the labelled sets, `train` fits a
head and `card` writes its model card (scripts/train_local_judges.py runs the last three).
"""
from .judge import HEADS_DIR, LocalHead, LocalJudge

__all__ = ["HEADS_DIR", "LocalHead", "LocalJudge"]
