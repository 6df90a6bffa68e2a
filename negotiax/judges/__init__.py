"""Judges: one small interface (base.Judge), registered by name; `load_all()` imports every judge module
(local heads in judges/local/) and lists the names."""
from __future__ import annotations

import importlib
import logging
import pkgutil

from .base import JUDGES, KINDS, Judge, make_judge, register_judge

log = logging.getLogger(__name__)


def load_all() -> list[str]:
    """Import every judge module in this package so each registers itself; returns the judge names."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base",):
            try:
                importlib.import_module(f"{__name__}.{info.name}")
            except ImportError as err:  # an optional judge whose dependency is absent stays unavailable
                log.debug("judge module %s not loaded: %s", info.name, err)
    return sorted(JUDGES)


__all__ = ["JUDGES", "KINDS", "Judge", "load_all", "make_judge", "register_judge"]
