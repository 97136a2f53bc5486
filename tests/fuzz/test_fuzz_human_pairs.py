"""Human-labelled pair files with broken rows and damaged bytes: good pairs load, bad rows become
rejects with a reason and a ``file:line``, or one clear error for the file."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from charter.human_prefs import load_human_pairs
from tests.fuzz.bad_inputs import (
    BROKEN_LINES,
    chats,
    damaged,
    json_line,
    json_values,
    nasty_text,
    nonblank_text,
)
from tests.fuzz.fuzzing import ending, examples, writable


@st.composite
def pair_lines(draw: st.DrawFn, index: int) -> tuple[str, bytes, str | None]:
    """``(kind, line, id of a good pair)``."""
    kind = draw(st.sampled_from(["good", "good", "bad", "line"]))
    if kind == "line":
        return kind, draw(st.sampled_from(BROKEN_LINES)), None
    chosen = draw(nonblank_text)
    rejected = draw(nonblank_text.filter(lambda t: t != chosen))
    row: dict[str, Any] = {"id": f"g{index}", "chosen": chosen, "rejected": rejected}
    if draw(st.booleans()):
        row["messages"] = draw(chats(good=True))
    else:
        row["prompt"] = draw(nonblank_text)
    if draw(st.booleans()):
        row["dimension"] = draw(json_values)
    if kind == "good":
        return kind, json_line(row), row["id"]
    row["id"] = f"b{index}"
    fault = draw(st.sampled_from(["chosen", "rejected", "messages", "same", "prompt_only", "id"]))
    if fault in ("chosen", "rejected"):
        row[fault] = draw(st.one_of(json_values, st.sampled_from(["", "  \n"])))
    elif fault == "messages":
        row["messages"] = draw(chats(good=False))
    elif fault == "same":
        row["rejected"] = row["chosen"]
    elif fault == "prompt_only":
        row.pop("messages", None)
        row["prompt"] = draw(st.one_of(json_values, st.just("")))
    else:
        row["id"] = draw(json_values.filter(lambda v: not str(v).startswith("g")))
    return "bad", json_line(row), None


@examples(50)
@given(
    lines=st.integers(min_value=0, max_value=6).flatmap(
        lambda n: st.tuples(*(pair_lines(i) for i in range(n)))
    ),
    broken=st.booleans(),
    limit=st.sampled_from([None, None, None, 1, 2]),
    data=st.data(),
)
def test_any_human_pair_file_loads_rejects_or_says_why(
    lines: tuple, broken: bool, limit: int | None, data: st.DataObject
) -> None:
    raw = b"".join(line + b"\n" for _, line, _ in lines)
    if broken:
        raw = data.draw(damaged(raw))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_bytes(raw)
        with ending("human pairs") as end:
            pairs, rejects = load_human_pairs(path, limit=limit)
            end.rejects = len(rejects)
            assert len({p.id for p in pairs}) == len(pairs), "two pairs share an id"
            assert limit is None or len(pairs) <= limit
            for pair in pairs:
                assert pair.chosen.strip() and pair.rejected.strip()
                assert pair.chosen != pair.rejected
                assert pair.messages[-1]["role"] == "user" and pair.messages[-1]["content"].strip()
                assert writable(asdict(pair))
            for reject in rejects:
                assert reject.stage == "human_prefs" and reject.reason.strip()
                where, _, line = reject.source.rpartition(":")
                assert where == str(path) and int(line) >= 1
                assert writable(asdict(reject))
        if broken or limit is not None:
            return
        good = {gid for _, _, gid in lines if gid}
        assert end.error is None or not good, f"a file with good pairs was refused: {end.error}"
        if end.error is None:
            assert good <= {p.id for p in pairs}, "a good pair was not loaded"
            assert len(pairs) + len(rejects) == sum(1 for line in raw.split(b"\n") if line.strip())


@examples(10)
@given(name=nasty_text)
def test_a_missing_or_odd_path_is_one_clear_error(name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, ending("human pairs") as end:
        target = Path(tmp) / (name.replace("/", "_").replace("\x00", "_") or "empty")
        if name.startswith("d"):
            target.mkdir(exist_ok=True)
        load_human_pairs(target)
    assert end.error is not None
