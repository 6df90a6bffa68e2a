"""Anthropic HH-RLHF dialogues ({chosen, rejected}, each "\\n\\nHuman: ...\\n\\nAssistant: ..." turns).

Only the first exchange is read: the first human turn is the prompt and the assistant's first reply in `chosen` is
the answer (the preferred one). The later turns are left out, since every other source here is single-turn.
"""
from __future__ import annotations

from .records import RowError, row_id, text
from .schema import Example

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"  # a turn's marker inside the dialogue
OPENER = HUMAN.strip()  # the first turn's, once the dialogue is stripped


def first_exchange(dialogue: str) -> tuple[str, str]:
    """(first human turn, the assistant's reply to it), both stripped, from a dialogue stripped of its leading
    blank lines."""
    if not dialogue.startswith(OPENER):
        raise RowError(f"the dialogue does not open with a {OPENER!r} turn: {dialogue[:60]!r}")
    prompt, found, reply = dialogue[len(OPENER):].partition(ASSISTANT)
    if not found:
        raise RowError(f"the first human turn has no {ASSISTANT.strip()!r} reply: {dialogue[:60]!r}")
    prompt, reply = prompt.strip(), reply.partition(HUMAN)[0].strip()
    if not prompt or not reply:
        raise RowError(f"the first exchange has an empty {'human turn' if not prompt else 'reply'}: {dialogue[:60]!r}")
    return prompt, reply


def hh_rlhf_row(prefix: str, objective: str, source: str):
    """Parser for {chosen, rejected}: one example, the first exchange of `chosen`."""

    def parse(row: dict, number: int) -> list[Example]:
        prompt, reply = first_exchange(text(row, "chosen"))
        return [Example(id=row_id(prefix, number), objective=objective, prompt=prompt, response=reply,
                        source=source)]

    return parse
