"""Prompt files in every format, with mixed schemas, broken rows and damaged bytes: good rows
load, bad rows become rejects with a reason and a ``file:line``, or one clear error for the file.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from charter.prompts import PromptFields, load_prompts
from charter.records import to_row
from tests.fuzz.bad_inputs import (
    BROKEN_LINES,
    chats,
    damaged,
    json_line,
    json_scalars,
    json_values,
    nasty_text,
    nonblank_text,
)
from tests.fuzz.fuzzing import ending, examples, writable

FORMATS = (".jsonl", ".json", ".csv", ".parquet", "dir")
Entry = tuple[str, Any]  # ("good", row) | ("bad", row) | ("maybe", row) | ("line", raw bytes)

not_a_good_id = json_values.filter(lambda v: not str(v).strip().startswith("g"))


@st.composite
def entries(draw: st.DrawFn, index: int) -> Entry:
    kind = draw(st.sampled_from(["good", "good", "bad", "maybe", "line", "extra"]))
    if kind in ("good", "extra"):
        if draw(st.booleans()):
            row: dict[str, Any] = {"id": f"g{index}", "prompt": draw(nonblank_text)}
        else:
            row = {"id": f"g{index}", "messages": draw(chats(good=True))}
        if kind == "extra":  # a mixed schema: columns other rows lack
            row[draw(st.sampled_from(["system", "meta", "score", "Prompt"]))] = draw(json_values)
        return "good", row
    if kind == "bad":
        bad = draw(
            st.one_of(
                st.fixed_dictionaries({"prompt": st.one_of(json_scalars, json_values)}),
                st.fixed_dictionaries({"messages": chats(good=False)}),
                st.dictionaries(st.sampled_from(["text", "question", "meta"]), json_values),
            )
        )
        return "bad", {"id": f"b{index}", **bad}
    if kind == "maybe":  # a usable prompt under an id of any shape: loads or not, never crashes
        return "maybe", {"id": draw(not_a_good_id), "prompt": draw(nonblank_text)}
    return "line", draw(st.sampled_from(BROKEN_LINES))


@st.composite
def prompt_files(draw: st.DrawFn) -> tuple[str, list[Entry], bool]:
    """``(format, entries, damaged?)``: what to write, and whether bytes were broken after."""
    fmt = draw(st.sampled_from(FORMATS))
    count = draw(st.integers(min_value=0, max_value=6))
    rows = [draw(entries(i)) for i in range(count)]
    if fmt not in (".jsonl", ".json"):
        rows = [e for e in rows if e[0] != "line"]  # raw lines are a JSON Lines matter
    return fmt, rows, draw(st.integers(min_value=0, max_value=3)) == 0


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _saved(rows: list[dict[str, Any]], save: Any) -> None:
    """Save rows as an Arrow table; where Arrow cannot hold them as they are (mixed types in a
    column, an empty struct), as JSON text, as a user's export script might."""
    import pyarrow as pa

    keys = list(dict.fromkeys(k for r in rows for k in r))  # from_pylist reads only row 1's
    try:
        save(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]))
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        text = [{k: None if r.get(k) is None else _cell(r[k]) for k in keys} for r in rows]
        save(pa.Table.from_pylist(text))


def write(folder: Path, fmt: str, rows: list[Entry], damage: Any) -> Path:
    """Write the entries in ``fmt`` under ``folder``; ``damage`` breaks bytes (or files) after."""
    dicts = [r for kind, r in rows if kind != "line"]
    if fmt in (".jsonl", ".json"):
        path = folder / f"prompts{fmt}"
        lines = [r if kind == "line" else json_line(r) for kind, r in rows]
        path.write_bytes(damage(b"\n".join(lines) + (b"\n" if lines else b"")))
    elif fmt == ".csv":
        path = folder / "prompts.csv"
        keys = list(dict.fromkeys(k for r in dicts for k in r))
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(keys)
        writer.writerows([[_cell(r[k]) if k in r else "" for k in keys] for r in dicts])
        path.write_bytes(damage(buffer.getvalue().encode("utf-8", "surrogatepass")))
    elif fmt == ".parquet":
        import pyarrow.parquet as pq

        path = folder / "prompts.parquet"
        _saved(dicts, lambda table: pq.write_table(table, path))
        path.write_bytes(damage(path.read_bytes()))
    else:
        from datasets import Dataset, disable_progress_bars
        from datasets.table import InMemoryTable

        disable_progress_bars()
        path = folder / "prompts_dataset"
        _saved(dicts, lambda table: Dataset(InMemoryTable(table)).save_to_disk(str(path)))
        for file in sorted(p for p in path.iterdir() if p.is_file()):
            file.write_bytes(damage(file.read_bytes()))
    return path


def _check_loaded(path: Path, prompts: list[Any], rejects: list[Any]) -> None:
    ids = [p.prompt_id for p in prompts]
    assert len(ids) == len(set(ids)), "two prompts share an id"
    for prompt in prompts:
        assert prompt.messages and prompt.messages[-1]["role"] == "user"
        assert prompt.messages[-1]["content"].strip()
        assert prompt.source.startswith(f"{path}:")
        assert writable(to_row(prompt)), "a prompt the JSONL writer cannot write"
    for reject in rejects:
        assert reject.stage == "generate" and reject.reason.strip()
        where, _, line = reject.source.rpartition(":")
        assert where == str(path) and int(line) >= 1, reject.source
        assert writable(asdict(reject)), "a reject rejects.jsonl cannot hold"


@examples(80)
@given(case=prompt_files(), data=st.data())
def test_any_prompt_file_loads_rejects_or_says_why(case: tuple, data: st.DataObject) -> None:
    fmt, rows, broken = case
    folder = Path(tempfile.mkdtemp())
    try:
        damage = (lambda b: data.draw(damaged(b))) if broken else (lambda b: b)
        path = write(folder, fmt, rows, damage)
        limit = data.draw(st.sampled_from([None, None, None, 1, 3]))
        with ending(f"prompts {fmt}") as end:
            prompts, rejects = load_prompts(path, PromptFields(), limit=limit)
            end.rejects = len(rejects)
            _check_loaded(path, prompts, rejects)
            assert limit is None or len(prompts) <= limit
        good = {r["id"] for kind, r in rows if kind == "good"}
        if broken or limit is not None:
            return
        assert end.error is None or not good, f"a file with good rows was refused: {end.error}"
        if end.error is None:
            missing = good - {p.prompt_id for p in prompts}
            assert not missing, f"good rows not loaded: {missing}"
        if fmt in (".jsonl", ".json") and end.error is None:
            lines = sum(1 for line in path.read_bytes().split(b"\n") if line.strip())
            assert len(prompts) + len(rejects) == lines, "a line was neither loaded nor rejected"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


NAMES = st.sampled_from(["id", "prompt", "messages", "system", "text"])
COLUMNS = st.one_of(NAMES, NAMES, nasty_text)


@examples(15)
@given(
    fields=st.fixed_dictionaries(
        {
            "id": st.sampled_from(["id", None]) | COLUMNS,
            "prompt": st.sampled_from(["prompt", None]) | COLUMNS,
            "messages": st.sampled_from(["messages", None]) | COLUMNS,
            "system": st.none() | st.none() | st.none() | COLUMNS,
        }
    ),
    rows=st.lists(
        st.dictionaries(
            COLUMNS,
            st.one_of(nonblank_text, nonblank_text, chats(good=True), json_values),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_any_column_mapping_loads_or_names_the_column(
    fields: dict[str, str | None], rows: list[dict[str, Any]]
) -> None:
    """``prompts.fields.*`` set to any column name, over rows with any columns."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.jsonl"
        path.write_bytes(b"".join(json_line(r) + b"\n" for r in rows))
        with ending("prompts fields") as end:
            prompts, rejects = load_prompts(path, PromptFields(**fields))
            end.rejects = len(rejects)
            _check_loaded(path, prompts, rejects)


# found by the properties above: each was a traceback, or a row lost or wrongly kept, before its fix
FOUND = {
    "surrogate.jsonl": (b'{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": "\\ud800"}\n', 1, 1),
    "deep.jsonl": (b'{"id": "a", "prompt": "ok"}\n{"prompt": ' + b"[" * 99_999 + b"}\n", 1, 1),
    "long_cell.csv": (b'id,prompt\na,"' + b"x" * 200_000 + b'"\nb,ok\n', 2, 0),
    "bad_bytes.csv": (b"id,prompt\na,ok\nb,\xff\xfe\n", 1, 1),
    "mixed.csv": (
        b'id,prompt,messages\na,hi,\nb,,"[{""role"": ""user"", ""content"": ""x""}]"\n',
        2,
        0,
    ),
    "junk.parquet": (b"PAR1 not really PAR1", None, None),
    "x" * 300 + ".jsonl": (None, None, None),  # a name too long for the file system
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_inputs_the_fuzzing_found(tmp_path: Path, name: str) -> None:
    data, loaded, rejected = FOUND[name]
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    with ending(f"prompts {path.suffix}") as end:
        prompts, rejects = load_prompts(path)
        end.rejects = len(rejects)
        _check_loaded(path, prompts, rejects)
        assert (len(prompts), len(rejects)) == (loaded, rejected)
    assert (end.error is None) == (loaded is not None), end.error
