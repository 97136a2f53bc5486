"""Human preference pairs load with the same per-row rejects as prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charter.errors import InputError
from charter.human_prefs import HumanPair, load_human_pairs

HUMAN_PREFS = Path(__file__).resolve().parents[2] / "shared" / "data" / "human_prefs"
REAL_FILES = sorted(HUMAN_PREFS.glob("*.jsonl")) if HUMAN_PREFS.is_dir() else []

CHAT = [{"role": "user", "content": "Is it safe to eat raw flour?"}]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(i: int, **overrides: object) -> dict:
    row = {
        "id": f"r{i}",
        "dimension": "harmlessness",
        "messages": CHAT,
        "chosen": "No, it can carry E. coli; bake it first.",
        "rejected": "Sure, go ahead.",
    }
    return {**row, **overrides}


@pytest.mark.skipif(not REAL_FILES, reason=f"no human preference files under {HUMAN_PREFS}")
@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_real_files_load_pairs_ending_with_a_user_turn(path: Path) -> None:
    pairs, rejects = load_human_pairs(path, limit=5)
    assert len(pairs) == 5 and rejects == []
    for pair in pairs:
        assert pair.messages and pair.messages[-1]["role"] == "user"
        assert pair.chosen.strip() and pair.rejected.strip() and pair.chosen != pair.rejected
        assert pair.dimension in {"harmlessness", "helpfulness"}
    assert len({p.id for p in pairs}) == 5


def test_good_row_becomes_a_pair(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "prefs.jsonl", [_row(1)])
    (pair,), rejects = load_human_pairs(path)
    assert rejects == []
    assert pair == HumanPair("r1", CHAT, _row(1)["chosen"], _row(1)["rejected"], "harmlessness")


@pytest.mark.parametrize(
    ("overrides", "field", "why"),
    [
        ({"chosen": None}, "chosen", "chosen is missing"),
        ({"rejected": "  "}, "rejected", "rejected is missing, empty"),
        ({"messages": []}, "messages", "non-empty list"),
        (
            {"messages": [*CHAT, {"role": "assistant", "content": "Well..."}]},
            "messages",
            "end with a non-empty user turn",
        ),
        ({"rejected": "No, it can carry E. coli; bake it first."}, "rejected", "identical"),
    ],
)
def test_bad_rows_are_rejected_with_field_and_line(
    tmp_path: Path, overrides: dict, field: str, why: str
) -> None:
    path = _jsonl(tmp_path / "prefs.jsonl", [_row(1), _row(2, **overrides)])
    pairs, rejects = load_human_pairs(path)
    assert [p.id for p in pairs] == ["r1"]
    (reject,) = rejects
    assert (reject.source, reject.field, reject.stage) == (f"{path}:2", field, "human_prefs")
    assert why in reject.reason


def test_malformed_line_and_duplicate_id_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_text(
        json.dumps(_row(1)) + "\n{broken\n" + json.dumps(_row(1)) + "\n", encoding="utf-8"
    )
    pairs, rejects = load_human_pairs(path)
    assert len(pairs) == 1
    assert [(r.source, r.field) for r in rejects] == [(f"{path}:2", None), (f"{path}:3", "id")]
    assert "not valid JSON" in rejects[0].reason and "duplicate id 'r1'" in rejects[1].reason


def test_prompt_only_row_and_missing_id(tmp_path: Path) -> None:
    row = {"prompt": "Tell me a joke.", "chosen": "Why did...", "rejected": "No."}
    (pair,), _ = load_human_pairs(_jsonl(tmp_path / "mine.jsonl", [row]))
    assert pair.id == "mine-00001"
    assert pair.messages == [{"role": "user", "content": "Tell me a joke."}]
    assert pair.dimension == "unspecified"


def test_no_usable_pairs_and_missing_file_raise(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "prefs.jsonl", [_row(1, chosen="")])
    with pytest.raises(InputError, match=r"1 rejected; first: .*prefs\.jsonl:1"):
        load_human_pairs(path)
    with pytest.raises(InputError, match="not found"):
        load_human_pairs(tmp_path / "absent.jsonl")
