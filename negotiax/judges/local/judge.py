"""Local judges: a logistic head over a frozen small LM's pooled hidden states (DESIGN.md §5, "Local judges").

Each shipped head lives in `heads/` as `local-<kind>.safetensors` (weights, bias, feature mean and std) with
`local-<kind>.json` (the card: data, feature model, layer, pooling, threshold, metrics) and a `.md` model
card. A judge refuses to run on a feature model other than the one its head was trained on.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from ...backbone import load_backbone
from ..base import register_judge
from .features import FeatureSpec, extract, feature_model_identity

log = logging.getLogger(__name__)

HEADS_DIR = Path(__file__).parent.parent / "heads"
FIELDS = {"safety": ("prompt", "response"), "truth": ("question", "answer"), "info": ("question", "answer")}
TEMPLATE_OF = {"safety": "safety", "truth": "qa", "info": "qa"}
IDENTITY_KEYS = ("model_type", "hidden_size", "num_layers", "config_sha256", "tokenizer_sha256")
_BACKBONES: dict[tuple[str, str], tuple] = {}  # one default backbone shared by all local judges


@dataclass
class LocalHead:
    """sigmoid(((x - mean) / std) . weight + bias), plus the card that says what x is."""

    weight: np.ndarray
    bias: float
    mean: np.ndarray
    std: np.ndarray
    card: dict = field(default_factory=dict)

    def predict(self, features: np.ndarray) -> np.ndarray:
        logits = ((features - self.mean) / self.std) @ self.weight + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def save(self, path: str | Path) -> Path:
        """Write <path>.safetensors and <path>.json; returns the JSON path."""
        path = Path(path).with_suffix("")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight, "bias": np.array([self.bias]), "mean": self.mean, "std": self.std}
        save_file({k: np.asarray(v, np.float32) for k, v in tensors.items()}, str(path) + ".safetensors")
        card_path = Path(str(path) + ".json")
        card_path.write_text(json.dumps(self.card, indent=1) + "\n", encoding="utf-8")
        return card_path

    @classmethod
    def load(cls, path: str | Path) -> "LocalHead":
        base = Path(path).with_suffix("")
        card_path, weights_path = Path(str(base) + ".json"), Path(str(base) + ".safetensors")
        for p in (card_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found; retrain with scripts/train_local_judges.py or give head=")
        t = load_file(str(weights_path))
        card = json.loads(card_path.read_text(encoding="utf-8"))
        return cls(t["weight"].astype(np.float64), float(t["bias"][0]), t["mean"].astype(np.float64),
                   t["std"].astype(np.float64), card)

    def digest(self) -> str:
        """A short hash of the weights: a retrained head gets a new judge name, so cached scores don't leak."""
        parts = [np.asarray(a, np.float32).tobytes() for a in (self.weight, [self.bias], self.mean, self.std)]
        return hashlib.sha256(b"".join(parts)).hexdigest()[:8]


def identity_mismatch(expected: dict, actual: dict) -> list[str]:
    """The identity fields on which a feature model differs from the head's card."""
    return [f"{k}: head wants {expected.get(k)!r}, model has {actual.get(k)!r}"
            for k in IDENTITY_KEYS if expected.get(k) != actual.get(k)]


def _default_backbone(name: str, device: str):
    if (name, device) not in _BACKBONES:
        _BACKBONES[(name, device)] = load_backbone(name_or_path=name, device=device, dtype="float32")
    return _BACKBONES[(name, device)]


class LocalJudge:
    """A judge of one kind (safety|truth|info) backed by a shipped or given head."""

    def __init__(self, kind: str, head: str | Path | LocalHead | None = None, model=None, tokenizer=None,
                 device: str = "cpu", batch_size: int = 16) -> None:
        if kind not in FIELDS:
            raise ValueError(f"local judge kind {kind!r}: choose one of {', '.join(FIELDS)}")
        self.head = head if isinstance(head, LocalHead) else LocalHead.load(head or HEADS_DIR / f"local-{kind}")
        card = self.head.card
        if card.get("kind") != kind:
            raise ValueError(f"head card is for kind {card.get('kind')!r}, not {kind!r}")
        if model is None:
            model, tokenizer = _default_backbone(card["feature_model"]["load_name"], device)
        elif tokenizer is None:
            raise ValueError("give the tokenizer together with the model")
        wrong = identity_mismatch(card["feature_model"], feature_model_identity(model, tokenizer))
        if wrong:
            raise ValueError("this feature model is not the one the head was trained on ("
                             + "; ".join(wrong) + "); use the card's model or retrain the head on yours")
        f = card["features"]
        self.spec = FeatureSpec(template=f["template"], max_tokens=f["max_tokens"],
                                max_context_tokens=f["max_context_tokens"], layers=(f["layer"],),
                                poolings=(f["pooling"],))
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.kind, self.threshold = kind, float(card["threshold"])
        self.name = f"{card['name']}#{self.head.digest()}"  # e.g. local-safety:SmolLM2-135M-Instruct/L12-mean#1a2b3c4d

    def features(self, items: list[dict]) -> np.ndarray:
        context_key, answer_key = FIELDS[self.kind]
        pairs = []
        for i, item in enumerate(items):
            missing = [k for k in (context_key, answer_key) if not isinstance(item.get(k), str)]
            if missing:
                raise ValueError(f"{self.name}: item {i} lacks string field(s) {missing}; "
                                 f"give {{{context_key!r}, {answer_key!r}}}")
            pairs.append((item[context_key], item[answer_key]))
        if not pairs:
            return np.zeros((0, self.head.weight.shape[0]))
        with torch.inference_mode():
            feats = extract(self.model, self.tokenizer, self.spec, pairs, self.batch_size)
        return feats[:, 0, 0].astype(np.float64)

    def score(self, items: list[dict]) -> list[float | None]:
        """P(unsafe) / P(true) / P(informative) per item (a local head never fails per item)."""
        return [float(p) for p in self.head.predict(self.features(items))]


@register_judge("local-safety")
def local_safety(**kwargs) -> LocalJudge:
    return LocalJudge("safety", **kwargs)


@register_judge("local-truth")
def local_truth(**kwargs) -> LocalJudge:
    return LocalJudge("truth", **kwargs)


@register_judge("local-info")
def local_info(**kwargs) -> LocalJudge:
    return LocalJudge("info", **kwargs)
