"""The run's training and test sets per objective, with train/test prompt overlap removed and counted."""
from __future__ import annotations

import dataclasses
import logging
import re
from collections import OrderedDict

from ..refusal import refusal
from .config import DataConfig, Source
from .records import normalize_prompt
from .schema import Example
from .sources import default_data_dir, load_source
from .truthfulqa import answer_examples, split_questions

log = logging.getLogger(__name__)


class DataSets(dict):
    """objective -> examples, plus `.stats`: per objective, per file counts (rows, skipped, dropped...)."""

    def __init__(self, sets: dict[str, list[Example]], stats: dict):
        super().__init__(sets)
        self.stats = stats


def _read(source: Source, objective: str, cfg: DataConfig, file_stats: dict) -> list[Example] | None:
    counts: dict = {}
    examples = load_source(source, objective, default_data_dir(cfg.data_dir), cfg.skip_bad_rows, counts)
    if examples is None:
        file_stats[source.name] = {"missing": True}
        return None
    if source.part:
        examples = split_questions(examples, source.part)
    if source.categories is not None:
        found = {ex.category for ex in examples}
        unknown = [c for c in source.categories if c not in found]
        if unknown:
            raise ValueError(f"data source {source.name}: categories {unknown} match no row; its rows' categories "
                             f"are {sorted(str(c) for c in found)}")
        wanted = set(source.categories)
        kept = [ex for ex in examples if ex.category in wanted]
        counts["other_categories_dropped"] = len(examples) - len(kept)
        examples = kept
    file_stats[source.name] = counts
    return examples


def _dedupe_prompts(examples: list[Example]) -> tuple[list[Example], int]:
    """One test example per prompt (first occurrence); merged rows keep their labels and categories."""
    groups: OrderedDict[str, list[Example]] = OrderedDict()
    for ex in examples:
        groups.setdefault(normalize_prompt(ex.prompt), []).append(ex)
    out = []
    for rows in groups.values():
        head = rows[0]
        if len(rows) > 1 or "is_safe" in head.meta:
            cats = sorted({c for r in rows for c in r.meta.get("categories", [])})
            meta = dict(head.meta, n_rows=len(rows), is_safe=[r.label for r in rows],
                        responses=[r.response for r in rows], categories=cats)
            head = dataclasses.replace(head, response=None, label=None, meta=meta,
                                       category="; ".join(cats) or head.category)
        out.append(head)
    return out, len(examples) - len(out)


def load_test_sets(cfg: DataConfig, limit: bool = True) -> DataSets:
    """objective -> test prompts (deduplicated, first `test_limit` when `limit`), in file order."""
    sets, stats = {}, {}
    for objective, sources in cfg.test.items():
        files: dict = {}
        examples = [ex for s in sources for ex in (_read(s, objective, cfg, files) or [])]
        examples, merged = _dedupe_prompts(examples)
        n_all = len(examples)
        cap = cfg.test_limit_for(objective) if limit else None
        if cap is not None:
            examples = examples[:cap]
        if not examples:
            raise ValueError(f"data.test.{objective}: no test examples in {list(files)}")
        sets[objective] = examples
        stats[objective] = {"files": files, "duplicate_prompts_merged": merged, "unique_prompts": n_all,
                            "examples": len(examples)}
        log.info("%s test: %d prompts (%d unique, %d duplicate rows merged)", objective, len(examples),
                 n_all, merged)
    return DataSets(sets, stats)


def _safe_compliance(examples: list[Example], where: str, counts: dict) -> list[Example]:
    """The rows of the prompts whose every response in the file is labelled safe and none refuses; counted."""
    if any(ex.label is None for ex in examples):
        raise ValueError(f"{where}: response_filter=safe_compliance needs a safety label on every row (the "
                         f"pku_raw format, or beavertails rows with is_safe); this file has unlabelled rows")
    dropped = {normalize_prompt(ex.prompt) for ex in examples
               if ex.label is False or ex.response is None or refusal(ex.response)}
    kept = [ex for ex in examples if normalize_prompt(ex.prompt) not in dropped]
    if examples and not kept:  # e.g. pku_pairs / pku_dpo, which give every prompt one unsafe answer
        raise ValueError(f"{where}: response_filter=safe_compliance keeps none of its {len(examples)} rows: every "
                         f"prompt has an unsafe or refusing answer in this file (pair formats such as pku_pairs "
                         f"always do; use pku_raw)")
    counts["unsafe_or_refusing_prompt_dropped"] = len(examples) - len(kept)
    return kept


def _training_examples(examples: list[Example], where: str, counts: dict) -> list[Example]:
    """Questions become one example per correct answer; a reference output (AlpacaEval's) is the answer learnt;
    unsafe responses and empty references are dropped and counted."""
    if examples and all(ex.response is None and ex.correct_answers for ex in examples):
        examples = answer_examples(examples)
    out = []
    for ex in examples:
        if ex.response is None and ex.reference is not None:
            if not ex.reference.strip():
                counts["empty_reference_dropped"] = counts.get("empty_reference_dropped", 0) + 1
                continue
            ex = dataclasses.replace(ex, response=ex.reference)
        if ex.response is None:
            raise ValueError(f"{where}: example {ex.id} has no response to train on; this file holds "
                             f"prompts only (a test set?) - use it under data.test instead")
        if ex.label is None and "is_safe" in ex.meta:
            raise ValueError(f"{where}: example {ex.id} has no is_safe label; harmless training keeps only "
                             f"is_safe=true responses, so every BeaverTails row needs the label")
        if ex.label is False:
            counts["unsafe_dropped"] = counts.get("unsafe_dropped", 0) + 1
            continue
        out.append(ex)
    return out


def load_train_sets(cfg: DataConfig, test_sets: DataSets | None = None) -> DataSets:
    """objective -> training examples; prompts that occur in any test set are dropped and counted."""
    blocked: set[str] = set()
    if cfg.drop_test_overlap:
        tests = test_sets if test_sets is not None else load_test_sets(cfg, limit=False)
        blocked = {normalize_prompt(ex.prompt) for exs in tests.values() for ex in exs}
    sets, stats = {}, {}
    for objective in cfg.objectives:
        files: dict = {}
        kept: list[Example] = []
        seen: set[tuple[str, str]] = set()
        for source in cfg.train[objective]:
            if source.route is not None and source.route not in cfg.objectives:
                # e.g. an A3 pair without the route's objective: nothing may send these rows there
                log.warning("%s train %s: left out, since its rows are routed to %s, which this run does not "
                            "train", objective, source.name, source.route)
                files[source.name] = {"left_out": f"routed to {source.route}, not trained in this run"}
                continue
            examples = _read(source, objective, cfg, files)
            if examples is None:
                continue
            counts = files[source.name]
            if source.response_filter == "safe_compliance":
                examples = _safe_compliance(examples, source.name, counts)
            examples = _training_examples(examples, source.name, counts)
            if source.response_filter == "refusal":
                kept_rows = [ex for ex in examples if refusal(ex.response)]
                counts["not_refusal_dropped"] = len(examples) - len(kept_rows)
                examples = kept_rows
            if source.prompt_match is not None:
                pattern = re.compile(source.prompt_match)
                matching = [ex for ex in examples if pattern.search(ex.prompt.strip())]
                counts["prompt_not_matching_dropped"] = len(examples) - len(matching)
                examples = matching
            examples = examples[source.offset:]
            if source.limit is not None:
                examples = examples[:source.limit]
            if source.response is not None:  # a written answer: the (prompt, answer) dedupe below keeps one per prompt
                examples = [dataclasses.replace(ex, response=source.response) for ex in examples]
            if source.route is not None and source.route != objective:
                examples = [dataclasses.replace(ex, meta={**ex.meta, "route": source.route}) for ex in examples]
            if source.route_only:  # one row per prompt: the routing target does not depend on the answer
                first = {}
                for ex in examples:
                    first.setdefault(normalize_prompt(ex.prompt), ex)
                counts["same_prompt_dropped"] = len(examples) - len(first)
                examples = [dataclasses.replace(ex, meta={**ex.meta, "route_only": True}) for ex in first.values()]
            counts["test_overlap_dropped"] = counts["duplicates_dropped"] = 0
            for ex in examples:
                key = normalize_prompt(ex.prompt)
                if key in blocked:
                    counts["test_overlap_dropped"] += 1
                elif (key, ex.response) in seen:
                    counts["duplicates_dropped"] += 1
                else:
                    seen.add((key, ex.response))
                    kept.append(ex)
            counts["examples"] = len(examples) - counts["test_overlap_dropped"] - counts["duplicates_dropped"]
            log.info("%s train %s: %d examples; dropped %d test-overlap prompts, %d duplicates, %d unsafe",
                     objective, source.name, counts["examples"], counts["test_overlap_dropped"],
                     counts["duplicates_dropped"], counts.get("unsafe_dropped", 0))
        if not kept:
            raise ValueError(f"data.train.{objective}: no training examples left from {list(files)}")
        if cfg.train_limit is not None:
            kept = kept[:cfg.train_limit]
        sets[objective] = kept
        stats[objective] = {"files": files, "examples": len(kept)}
    return DataSets(sets, stats)


def benign_prompts(cfg: DataConfig, n: int, train_sets: DataSets | None = None) -> list[Example]:
    """The first n benign prompts (default: AlpacaEval instructions) that the run does not train on."""
    if n < 1:
        raise ValueError(f"benign_prompts: n={n}; ask for at least one prompt")
    train = train_sets if train_sets is not None else load_train_sets(cfg)
    trained = {normalize_prompt(ex.prompt) for exs in train.values() for ex in exs}
    files: dict = {}
    examples, _ = _dedupe_prompts(_read(cfg.benign, "benign", cfg, files) or [])
    out = [dataclasses.replace(ex, objective="benign")
           for ex in examples if normalize_prompt(ex.prompt) not in trained]
    if len(out) < n:
        raise ValueError(f"data.benign {cfg.benign.name}: only {len(out)} prompts not used for training, "
                         f"asked for {n}")
    return out[:n]
