"""Generation stage: answers for prompts, resumable as JSONL.

`config` holds GenerationConfig (decoding settings and the preference), `branched` the decoding loop with a
KV cache (plain, or with the circuit's pathways as branches combined by the preference), `generate` the
batched, resumable writer of generations files (under the preference set by `attach.preference`).
"""
from .config import GenerationConfig

__all__ = ["GenerationConfig"]
