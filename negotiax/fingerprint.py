"""Stage fingerprints: a re-run never reuses results that were made with other settings.

Each stage writes a record next to its output: {"stage", "fingerprint", "values"}, where `values` maps
dotted keys ("train.lr") to what determined the output, and `fingerprint` is the sha256 of their canonical
JSON. A re-run in the same place compares: the same fingerprint resumes or reuses the stage; another one
stops with `SettingsChangedError`, which names each changed key (old -> new). `--fresh` starts over by
renaming the old outputs to `<name>.old-<UTC timestamp>` (nothing is deleted; see `set_aside`).

NEUTRAL is the one list of recipe keys that never change a number a stage writes (logging, checkpoint
cadence, progress bars, cache locations, the run's name and folder); every other key is fingerprinted.
OFF_BY_DEFAULT lists keys added after runs were recorded, with the value that leaves a stage exactly as it was
before the key existed: at that value they are left out, so older records still match; any other value counts.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .io import read_json, write_json

log = logging.getLogger(__name__)

NEUTRAL = frozenset({
    "name", "output_dir",  # a label and a place, not a setting
    "model.cache_dir",  # where the default model's converted copy is kept, not which model
    "train.log_every", "train.report_to", "train.progress",  # what is logged and shown
    "train.save_every", "train.keep_last",  # a resumed run replays exactly from any checkpoint
    "eval.cache_path",  # the judge cache is keyed by judge identity and item: a hit is that judge's score
})
OFF_BY_DEFAULT = {
    # the routing warm start (negotiax.train.route_fit): off with 0 prompts; its steps and lr at their defaults
    "train.route_fit_prompts": 0, "train.route_fit_steps": 50, "train.route_fit_lr": 0.01,
    "train.route_decision_share": 0.0,  # the routing loss's share at the decision position: 0, as before
    "circuit.logit_cap": None,  # the negotiation's logits uncapped, as before
    "circuit.gate": None,  # the soft mixture alpha, as before (hard routing added later)
    "train.lambda_off": 0.0,  # no off-target penalty, as before
    # a data source's fields added later (see SOURCE_OFF_BY_DEFAULT)
    "data.benign.offset": 0, "data.benign.route": None, "data.benign.prompt_match": None,
    "data.benign.response": None, "data.benign.categories": None,
}
# The same for CircuitConfig fields added after generation records named a circuit's whole configuration.
CIRCUIT_ADDED = {"gate": None}
# The same for fields added later to the data sources listed under data.train / data.test (lists of mappings).
SOURCE_OFF_BY_DEFAULT = {"offset": 0, "route": None, "prompt_match": None, "response": None, "categories": None}
FRESH_HINT = ("re-run with --fresh to start over (the old outputs are renamed to <name>.old-<timestamp>; "
              "nothing is deleted), or choose another output_dir")


class SettingsChangedError(ValueError):
    """A stage's outputs on disk were made with other settings than the ones asked for now."""


def canonical(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal settings give equal text (tuples read as lists)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def fingerprint(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(values).encode()).hexdigest()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}; lists and other leaves stay whole."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def settings(tree: Mapping[str, Any], sections: Iterable[str] | None = None) -> dict[str, Any]:
    """The flattened, non-neutral keys of `tree` (a recipe as a dict), restricted to `sections`."""
    picked = tree if sections is None else {s: tree[s] for s in sections}
    return {k: _sources_as_before(k, v) for k, v in flatten(picked).items()
            if k not in NEUTRAL and not (k in OFF_BY_DEFAULT and canonical(v) == canonical(OFF_BY_DEFAULT[k]))}


def _sources_as_before(key: str, value: Any) -> Any:
    """An objective's data sources (data.train.* / data.test.*, a list of mappings) without the
    SOURCE_OFF_BY_DEFAULT fields that are at their old-behaviour value; any other value as it is."""
    if not key.startswith(("data.train.", "data.test.")) or not isinstance(value, list):
        return value
    return [{k: v for k, v in item.items()
             if not (k in SOURCE_OFF_BY_DEFAULT and canonical(v) == canonical(SOURCE_OFF_BY_DEFAULT[k]))}
            if isinstance(item, Mapping) else item for item in value]


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """'key: old -> new' for every key whose value differs (a key only on one side shows as 'absent')."""
    out = []
    for key in sorted(set(old) | set(new)):
        a = canonical(old[key]) if key in old else "absent"
        b = canonical(new[key]) if key in new else "absent"
        if a != b:
            out.append(f"{key}: {a} -> {b}")
    return out


def tensors_checksum(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """sha256 over names, dtypes, shapes and bytes of `tensors` in name order; None when there are none."""
    if not tensors:
        return None
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_identity(model) -> dict:
    """The backbone as far as it decides outputs: its name, dtype and any LoRA weights."""
    params = dict(model.named_parameters())
    first = next(iter(params.values()), None)
    return {"name_or_path": str(getattr(getattr(model, "config", None), "_name_or_path", "") or ""),
            "dtype": str(first.dtype) if first is not None else None,
            "lora": tensors_checksum({n: p for n, p in params.items() if "lora_" in n})}


def preference_in_effect(attachment) -> dict | list | None:
    """The circuit's preference beta now: one dict, or one per sequence; None without a circuit."""
    if attachment is None:
        return None
    rows = attachment.circuit.row_preferences()
    return rows if rows is not None else attachment.circuit.preference()


def circuit_identity(attachment) -> dict | None:
    """An attached circuit's weights (checksum), configuration and the preference in effect now."""
    if attachment is None:
        return None
    circuit = attachment.circuit
    # a circuit field added later is left out at its old-behaviour value, so that older records still match
    config = {k: v for k, v in dataclasses.asdict(circuit.cfg).items()
              if not (k in CIRCUIT_ADDED and canonical(v) == canonical(CIRCUIT_ADDED[k]))}
    return {"weights": tensors_checksum(circuit.state_dict()), "config": config,
            "preference": preference_in_effect(attachment)}


def git_state() -> tuple[str | None, bool | None]:
    """(revision, has uncommitted changes) of the checkout this package runs from; (None, None) outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                                    cwd=Path(__file__).parent, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None
    return rev, dirty


def check(record_path: Path, stage: str, values: Mapping[str, Any], outputs_exist: bool) -> bool:
    """True when `record_path` says the outputs there were made with exactly `values` (reuse or resume them);
    False when there are no outputs yet; SettingsChangedError when the outputs were made otherwise."""
    record = read_json(record_path)
    where = record_path.parent
    if record is not None and record.get("fingerprint") == fingerprint(values):
        return outputs_exist
    if not outputs_exist:
        return False
    if record is None:
        raise SettingsChangedError(
            f"{where} already holds {stage} outputs but no record of the settings that made them "
            f"({record_path.name} is missing: written by an older NegotiaX?); they cannot be reused safely. "
            f"To keep them, {FRESH_HINT}.")
    diff = changes(record.get("values", {}), values)
    raise SettingsChangedError(
        f"{where} holds {stage} outputs made with other settings; changed: {'; '.join(diff)}. "
        f"Nothing was reused or overwritten. To use the new settings, {FRESH_HINT}.")


def write_record(record_path: Path, stage: str, values: Mapping[str, Any], **extra: Any) -> None:
    write_json(record_path, {"stage": stage, "fingerprint": fingerprint(values), "values": dict(values), **extra})


def set_aside(path: str | Path) -> Path | None:
    """`--fresh`: rename `path` to `<path>.old-<UTC timestamp>` and say so; None when nothing was there.

    Renaming rather than deleting: an unintended --fresh loses nothing, and the old run stays readable."""
    path = Path(path)
    if not path.exists():
        return None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target, n = path.with_name(f"{path.name}.old-{stamp}"), 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.old-{stamp}-{n}"), n + 1
    path.rename(target)
    log.warning("set aside: the previous %s was renamed to %s (nothing deleted)", path, target)
    return target
