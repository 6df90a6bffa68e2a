"""`negotiax interpret`: mechanistic analysis of a trained circuit on real prompts of every kind.

Analyses (each optional): layer-wise trajectories base vs trained (mask-aware pooling, PCA per layer),
negotiation heatmap (prompt type x objective), causal interventions (mute each objective in turn: offline
metrics and example generations), geometry of the objective pathways against a random baseline, blind spots
(uncertain or misrouted prompts) and catastrophic forgetting (joint vs sequential training, needs a
recipe). Writes one PNG per analysis and interpret.json with every number behind them.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ..attach import Attachment, preference
from ..backbone import load_backbone
from ..data import DataConfig, benign_prompts, format_prompt, load_test_sets
from ..evaluation.negotiation import profiles_by_group, summarize
from ..io import write_json
from ..recipe import load_recipe
from ..saving import load_circuit
from . import geometry, routing, trajectories
from .common import clean, jsonable
from .forgetting import forgetting
from .interpret_plots import PLOTS
from .probe import ProbeConfig, load_probes, measure

log = logging.getLogger(__name__)

ANALYSES = ("trajectories", "heatmap", "interventions", "geometry", "blind_spots", "forgetting")


@dataclass
class InterpretConfig:
    """Which circuit, which analyses, how many prompts."""

    circuit_dir: str | None = None
    model: str = "smollm2"
    device: str = "auto"
    dtype: str = "auto"
    analyses: list[str] = field(default_factory=lambda: ["trajectories", "heatmap", "interventions", "geometry",
                                                         "blind_spots"])
    n_prompts: int = 100  # per prompt type, for the heatmap and blind spots
    n_trajectory: int = 48  # per prompt type, for the trajectories and the pathway shifts
    batch_size: int = 16
    top_k: int = 10
    entropy_threshold: float = 0.95
    random_draws: int = 200
    data: DataConfig = field(default_factory=DataConfig)
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig(n_harmful=32, n_benign=32, n_honest=32,
                                                                   n_helpful=32))
    forgetting_recipe: str | None = None  # a recipe YAML: the trainer settings for the forgetting study
    forgetting_steps: int = 20
    output_dir: str = "runs/interpret"

    def __post_init__(self) -> None:
        bad = [a for a in self.analyses if a not in ANALYSES]
        if bad:
            raise ValueError(f"analyses: unknown {bad}; choose from {', '.join(ANALYSES)}")
        if "forgetting" in self.analyses and not self.forgetting_recipe:
            raise ValueError("analyses includes forgetting: set forgetting_recipe to a recipe YAML (see configs/)")
        for name in ("n_prompts", "n_trajectory", "batch_size", "top_k", "random_draws", "forgetting_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")


def prompt_groups(data: DataConfig, n: int) -> dict[str, list[str]]:
    """Raw prompts per type: harmful (harmless test), benign (never trained on), honest (TruthfulQA)."""
    tests = load_test_sets(data, limit=False)
    return {"harmful": [ex.prompt for ex in tests["harmless"][:n]],
            "benign": [ex.prompt for ex in benign_prompts(data, n)],
            "honest": [ex.prompt for ex in tests["honest"][:n]]}


def interventions(model: nn.Module, tokenizer, attachment: Attachment, probes, cfg: ProbeConfig) -> dict:
    """Offline metrics with nothing muted, then with each objective muted in turn (preference restored)."""
    circuit = attachment.circuit
    out = {}
    for muted in [None, *circuit.objectives]:
        with preference(attachment, circuit.muted(*([muted] if muted else []))):
            out[muted or "none"] = measure(model, tokenizer, probes, cfg, attachment)
        log.info("mute %s: %s", muted or "none", {k: v["value"] for k, v in out[muted or "none"]["metrics"].items()})
    return out


def interpret(model: nn.Module, tokenizer, attachment: Attachment, cfg: InterpretConfig) -> dict:
    """Run the configured analyses on an attached circuit; returns every number (no files written)."""
    circuit = attachment.circuit
    negotiating = circuit.cfg.has_negotiation
    template = cfg.probe.template
    result: dict = {"objectives": circuit.objectives, "variant": circuit.cfg.variant, "layers": circuit.layers,
                    "settings": asdict(cfg)}
    need_prompts = {"heatmap", "blind_spots", "trajectories", "geometry"} & set(cfg.analyses)
    raw = prompt_groups(cfg.data, max(cfg.n_prompts, cfg.n_trajectory)) if need_prompts else {}
    groups = {g: [format_prompt(tokenizer, p, template) for p in ps] for g, ps in raw.items()}
    result["prompt_counts"] = {g: len(t) for g, t in groups.items()}
    if "trajectories" in cfg.analyses:
        small = {g: t[:cfg.n_trajectory] for g, t in groups.items()}
        states = trajectories.base_and_trained(model, tokenizer, attachment, small, cfg.batch_size)
        result["trajectories"] = trajectories.trajectory_summary(states, point_layers=_point_layers(circuit, states))
    if negotiating and {"heatmap", "blind_spots"} & set(cfg.analyses):
        prompts = {g: t[:cfg.n_prompts] for g, t in raw.items()}
        profiles = profiles_by_group(model, tokenizer, attachment, prompts, template=template,
                                     batch_size=cfg.batch_size)
        alphas = {g: p.decision for g, p in profiles.items()}  # where the answer is decided
        result["negotiation"] = summarize(profiles, routing.EXPECTED, circuit.objectives)
        if "heatmap" in cfg.analyses:
            result["heatmap"] = routing.heatmap(alphas, circuit.objectives)
        if "blind_spots" in cfg.analyses:
            result["blind_spots"] = routing.blind_spots(alphas, prompts, circuit.objectives, cfg.top_k,
                                                        cfg.entropy_threshold)
    elif {"heatmap", "blind_spots"} & set(cfg.analyses):
        log.info("variant %s has no negotiation: heatmap and blind spots skipped", circuit.cfg.variant)
    if "geometry" in cfg.analyses:
        texts = [t for g in groups.values() for t in g[:cfg.n_trajectory]]
        shifts = geometry.mean_shifts(model, tokenizer, attachment, texts, cfg.batch_size)
        result["geometry"] = {"subspaces": geometry.subspace_geometry(circuit, cfg.random_draws),
                              "shifts": geometry.shift_geometry(shifts, cfg.random_draws * 5)}
    if "interventions" in cfg.analyses:
        probes = load_probes(cfg.data, cfg.probe)
        result["interventions"] = interventions(model, tokenizer, attachment, probes, cfg.probe)
    return result


def _point_layers(circuit, states) -> list[int]:
    """Layers whose per-prompt PCA points are kept: right after the first injection site, and the last."""
    n = next(iter(states.values()))["base"].shape[0]
    return sorted({min(circuit.layers[0] + 1, n - 1), n - 1})


def run_forgetting(model, tokenizer, cfg: InterpretConfig) -> dict:
    recipe = load_recipe(cfg.forgetting_recipe)
    probes = load_probes(cfg.data, cfg.probe)
    return forgetting(model, tokenizer, recipe, probes, cfg.probe, cfg.forgetting_steps,
                      Path(cfg.output_dir) / "forgetting_runs")


def write_figures(result: dict, out_dir: Path) -> dict[str, str]:
    figures = {}
    for name, plot in PLOTS.items():
        if name in result:
            figures[name] = str(plot(result, out_dir / f"{name}.png"))
    return figures


def run_interpret(cfg: InterpretConfig) -> dict:
    """Load model and circuit, run the analyses, write interpret.json and the figures."""
    if not cfg.circuit_dir and set(cfg.analyses) - {"forgetting"}:
        raise ValueError("circuit_dir is not set: give the folder of a trained circuit (e.g. runs/<name>/circuit)")
    model, tokenizer = load_backbone(name_or_path=cfg.model, device=cfg.device, dtype=cfg.dtype)
    result: dict = {}
    if cfg.circuit_dir and set(cfg.analyses) - {"forgetting"}:
        attachment = load_circuit(cfg.circuit_dir, model)
        try:
            result = interpret(model, tokenizer, attachment, cfg)
        finally:
            attachment.detach()
        result["circuit_dir"] = cfg.circuit_dir
    if "forgetting" in cfg.analyses:
        result["forgetting"] = run_forgetting(model, tokenizer, cfg)
    result = clean(result)
    out = Path(cfg.output_dir)
    result["figures"] = write_figures(result, out)
    write_json(out / "interpret.json", result, default=jsonable, allow_nan=False)
    log.info("wrote %s and %d figures", out / "interpret.json", len(result["figures"]))
    return result
