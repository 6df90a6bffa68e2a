"""Generation configuration (owned by generation)."""
from __future__ import annotations

from dataclasses import dataclass, field

TEMPLATES = ("auto", "chat", "alpaca")


@dataclass
class GenerationConfig:
    """Decoding settings. Greedy by default; sampling is seeded so every run is reproducible."""

    max_new_tokens: int = 256
    batch_size: int = 16
    do_sample: bool = False  # False: greedy decoding
    temperature: float = 1.0  # used only when do_sample
    top_p: float = 1.0  # used only when do_sample
    seed: int = 0  # sampling seed; batch i uses seed + i so a resumed run draws the same tokens
    stop: list[str] = field(default_factory=list)  # stop strings, cut from the output (like the OpenAI API)
    template: str = "auto"  # auto: the tokenizer's chat template if it has one, else Alpaca
    preference: dict[str, float] = field(default_factory=dict)  # circuit preference beta per objective
    sort_by_length: bool = True  # batch prompts of similar length together: less padding, same outputs on resume

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"generate.max_new_tokens={self.max_new_tokens}: must be at least 1")
        if self.batch_size < 1:
            raise ValueError(f"generate.batch_size={self.batch_size}: must be at least 1")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"generate.temperature={self.temperature}: must be > 0 when sampling "
                             "(set do_sample=false for greedy decoding)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"generate.top_p={self.top_p}: must be in (0, 1]")
        if self.template not in TEMPLATES:
            raise ValueError(f"generate.template={self.template!r}: choose one of {', '.join(TEMPLATES)}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if any(not s for s in self.stop):
            raise ValueError("generate.stop: stop strings must be non-empty")
        self.preference = {str(k): float(v) for k, v in (self.preference or {}).items()}

    def decoding(self) -> dict:
        """The settings that determine the outputs, as recorded in every report."""
        mode = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed} \
            if self.do_sample else {"do_sample": False}
        return {"max_new_tokens": self.max_new_tokens, "template": self.template, "stop": list(self.stop),
                "preference": dict(self.preference), **mode}
