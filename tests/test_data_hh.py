"""The HH-RLHF format: the first exchange of `chosen`, read from hand-written rows in the published layout
(no HH file is in shared/data, and the hub cannot be reached here)."""
from __future__ import annotations

import json

import pytest

from negotiax.data import Source, load_source
from negotiax.data.sources import parse_source_rows

ROWS = [
    {"chosen": "\n\nHuman: How do I make a baked potato?\n\nAssistant: Prick it with a fork and bake it for an hour."
               "\n\nHuman: At what temperature?\n\nAssistant: About 200 C.",
     "rejected": "\n\nHuman: How do I make a baked potato?\n\nAssistant: I don't know."
                 "\n\nHuman: At what temperature?\n\nAssistant: Hot."},
    {"chosen": "\n\nHuman: What are some good Christmas cookies?\n\nAssistant: Gingerbread men and sugar cookies.",
     "rejected": "\n\nHuman: What are some good Christmas cookies?\n\nAssistant: Cookies."},
]


def test_first_exchange_of_chosen(tmp_path):
    path = tmp_path / "helpful-base-train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    for fmt in ("hh_rlhf", "auto"):
        examples = load_source(Source(path=str(path), format=fmt), "helpful", None)
        assert [(e.prompt, e.response) for e in examples] == [
            ("How do I make a baked potato?", "Prick it with a fork and bake it for an hour."),
            ("What are some good Christmas cookies?", "Gingerbread men and sugar cookies.")]


@pytest.mark.parametrize("chosen, why", [
    ("Assistant: Hello.", "does not open with a 'Human:' turn"),
    ("\n\nHuman: Hi there", "has no 'Assistant:' reply"),
    ("\n\nHuman: Hi there\n\nAssistant: \n\nHuman: Hello?", "empty reply"),
])
def test_a_bad_dialogue_is_named_by_row(chosen, why):
    rows = [ROWS[0], {"chosen": chosen, "rejected": ""}]
    with pytest.raises(ValueError, match=f"hh.jsonl row 2: .*{why}"):
        parse_source_rows(rows, "hh_rlhf", "hh.jsonl", "helpful", False, None)
