"""The data layer: datasets of every objective, prompt formatting, tokenisation, batching, sampling."""
from .alpaca import load_alpaca, load_alpaca_eval
from .batching import Collator, TokenizedDataset, tokenize_sets
from .config import DataConfig, Source
from .formatting import IGNORE, completion_text, encode_prompt, format_prompt, resolve_template, tokenize_example
from .loading import DataSets, benign_prompts, load_test_sets, load_train_sets
from .records import normalize_prompt
from .safety import load_beavertails, load_beavertails_eval, load_pku_dpo, load_pku_pairs, load_pku_raw
from .sampler import MixtureSampler
from .schema import Example
from .sources import default_data_dir, load_source
from .truthfulqa import answer_examples, load_truthfulqa, split_questions

__all__ = ["IGNORE", "Collator", "DataConfig", "DataSets", "Example", "MixtureSampler", "Source",
           "TokenizedDataset", "answer_examples", "benign_prompts", "completion_text", "default_data_dir",
           "encode_prompt", "format_prompt", "load_alpaca", "load_alpaca_eval", "load_beavertails",
           "load_beavertails_eval", "load_pku_dpo", "load_pku_pairs", "load_pku_raw", "load_source",
           "load_test_sets", "load_train_sets", "load_truthfulqa", "normalize_prompt", "resolve_template",
           "split_questions", "tokenize_example", "tokenize_sets"]
