"""Data configuration (owned by the data layer): where each objective's data comes from, and formatting."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields
from typing import Any

FORMATS = ["auto", "alpaca", "alpaca_eval", "beavertails", "beavertails_eval", "pku_raw", "pku_pairs",
           "pku_dpo", "hh_rlhf", "truthfulqa", "truthfulqa_mc"]
TEMPLATES = ["auto", "chat", "alpaca"]
HARMLESS_TESTS = ["beavertails_30k", "beavertails_eval"]


RESPONSE_FILTERS = ("refusal", "safe_compliance")


@dataclass
class Source:
    """One dataset: a file (absolute, or relative to cwd or the data directory) or a hub id, and its format.

    `hub` is the Hugging Face dataset id tried when the file is not found (`hub_format` if its layout
    differs from the file's). `part` picks the H3Fusion half of TruthfulQA ("train" / "test" / "all").
    An `optional` source that cannot be found is skipped with a warning instead of failing the run.
    For training, `response_filter: refusal` keeps only the rows whose response the refusal detector
    flags (e.g. the refusing safe answers of a preference file); `response_filter: safe_compliance` keeps the
    prompts whose every response in the file is labelled safe and none refuses (e.g. the PKU-SafeRLHF rows with
    two safe, compliant answers: mostly benign requests written like the harmful ones). `prompt_match` keeps
    only the rows whose prompt (stripped) a regular expression matches (`re.search`; e.g. `'\\?$'` for
    question-style prompts), `offset` skips the first N rows and `limit` keeps the next N (after the filters).
    `response` puts one written answer in place of every row's own (e.g. a plain refusal for harmful questions
    whose own answers comply); rows that then repeat a prompt are kept once.
    `categories` keeps only the rows whose category is one of those listed, for training and test sources alike:
    for AlpacaEval that is its `dataset` field (helpful_base, koala, oasst, selfinstruct, vicuna), so one part of
    the file can train while the rest is the test set (a test source's rows are all kept out of training).
    A `route_only` source's rows supervise the negotiation's routing alone: which objective should have the
    say on such prompts, without learning their answers (e.g. harmful questions whose answers comply).
    A `route` source's rows are learnt by the objective they are listed under (its pathway, under teacher-forced
    routing), while the routing loss and the routing warm start send them to objective `route`: e.g. benign
    requests with ordinary answers listed under harmless with route helpful, meant to show the harmless pathway
    benign requests it should leave alone (configs/quick-contrast.yaml; on the quick budget it did not help).
    Format `hh_rlhf` reads Anthropic's HH-RLHF files ({chosen, rejected} dialogues, e.g. helpful-base/train.jsonl,
    unzipped): the first human turn and the first reply in `chosen`. Everyday requests written like AlpacaEval's
    helpful_base part (which comes from them) are what the quick recipe's router lacks (README); no such file is
    in shared/data, and prompts that are also test prompts are dropped as from every training source.
    """

    path: str | None = None
    format: str = "auto"
    hub: str | None = None
    hub_config: str | None = None
    hub_split: str = "train"
    hub_format: str | None = None
    part: str | None = None
    optional: bool = False
    response_filter: str | None = None  # refusal | safe_compliance (training only; see above)
    limit: int | None = None  # the first N rows of this source
    route_only: bool = False  # training: its rows teach the routing loss only (their answers are not learnt)
    offset: int = 0  # skip the first N rows (after response_filter and prompt_match, before limit)
    route: str | None = None  # training: the objective the routing loss sends its rows to (default: its own)
    prompt_match: str | None = None  # training: keep the rows whose stripped prompt this regex matches (re.search)
    response: str | None = None  # training: this answer in place of every row's own
    categories: list[str] | None = None  # keep the rows whose category is one of these (train and test)

    def __post_init__(self):
        if self.response_filter not in (None, *RESPONSE_FILTERS):
            raise ValueError(f"data source {self.path or self.hub}: response_filter={self.response_filter!r}; "
                             f"choose {' or '.join(RESPONSE_FILTERS)} or null")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"data source {self.path or self.hub}: limit={self.limit!r}; a positive integer")
        if not isinstance(self.offset, int) or self.offset < 0:
            raise ValueError(f"data source {self.path or self.hub}: offset={self.offset!r}; a non-negative integer")
        if self.route is not None and not isinstance(self.route, str):
            raise ValueError(f"data source {self.path or self.hub}: route={self.route!r}; an objective's name or null")
        if self.prompt_match is not None:
            try:
                re.compile(self.prompt_match)
            except (re.error, TypeError) as err:
                raise ValueError(f"data source {self.path or self.hub}: prompt_match={self.prompt_match!r} is not a "
                                 f"regular expression ({err}); e.g. '\\?$' keeps question-style prompts") from None
        if self.response is not None and (not isinstance(self.response, str) or not self.response.strip()):
            raise ValueError(f"data source {self.path or self.hub}: response={self.response!r}; a non-empty answer "
                             "text or null")
        if self.categories is not None:
            if isinstance(self.categories, str):
                self.categories = [self.categories]
            if (not isinstance(self.categories, (list, tuple)) or not self.categories
                    or not all(isinstance(c, str) and c.strip() for c in self.categories)):
                raise ValueError(f"data source {self.path or self.hub}: categories={self.categories!r}; a list of "
                                 "category names (e.g. [koala] for AlpacaEval's koala part) or null")
            self.categories = list(self.categories)
        if not self.path and not self.hub:
            raise ValueError("data source: give a path (file or hub id) or a hub id")
        for name in ("format", "hub_format"):
            value = getattr(self, name)
            if value is not None and value not in FORMATS:
                raise ValueError(f"data source {self.path or self.hub}: {name}={value!r} is not a known "
                                 f"format; choose one of {', '.join(FORMATS)}")
        if self.part not in (None, "train", "test", "all"):
            raise ValueError(f"data source {self.path or self.hub}: part={self.part!r}; "
                             f"choose train, test or all")

    @property
    def name(self) -> str:
        """The file or hub id, with the training filters that make it a different source of examples."""
        base = self.path or self.hub or "?"
        tags = [t for t, on in (("refusals", self.response_filter == "refusal"),
                                ("safe, compliant answers", self.response_filter == "safe_compliance"),
                                ("route only", self.route_only),
                                (f"prompts matching {self.prompt_match}", self.prompt_match is not None),
                                ("written answer", self.response is not None),
                                (f"rows {self.offset}+", self.offset > 0), (f"routed to {self.route}", self.route),
                                (f"categories {', '.join(self.categories or [])}", self.categories is not None))
                if on]
        return f"{base} ({', '.join(tags)})" if tags else base


TRAINING_ONLY = ("route", "route_only", "prompt_match", "response", "response_filter")  # fields only training reads


def _training_only(source: Source) -> bool:
    """Whether a source sets a field that only training reads (each is off at None or False)."""
    return any(getattr(source, name) not in (None, False) for name in TRAINING_ONLY)


def _src(**kw) -> dict:
    return kw


DEFAULT_TRAIN = {
    "helpful": [_src(path="alpaca/alpaca_small_2000.json", format="alpaca", hub="tatsu-lab/alpaca")],
    # The PKU-SafeRLHF "safe" answers mostly comply (about 5% refuse), so only their refusing answers train
    # the harmless objective; `PKU_SAFE_TRAIN` adds all their safe answers when asked for.
    "harmless": [
        # Harmful questions in the BeaverTails style, answered with a refusal: the refusing safe answers of
        # the PKU-SafeRLHF preference files (their prompts are dropped from the local safety judge's data).
        _src(path="beavertails/pku_saferlhf/pku_saferlhf_test_realign_dpo_5k.json", format="pku_dpo",
             response_filter="refusal", optional=True),
        _src(path="beavertails/pku_saferlhf/pku_saferlhf_test_1000_safe_unsafe_pairs.jsonl", format="pku_pairs",
             response_filter="refusal", optional=True),
        # More such questions (one row per prompt) for the routing loss alone: which objective decides them,
        # not their answers (most of which comply).
        _src(path="beavertails/pku_saferlhf/pku_saferlhf_test_realign_dpo_5k.json", format="pku_dpo",
             route_only=True, optional=True),
        # Harmful instructions -> safe (mostly refusing) answers.
        _src(path="safety_tuned_llamas/safety_only_data_Instructions.json", format="alpaca",
             hub="PKU-Alignment/BeaverTails", hub_split="30k_train", hub_format="beavertails"),
    ],
    "honest": [_src(path="truthfulqa/TruthfulQA.csv", format="truthfulqa", part="train",
                    hub="truthfulqa/truthful_qa", hub_config="generation", hub_split="validation")],
}
PKU_SAFE_TRAIN = [
    _src(path="beavertails/pku_saferlhf/PKU-Alignment_PKU-SafeRLHF_sample500.jsonl", format="pku_raw", optional=True),
    _src(path="beavertails/pku_saferlhf/pku_saferlhf_test_1000_safe_unsafe_pairs.jsonl", format="pku_pairs",
         optional=True),
    _src(path="beavertails/pku_saferlhf/pku_saferlhf_test_realign_dpo_5k.json", format="pku_dpo", optional=True),
]
DEFAULT_TEST = {
    "helpful": _src(path="alpaca_eval/text_davinci_003_model_outputs.json", format="alpaca_eval",
                    hub="tatsu-lab/alpaca_eval", hub_config="alpaca_eval", hub_split="eval"),
    "honest": _src(path="truthfulqa/TruthfulQA.csv", format="truthfulqa", part="test",
                   hub="truthfulqa/truthful_qa", hub_config="generation", hub_split="validation"),
}
HARMLESS_TEST_SOURCES = {
    "beavertails_30k": _src(path="beavertails/beavertails_30k_test.jsonl", format="beavertails",
                            hub="PKU-Alignment/BeaverTails", hub_split="30k_test"),
    "beavertails_eval": _src(path="beavertails/BeaverTails-Evaluation.csv", format="beavertails_eval",
                             hub="PKU-Alignment/BeaverTails-Evaluation", hub_split="test"),
}
DEFAULT_BENIGN = _src(path="alpaca_eval/text_davinci_003_model_outputs.json", format="alpaca_eval",
                      hub="tatsu-lab/alpaca_eval", hub_config="alpaca_eval", hub_split="eval")


def to_source(value: Any, where: str) -> Source:
    """A string (path or hub id), a mapping of Source fields, or a Source."""
    if isinstance(value, Source):
        return value
    if isinstance(value, str):
        return Source(path=value)
    if isinstance(value, dict):
        known = {f.name for f in fields(Source)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(known)}")
        return Source(**value)
    raise ValueError(f"{where}: expected a path, a hub id or a mapping of {{path, format, ...}}, "
                     f"got {type(value).__name__}")


def to_sources(value: Any, where: str) -> list[Source]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"{where}: empty list of sources")
    return [to_source(v, f"{where}[{i}]") for i, v in enumerate(items)]


@dataclass
class DataConfig:
    """Where each objective's training and test data come from, and how examples are formatted.

    `train` / `test` map an objective to a source (or a list of sources); entries given here replace the
    defaults of that objective only. `objectives` (default: every objective with training data) selects
    which objectives a run uses.
    """

    data_dir: str | None = None  # else $NEGOTIAX_DATA_DIR, else ../shared/data, else the hub
    objectives: list[str] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)
    benign: Any = None  # benign prompts for over-refusal (default: AlpacaEval instructions)
    template: str = "auto"  # auto: the tokenizer's chat template if it has one, else alpaca
    max_length: int = 512
    skip_bad_rows: bool = False
    train_limit: int | None = None  # first N training examples per objective
    test_limit: dict | int | None = None  # first N test prompts (per objective with a dict)
    harmless_test: str = "beavertails_30k"
    mixture_weights: dict | None = None
    batch_size: int = 8
    drop_test_overlap: bool = True  # drop training prompts that occur in a test set

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise ValueError(f"data.template={self.template!r}; choose one of {', '.join(TEMPLATES)}")
        if self.harmless_test not in HARMLESS_TESTS:
            raise ValueError(f"data.harmless_test={self.harmless_test!r}; choose one of "
                             f"{', '.join(HARMLESS_TESTS)}")
        for name in ("max_length", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"data.{name}={getattr(self, name)!r}: must be a positive integer")
        if self.max_length < 8:
            raise ValueError(f"data.max_length={self.max_length}: too short for a prompt and a response")
        if self.train_limit is not None and (not isinstance(self.train_limit, int) or self.train_limit < 1):
            raise ValueError(f"data.train_limit={self.train_limit!r}: a positive integer or null")
        self._build_sources()
        self._check_objectives()
        self._check_limits()
        self._check_weights()

    def _build_sources(self) -> None:
        for name in ("train", "test"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"data.{name}: expected a mapping objective -> source(s)")
        train = copy.deepcopy(DEFAULT_TRAIN)
        train.update(self.train)
        test = copy.deepcopy(DEFAULT_TEST)
        test["harmless"] = copy.deepcopy(HARMLESS_TEST_SOURCES[self.harmless_test])
        test.update(self.test)
        self.train = {o: to_sources(v, f"data.train.{o}") for o, v in train.items() if v is not None}
        self.test = {o: to_sources(v, f"data.test.{o}") for o, v in test.items() if v is not None}
        self.benign = to_source(copy.deepcopy(DEFAULT_BENIGN) if self.benign is None else self.benign,
                                "data.benign")

    def _check_objectives(self) -> None:
        if self.objectives is None:
            self.objectives = list(self.train)
        if not self.objectives or len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"data.objectives={self.objectives!r}: give one or more distinct names")
        missing = [o for o in self.objectives if o not in self.train]
        if missing:
            raise ValueError(f"data.objectives: no training source for {missing}; add data.train.<name>")
        for objective, sources in self.test.items():
            for i, source in enumerate(sources):
                if _training_only(source):
                    raise ValueError(f"data.test.{objective}[{i}]: {' / '.join(TRAINING_ONLY)} are for training "
                                     f"sources; remove them from the test source {source.name}")
        if _training_only(self.benign):
            raise ValueError(f"data.benign: {' / '.join(TRAINING_ONLY)} are for training sources; remove them from "
                             f"{self.benign.name}")
        for objective, sources in self.train.items():
            for i, source in enumerate(sources):
                if source.route is not None and source.route not in self.train:
                    raise ValueError(f"data.train.{objective}[{i}] ({source.path or source.hub}): route="
                                     f"{source.route!r} is not an objective with training data {sorted(self.train)}")

    def _check_limits(self) -> None:
        limits = self.test_limit if isinstance(self.test_limit, dict) else {}
        if self.test_limit is not None and not isinstance(self.test_limit, (dict, int)):
            raise ValueError(f"data.test_limit={self.test_limit!r}: an integer, a mapping or null")
        for key, value in limits.items():
            if key not in self.test:
                raise ValueError(f"data.test_limit: unknown objective {key!r}; valid: {sorted(self.test)}")
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"data.test_limit.{key}={value!r}: a positive integer or null")
        if isinstance(self.test_limit, int) and self.test_limit < 1:
            raise ValueError(f"data.test_limit={self.test_limit}: a positive integer or null")

    def _check_weights(self) -> None:
        if self.mixture_weights is None:
            return
        if not isinstance(self.mixture_weights, dict):
            raise ValueError("data.mixture_weights: a mapping objective -> weight, or null")
        unknown = set(self.mixture_weights) - set(self.objectives)
        if unknown:
            raise ValueError(f"data.mixture_weights: unknown objective(s) {sorted(unknown)}; "
                             f"valid: {self.objectives}")
        values = list(self.mixture_weights.values())
        if any(not isinstance(v, (int, float)) or v < 0 for v in values) or not any(v > 0 for v in values):
            raise ValueError(f"data.mixture_weights={self.mixture_weights}: non-negative numbers, one > 0")

    def test_limit_for(self, objective: str) -> int | None:
        if isinstance(self.test_limit, dict):
            return self.test_limit.get(objective)
        return self.test_limit
