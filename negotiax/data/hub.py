"""Rows of a dataset through the Hugging Face `datasets` library (a hub id, or a builder such as "json")."""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


class HubUnavailable(RuntimeError):
    """The hub could not be used (offline, unknown id, no network); the caller reports what it tried."""


def offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_rows(name: str, config: str | None = None, split: str = "train",
             data_files: str | list[str] | None = None) -> list[dict]:
    """All rows of `split` as plain dicts; local builders ("json", "csv") with data_files work offline."""
    local = data_files is not None
    if offline() and not local:
        raise HubUnavailable("HF_HUB_OFFLINE is set")
    try:
        import datasets
    except ImportError:
        raise HubUnavailable("the `datasets` package is not installed (pip install datasets)") from None
    try:
        ds = datasets.load_dataset(name, config, split=split, data_files=data_files)
    except (ConnectionError, OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
        if local:
            raise ValueError(f"{data_files}: `datasets` could not read it as {name!r}: {err}") from None
        raise HubUnavailable(f"{type(err).__name__}: {str(err)[:200]}") from None
    log.info("loaded %d rows of %s (%s, split %s)", len(ds), name, config, split)
    return [dict(row) for row in ds]
