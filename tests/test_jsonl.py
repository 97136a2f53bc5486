"""JSONL reading points at the bad line; writing is all-or-nothing."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.errors import InputError
from charter.jsonl import (
    atomic_dir,
    json_line,
    kept_encoder,
    read_jsonl,
    read_jsonl_lenient,
    write_jsonl_atomic,
    write_text_atomic,
)


def _leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_read_jsonl_numbers_lines_and_skips_blanks(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n', encoding="utf-8")
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"a": 2})]


def test_read_jsonl_names_the_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(InputError) as err:
        list(read_jsonl(path))
    assert err.value.line == 2
    assert err.value.file == str(path)
    assert "not valid JSON" in err.value.message
    assert f"{path}:2" in str(err.value)


def test_read_jsonl_rejects_a_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(InputError, match="not a JSON object") as err:
        list(read_jsonl(path))
    assert err.value.line == 1


def test_read_jsonl_missing_file_fails_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_lenient_read_keeps_good_rows_and_rejects_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\nnot json\n"a string"\n\xff\xfe\n{"a": 5}\n')
    rows, rejects = read_jsonl_lenient(path)
    assert rows == [(1, {"a": 1}), (5, {"a": 5})]
    assert [r.source for r in rejects] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert all(r.stage == "read" for r in rejects)
    assert rejects[0].row == {"text": "not json"}
    assert "not valid JSON" in rejects[0].reason
    assert "not a JSON object" in rejects[1].reason
    assert "UTF-8" in rejects[2].reason


def test_lenient_read_truncates_the_kept_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("x" * 2000 + "\n", encoding="utf-8")
    _, rejects = read_jsonl_lenient(path)
    assert len(rejects[0].row["text"]) == 500


def test_write_jsonl_atomic_round_trips_and_keeps_unicode(tmp_path: Path) -> None:
    path = tmp_path / "out" / "rows.jsonl"
    rows = [{"text": "café ☕"}, {"n": 2}]
    assert write_jsonl_atomic(path, iter(rows)) == 2
    assert "café ☕" in path.read_text(encoding="utf-8")
    assert [row for _, row in read_jsonl(path)] == rows
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_write_jsonl_atomic_leaves_old_file_when_rows_fail(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_jsonl_atomic(path, [{"old": True}])
    before = path.read_bytes()

    def rows():
        yield {"new": 1}
        raise RuntimeError("generator died midway")

    with pytest.raises(RuntimeError, match="midway"):
        write_jsonl_atomic(path, rows())
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, {"rows.jsonl"}) == []


def test_write_jsonl_atomic_unserialisable_row_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    with pytest.raises(TypeError):
        write_jsonl_atomic(path, [{"ok": 1}, {"bad": object()}])
    assert _leftovers(tmp_path, set()) == []


def test_write_text_atomic_replaces_content(tmp_path: Path) -> None:
    path = tmp_path / "card.md"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second ✓")
    assert path.read_text(encoding="utf-8") == "second ✓"
    assert _leftovers(tmp_path, {"card.md"}) == []


def test_atomic_dir_replaces_an_existing_dir(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        (tmp / "data.json").write_text(json.dumps({"n": 1}))
    assert sorted(p.name for p in target.iterdir()) == ["data.json"]
    assert _leftovers(tmp_path, {"dataset"}) == []


def test_atomic_dir_on_failure_keeps_old_dir_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.bin").write_bytes(b"partial")
        raise RuntimeError("save_to_disk crashed")
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert _leftovers(tmp_path, {"dataset"}) == []


def test_atomic_dir_holds_a_datasets_save(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    target = tmp_path / "saved"
    with atomic_dir(target) as tmp:
        datasets.Dataset.from_list([{"x": 1}, {"x": 2}]).save_to_disk(str(tmp))
    assert datasets.load_from_disk(str(target))["x"] == [1, 2]
    assert _leftovers(tmp_path, {"saved"}) == []


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
_KEYS = st.text() | st.integers() | st.floats(allow_nan=False) | st.booleans() | st.none()
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(_KEYS, inner, max_size=4)
    ),
    max_leaves=20,
)


def _outcome(encode, value):
    try:
        return encode(value)
    except TypeError as exc:  # sort_keys with keys of mixed types
        return type(exc)


@settings(max_examples=500, deadline=None)
@given(_VALUES, st.booleans(), st.booleans())
def test_kept_encoders_write_what_json_dumps_writes(value, ensure_ascii, sort_keys):
    """Every stage row and stored call is written by json_line (and the fake engine hashes what
    its sorted encoder writes); both keep json's C encoder rather than building one per value,
    so the text must stay json.dumps's, to the byte."""
    kept = kept_encoder(ensure_ascii=ensure_ascii, sort_keys=sort_keys)
    plain = partial(json.dumps, ensure_ascii=ensure_ascii, sort_keys=sort_keys)
    assert _outcome(kept, value) == _outcome(plain, value)
    assert json_line(value) == json.dumps(value, ensure_ascii=False)


def test_json_line_refuses_what_json_refuses():
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_line({"a": object()})
