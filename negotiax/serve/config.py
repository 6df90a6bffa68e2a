"""Server configuration (owned by serving)."""
from __future__ import annotations

from dataclasses import dataclass

TEMPLATES = ("auto", "chat", "alpaca")


@dataclass
class ServeConfig:
    """Where the server listens, how it batches, and the limits it enforces on every request."""

    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8000
    model_name: str = "negotiax"  # the model id clients send; "<model_name>:base" is the backbone alone
    api_key_env: str | None = None  # name of the environment variable holding the key; None: no key needed
    batch_window_ms: float = 10.0  # how long the first request of a batch waits for others to join
    max_batch: int = 16  # most requests decoded together
    max_tokens_cap: int = 1024  # a request asking for more is refused
    default_max_tokens: int = 256  # when a request gives none (lowered to fit the context)
    max_body_bytes: int = 1_000_000  # a larger request body is refused
    max_queue: int = 1024  # requests waiting beyond this get 503
    template: str = "auto"  # chat requests: the tokenizer's chat template if it has one, else Alpaca
    graceful_shutdown_s: float = 5.0  # on Ctrl-C / SIGTERM, running requests get this long, then are cancelled

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"serve port={self.port}: choose 1..65535")
        if self.batch_window_ms < 0:
            raise ValueError(f"serve batch_window_ms={self.batch_window_ms}: must be >= 0")
        if self.max_batch < 1:
            raise ValueError(f"serve max_batch={self.max_batch}: must be at least 1")
        if not 1 <= self.default_max_tokens <= self.max_tokens_cap:
            raise ValueError(f"serve default_max_tokens={self.default_max_tokens}: must be in 1..max_tokens_cap "
                             f"({self.max_tokens_cap})")
        if self.max_body_bytes < 1024:
            raise ValueError(f"serve max_body_bytes={self.max_body_bytes}: must be at least 1024")
        if self.template not in TEMPLATES:
            raise ValueError(f"serve template={self.template!r}: choose one of {', '.join(TEMPLATES)}")
        if ":" in self.model_name or not self.model_name.strip():
            raise ValueError(f"serve model_name={self.model_name!r}: give a non-empty name without ':'")
