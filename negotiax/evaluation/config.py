"""Evaluation configuration (owned by evaluation)."""
from __future__ import annotations

from dataclasses import dataclass, field

JUDGE_METRICS = ("wr", "ss", "ti")  # need a judge each: pairwise / safety / truth+info
OFFLINE_METRICS = ("refusal", "repetition", "lexical", "mc", "nll")  # need no judge; mc and nll need the model
METRICS = JUDGE_METRICS + OFFLINE_METRICS
JUDGE_KINDS = ("pairwise", "safety", "truth", "info")
MC_FORMATS = ("qa_primer", "chat")  # the context MC1/MC2 answers are scored in (negotiax.evaluation.metrics.mc_context)


@dataclass
class EvalConfig:
    """Which metrics and judges to run, and how intervals are computed.

    `judges` maps a judge kind to a registered judge name, e.g.
    {pairwise: openai-pairwise, safety: beaver-dam, truth: truth-judge, info: info-judge}
    (or local-safety / local-truth / local-info). A judge metric runs only when its judge is set.
    `judge_args` maps a judge name to its keyword arguments, e.g.
    {openai-pairwise: {model: gpt-4, base_url: http://127.0.0.1:8000/v1, api_key_env: OPENAI_API_KEY}}.
    """

    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    judges: dict[str, str] = field(default_factory=dict)
    judge_args: dict[str, dict] = field(default_factory=dict)
    cache_path: str | None = "~/.cache/negotiax/judge_cache.sqlite"  # None: no cache
    n_boot: int = 1000
    ci_level: float = 0.95
    seed: int = 0
    template: str = "auto"  # prompt template for NLL scoring, and for MC scoring when mc_format is chat
    # MC1/MC2 context: qa_primer (the TruthfulQA paper's six-example QA primer, comparable with published
    # figures) or chat (the question as the user turn of `template`, as the model is prompted in generation)
    mc_format: str = "qa_primer"
    batch_size: int = 8  # MC / NLL forward batch
    max_offline_examples: int | None = None  # cap MC / NLL examples per set (CPU budget); None: all

    def __post_init__(self) -> None:
        unknown = set(self.metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"eval.metrics: unknown {sorted(unknown)}; choose from {', '.join(METRICS)}")
        bad = set(self.judges) - set(JUDGE_KINDS)
        if bad:
            raise ValueError(f"eval.judges: unknown kind(s) {sorted(bad)}; kinds are {', '.join(JUDGE_KINDS)}")
        if self.mc_format not in MC_FORMATS:
            raise ValueError(f"eval.mc_format={self.mc_format!r}: choose one of {', '.join(MC_FORMATS)}")
        if self.n_boot < 1:
            raise ValueError(f"eval.n_boot={self.n_boot}: must be at least 1")
        if not 0 < self.ci_level < 1:
            raise ValueError(f"eval.ci_level={self.ci_level}: must be in (0, 1), e.g. 0.95")
        if self.max_offline_examples is not None and self.max_offline_examples < 1:
            raise ValueError("eval.max_offline_examples must be positive or null")
