"""A persistent judge cache: SQLite, keyed by sha256(judge identity + canonical JSON of the item).

Wrapping any judge in `CachedJudge` makes a second evaluation of the same outputs cost zero judge
calls. Only real scores are stored; a missing (failed) annotation is retried on the next run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def cache_key(identity: str, item: dict) -> str:
    canonical = json.dumps(item, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{identity}\n{canonical}".encode()).hexdigest()


class JudgeCache:
    """{key: score} in one SQLite file, safe to share between runs (and threads of one run)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, judge TEXT, score REAL, created REAL)")
        self._db.commit()

    def get_many(self, keys: list[str]) -> dict[str, float]:
        found: dict[str, float] = {}
        with self._lock:
            for start in range(0, len(keys), 500):  # SQLite's limit on bound variables
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(self._db.execute(f"SELECT key, score FROM scores WHERE key IN ({marks})", chunk).fetchall())
        return found

    def put_many(self, judge: str, scores: dict[str, float]) -> None:
        now = time.time()
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)",
                                 [(k, judge, float(v), now) for k, v in scores.items()])
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class CallStats:
    items: int = 0
    cached: int = 0
    scored: int = 0
    missing: int = 0


class CachedJudge:
    """Any judge, with its scores remembered by (judge identity, item)."""

    def __init__(self, judge, cache: JudgeCache | None) -> None:
        self.judge = judge
        self.cache = cache
        self.name = judge.name
        self.kind = judge.kind
        self.threshold = getattr(judge, "threshold", 0.5)
        self.identity = getattr(judge, "identity", judge.name)
        self.stats = CallStats()

    def score(self, items: list[dict]) -> list[float | None]:
        keys = [cache_key(self.identity, item) for item in items]
        known = self.cache.get_many(keys) if self.cache is not None else {}
        todo = sorted({k: i for i, k in enumerate(keys) if k not in known}.values())  # one call per distinct item
        fresh = dict(zip((keys[i] for i in todo), self.judge.score([items[i] for i in todo]))) if todo else {}
        if self.cache is not None:
            self.cache.put_many(self.name, {k: v for k, v in fresh.items() if v is not None})
        scores = [known.get(k, fresh.get(k)) for k in keys]
        self.stats.items += len(items)
        self.stats.cached += sum(k in known for k in keys)
        self.stats.scored += len(todo)
        self.stats.missing += sum(s is None for s in scores)
        log.info("judge %s: %d items, %d from cache, %d scored now, %d missing",
                 self.name, len(items), sum(k in known for k in keys), len(todo), sum(s is None for s in scores))
        return scores
