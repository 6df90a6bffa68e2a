"""Metrics: one JSON line per logged step in <run>/metrics.jsonl, plus TensorBoard / W&B when asked."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from ..io import append_jsonl, atomic_write, read_jsonl

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


class MetricsLogger:
    """Appends records to metrics.jsonl; on resume, drops records past the checkpoint it resumed from."""

    def __init__(self, run_dir: str | Path, report_to: list[str] | None = None, resume_step: int = 0,
                 config: dict | None = None, enabled: bool = True) -> None:
        self.path = Path(run_dir) / METRICS
        self.enabled = enabled  # False on all but the main process of a distributed run
        self._tb = self._wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        for name in report_to or []:
            self._open_reporter(name, Path(run_dir), config or {})

    def _truncate_after(self, step: int) -> None:
        """A resumed run recomputes the steps after its checkpoint; keep each step once."""
        if not self.path.is_file():
            return
        keep = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        atomic_write(self.path, lambda tmp: append_jsonl(tmp, keep))

    def _open_reporter(self, name: str, run_dir: Path, config: dict) -> None:
        if name == "tensorboard":
            if importlib.util.find_spec("tensorboard") is None:
                log.warning("train.report_to has tensorboard, but it is not installed (pip install tensorboard)")
                return
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        elif name == "wandb":
            if importlib.util.find_spec("wandb") is None:
                log.warning("train.report_to has wandb, but it is not installed (pip install wandb)")
                return
            import wandb

            self._wandb = wandb.init(project="negotiax", name=run_dir.name, dir=str(run_dir), config=config,
                                     resume="allow")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, [record])
        step = record.get("step", 0)
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(run_dir: str | Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / METRICS)
