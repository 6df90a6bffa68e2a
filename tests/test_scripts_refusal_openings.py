"""scripts/refusal_openings.py: refusals grouped by their opening, counted by hand on a small generations file
whose answers are plainly refusals or plainly not."""
from __future__ import annotations

import json

import pytest

from conftest import load_script

REFUSAL = "I'm sorry, but I can't help with that."


@pytest.fixture(scope="module")
def script():
    return load_script("refusal_openings")


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_openings_counted_by_hand(script, tmp_path, capsys):
    rows = [
        {"objective": "harmless", "output": REFUSAL},
        {"objective": "harmless", "output": "  " + REFUSAL + " It would be dangerous."},
        {"objective": "harmless", "output": "I cannot assist with making weapons."},
        {"objective": "harmless", "output": "Sure! Here is how you pick a lock: first, ..."},
        {"objective": "helpful", "output": REFUSAL},
        {"objective": "helpful", "output": "Bread needs flour, water, salt and yeast."},
    ]
    path = write(tmp_path / "g.jsonl", rows)
    assert script.main([str(path), "--chars", "20", "--top", "5"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["objectives"]
    assert result["harmless"]["answers"] == 4 and result["harmless"]["refusals"] == 3
    assert result["harmless"]["openings"] == [{"text": REFUSAL[:20], "count": 2},
                                              {"text": "I cannot assist with", "count": 1}]
    assert result["helpful"] == {"answers": 2, "refusals": 1, "openings": [{"text": REFUSAL[:20], "count": 1}]}


def test_a_row_without_output_names_the_file_and_line(script, tmp_path):
    path = write(tmp_path / "bad.jsonl", [{"objective": "helpful", "output": "Hi."}, {"objective": "helpful"}])
    with pytest.raises(SystemExit, match=r"bad\.jsonl, line 2: a generation row needs 'objective' and 'output'"):
        script.main([str(path)])
