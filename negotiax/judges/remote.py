"""Concurrent calls to a remote judge with a concurrency limit and retries with exponential backoff.

Retried: HTTP 429, 408, 409 and 5xx, timeouts and connection errors. Anything else, or a call that
still fails after the last retry, yields None: a missing annotation, reported and never scored.
"""
from __future__ import annotations

import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429}


@dataclass
class RetryPolicy:
    max_retries: int = 4  # attempts after the first
    backoff: float = 1.0  # seconds before the first retry; doubles each time (with jitter)
    max_backoff: float = 30.0

    def delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)


def is_retryable(err: Exception) -> bool:
    import openai

    if isinstance(err, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code in RETRY_STATUS or err.status_code >= 500
    return False


def _retry_after(err: Exception) -> float:
    """Seconds the server asked us to wait (Retry-After header), 0 when absent."""
    response = getattr(err, "response", None)
    try:
        return float(response.headers.get("retry-after", 0)) if response is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def call_with_retries(fn: Callable[[], Any], policy: RetryPolicy, what: str = "judge call") -> Any:
    """fn() with retries on transient errors; raises the last error when retries run out."""
    for attempt in range(policy.max_retries + 1):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - classified below; the caller records a miss
            if attempt == policy.max_retries or not is_retryable(err):
                raise
            wait = max(policy.delay(attempt), min(_retry_after(err), policy.max_backoff))
            log.debug("%s failed (%s); retry %d in %.2fs", what, type(err).__name__, attempt + 1, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def run_all(fn: Callable[[Any], Any], inputs: list[Any], concurrency: int, policy: RetryPolicy,
            desc: str = "judge") -> list[Any]:
    """[fn(x) for x in inputs] run concurrently; a call that fails after retries gives None."""

    def one(x):
        try:
            return call_with_retries(lambda: fn(x), policy, desc)
        except Exception as err:  # noqa: BLE001 - a failed call is a missing annotation, never a score
            log.warning("%s: call failed after retries, recorded as missing: %s: %s", desc, type(err).__name__,
                        str(err)[:200])
            return None

    if not inputs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(tqdm(pool.map(one, inputs), total=len(inputs), desc=desc, unit="call"))
