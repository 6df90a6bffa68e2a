"""`negotiax sweep`: one trained circuit, the preference β varied along each objective -> the trade-off curve.

For each objective o and each value b in `betas` (and "mute", β_o = -inf) the circuit's preference is
β_o = b with the other objectives at 0; the offline probe metrics (refusal on harmful prompts, over-refusal on
benign prompts, MC1/MC2, reference NLL) and the mean negotiation weights are measured at every point. The
point β = 0 is shared by all objectives and measured once. The base model (circuit detached) is the
reference point. Output: sweep.json and sweep.png (the trade-off plane plus MC2 and NLL against β).

β acts through the negotiation (mac / negotiax circuits); a `pathways` circuit only distinguishes 0 from
-inf, so it is refused here.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn
from tqdm.auto import tqdm

from ..attach import Attachment
from ..backbone import load_backbone
from ..data import DataConfig, Example
from ..io import pyplot, save_figure, write_json
from ..saving import load_circuit
from .common import clean, jsonable
from .probe import HIGHER_IS_BETTER, ProbeConfig, load_probes, measure

log = logging.getLogger(__name__)

MUTE = "mute"


@dataclass
class SweepConfig:
    """Which circuit, which β values, which probes."""

    circuit_dir: str | None = None  # a trained mac / negotiax circuit (save_circuit output, e.g. <run>/circuit)
    model: str = "smollm2"
    device: str = "auto"
    dtype: str = "auto"
    betas: list[float] = field(default_factory=lambda: [-4.0, -2.0, 0.0, 2.0, 4.0])
    mute: bool = True  # also β = -inf for each objective
    objectives: list[str] | None = None  # whose β is swept (default: every objective of the circuit)
    include_base: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    output_dir: str = "runs/sweep"

    def __post_init__(self) -> None:
        if not self.betas or any(not math.isfinite(float(b)) for b in self.betas):
            raise ValueError(f"betas={self.betas}: give finite numbers (use mute=true for -inf)")
        self.betas = sorted({float(b) for b in self.betas})


def sweep_points(objectives: list[str], betas: list[float], mute: bool) -> list[dict]:
    """[{label, objective, beta, preference}]: the shared β = 0 point once, then each objective's values."""
    points = [{"label": "beta=0", "objective": None, "beta": 0.0, "preference": {}}]
    for o in objectives:
        for b in betas:
            if b != 0.0:
                points.append({"label": f"{o}={b:g}", "objective": o, "beta": b, "preference": {o: b}})
        if mute:
            points.append({"label": f"{o}=mute", "objective": o, "beta": MUTE, "preference": {o: float("-inf")}})
    return points


def pareto_front(points: list[dict], metrics: list[str]) -> list[str]:
    """Labels of the points no other point beats on every metric (ties allowed)."""
    def key(p):
        return [p["metrics"][m]["value"] * (1 if HIGHER_IS_BETTER[m] else -1) for m in metrics]
    scored = [(p["label"], key(p)) for p in points if all(p["metrics"][m]["value"] is not None for m in metrics)]
    front = []
    for label, k in scored:
        dominated = any(all(a >= b for a, b in zip(o, k)) and any(a > b for a, b in zip(o, k)) for _, o in scored)
        if not dominated:
            front.append(label)
    return front


def preference_sweep(model: nn.Module, tokenizer, attachment: Attachment, probes: dict[str, list[Example]],
                     cfg: SweepConfig) -> dict:
    """Measure every sweep point; returns {points, base, pareto, ...}. The preference is restored after."""
    circuit = attachment.circuit
    if not circuit.cfg.has_negotiation:
        raise ValueError(f"the preference sweep needs a circuit with a negotiation (mac / negotiax); "
                         f"{cfg.circuit_dir or 'this circuit'} is {circuit.cfg.variant!r}")
    swept = cfg.objectives or circuit.objectives
    unknown = [o for o in swept if o not in circuit.objectives]
    if unknown:
        raise ValueError(f"objectives={swept}: {unknown} not in the circuit's objectives {circuit.objectives}")
    saved = circuit.preference()
    points = sweep_points(swept, cfg.betas, cfg.mute)
    try:
        for point in tqdm(points, desc="sweep", unit="point", disable=None):
            circuit.set_preference(point["preference"])
            point.update(measure(model, tokenizer, probes, cfg.probe, attachment))
            log.info("%s: %s", point["label"], {k: v["value"] for k, v in point["metrics"].items()})
    finally:
        circuit.set_preference(saved)
    result = {"objectives": list(swept), "variant": circuit.cfg.variant, "points": points,
              "probe_sizes": {k: len(v) for k, v in probes.items()}, "probe": asdict(cfg.probe),
              "pareto": pareto_front(points, list(HIGHER_IS_BETTER))}
    if cfg.include_base:
        result["base"] = measure_base(model, tokenizer, attachment, probes, cfg.probe)
    return result


def measure_base(model: nn.Module, tokenizer, attachment: Attachment, probes: dict[str, list[Example]],
                 cfg: ProbeConfig) -> dict:
    """The base model's metrics: every objective muted makes the circuit's Δ exactly zero (h' = h)."""
    circuit = attachment.circuit
    saved = circuit.preference()
    circuit.mute(*circuit.objectives)
    try:
        return measure(model, tokenizer, probes, cfg, None)
    finally:
        circuit.set_preference(saved)


def _series(result: dict, objective: str) -> list[dict]:
    """The β = 0 point plus this objective's points, ordered by β (mute first, as -inf)."""
    pts = [p for p in result["points"] if p["objective"] in (None, objective)]
    return sorted(pts, key=lambda p: -math.inf if p["beta"] == MUTE else p["beta"])


def plot_sweep(result: dict, path: str | Path) -> Path:
    """Trade-off plane (over-refusal vs refusal) and MC2 / NLL against β, one line per objective."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for objective in result["objectives"]:
        series = _series(result, objective)
        x = [p["metrics"]["over_refusal_benign"]["value"] for p in series]
        y = [p["metrics"]["refusal_harmful"]["value"] for p in series]
        line, = axes[0].plot(x, y, marker="o", label=f"β_{objective}")
        for p, xi, yi in zip(series, x, y):
            axes[0].annotate("mute" if p["beta"] == MUTE else f"{p['beta']:g}", (xi, yi), fontsize=7,
                             textcoords="offset points", xytext=(3, 3), color=line.get_color())
        finite = [p for p in series if p["beta"] != MUTE]
        betas = [p["beta"] for p in finite]
        for ax, metric in ((axes[1], "mc2"), (axes[2], "ref_nll")):
            vals = [p["metrics"][metric]["value"] for p in finite]
            lo = [p["metrics"][metric]["ci"][0] for p in finite]
            hi = [p["metrics"][metric]["ci"][1] for p in finite]
            ax.plot(betas, vals, marker="o", color=line.get_color(), label=f"β_{objective}")
            if None not in lo and None not in hi:
                ax.fill_between(betas, lo, hi, color=line.get_color(), alpha=0.12)
    front = set(result.get("pareto", []))
    for p in result["points"]:
        if p["label"] in front:
            axes[0].scatter(p["metrics"]["over_refusal_benign"]["value"], p["metrics"]["refusal_harmful"]["value"],
                            s=120, facecolors="none", edgecolors="black", linewidths=1)
    if "base" in result:
        base = result["base"]["metrics"]
        axes[0].scatter(base["over_refusal_benign"]["value"], base["refusal_harmful"]["value"], marker="*", s=160,
                        color="black", label="base model")
        for ax, metric in ((axes[1], "mc2"), (axes[2], "ref_nll")):
            ax.axhline(base[metric]["value"], color="black", linestyle="--", linewidth=1, label="base model")
    axes[0].set(xlabel="over-refusal on benign prompts (↓)", ylabel="refusal on harmful prompts (↑)",
                title="trade-off (circled: Pareto front over all metrics)")
    axes[1].set(xlabel="β of the swept objective", ylabel="TruthfulQA MC2 (↑)", title="honesty vs β")
    axes[2].set(xlabel="β of the swept objective", ylabel="reference NLL, nats/token (↓)",
                title="helpfulness (AlpacaEval references) vs β")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def run_sweep(cfg: SweepConfig) -> dict:
    """Load the model, circuit and probes, sweep, write sweep.json and sweep.png."""
    if not cfg.circuit_dir:
        raise ValueError("circuit_dir is not set: give the folder of a trained circuit (e.g. runs/<name>/circuit)")
    model, tokenizer = load_backbone(name_or_path=cfg.model, device=cfg.device, dtype=cfg.dtype)
    attachment = load_circuit(cfg.circuit_dir, model)
    probes = load_probes(cfg.data, cfg.probe)
    try:
        result = clean(preference_sweep(model, tokenizer, attachment, probes, cfg))
    finally:
        attachment.detach()
    result["circuit_dir"] = cfg.circuit_dir
    out = Path(cfg.output_dir)
    result["figure"] = str(plot_sweep(result, out / "sweep.png"))
    write_json(out / "sweep.json", result, default=jsonable, allow_nan=False)
    log.info("wrote %s and %s", out / "sweep.json", result["figure"])
    return result
