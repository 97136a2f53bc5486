"""Labelled review files as people send them back (any label, a wrong id, a repeated row, a CSV
saved by a spreadsheet, broken bytes): ``charter review import`` merges them or stops with one
clear error, and never leaves ``reviewed/`` half-written."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from charter.review import REVIEWED_DIR, ReviewSettings, export_queue
from charter.review_labels import import_labels
from tests.fuzz.bad_inputs import BROKEN_LINES, damaged, json_line, json_values, nasty_text
from tests.fuzz.fuzzing import ending, examples

PAIRS = 6


def _pair(index: int) -> dict[str, Any]:
    margin = (index + 1) / (PAIRS + 1)
    return {
        "prompt": [{"role": "user", "content": f"question {index}"}],
        "chosen": [{"role": "assistant", "content": f"good answer {index}"}],
        "rejected": [{"role": "assistant", "content": f"bad answer {index}"}],
        "prompt_id": f"p{index}",
        "chosen_id": f"p{index}/0",
        "rejected_id": f"p{index}/1",
        "p_chosen": (1 + margin) / 2,
        "margin": margin,
        "swap_consistent": index % 2 == 0,
        "judge_model": "fake",
    }


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, tuple[Path, list[dict[str, Any]]]]]:
    """A run with pairs and an exported review queue, per labelling format: ``{format: (run
    dir, the rows handed to people)}``."""
    root = Path(tempfile.mkdtemp())
    made = {}
    for fmt in ("jsonl", "csv"):
        run = root / fmt
        run.mkdir()
        (run / "pairs.jsonl").write_text("".join(json.dumps(_pair(i)) + "\n" for i in range(PAIRS)))
        dest, _, _ = export_queue(run, ReviewSettings(budget=4, format=fmt))
        if fmt == "jsonl":
            rows = [json.loads(line) for line in dest.open()]
        else:
            with dest.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
        made[fmt] = (run, rows)
    yield made
    shutil.rmtree(root, ignore_errors=True)


LABELS = st.one_of(
    st.sampled_from(["a", "b", "tie", "", " B ", "TIE", "A\n"]),
    st.sampled_from(["maybe", "c", "ab", "0", "1", "none"]),
    json_values,
)


@st.composite
def labelled(draw: st.DrawFn, rows: list[dict[str, Any]]) -> list[Any]:
    """The exported rows, labelled; some with a wrong or missing id, some repeated, some lines
    replaced by junk; Argilla's ``preference.responses`` now and then."""
    out: list[Any] = []
    for row in rows:
        row = dict(row)
        style = draw(st.sampled_from(["label", "label", "label", "argilla", "id", "drop", "twice"]))
        if style == "drop":
            continue
        if style == "argilla":
            row.pop("human_label")
            row["preference.responses"] = draw(
                st.one_of(
                    st.lists(st.fixed_dictionaries({"value": LABELS}), max_size=3),
                    st.lists(LABELS, max_size=3),
                    json_values,
                )
            )
        else:
            row["human_label"] = draw(LABELS)
        if style == "id":
            choice = draw(st.sampled_from(["missing", "other", "value"]))
            if choice == "missing":
                row.pop("review_id")
            else:
                row["review_id"] = draw(nasty_text if choice == "other" else json_values)
        out.append(row)
        if style == "twice":
            out.append({**row, "human_label": draw(LABELS)})
    if draw(st.booleans()):
        out.insert(draw(st.integers(0, len(out))), draw(st.sampled_from(BROKEN_LINES)))
    return out


def _encode(fmt: str, rows: list[Any]) -> bytes:
    if fmt == "jsonl":
        return b"".join((r if isinstance(r, bytes) else json_line(r)) + b"\n" for r in rows)
    dicts = [r for r in rows if isinstance(r, dict)]
    keys = list(dict.fromkeys(k for r in dicts for k in r))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(keys)
    for row in dicts:
        cells = [row.get(k, "") for k in keys]
        writer.writerow([c if isinstance(c, str) else json.dumps(c) for c in cells])
    return buffer.getvalue().encode("utf-8", "surrogatepass")


@examples(30)
@given(fmt=st.sampled_from(["jsonl", "csv"]), broken=st.booleans(), data=st.data())
def test_any_labelled_file_merges_or_stops_cleanly(
    runs: dict[str, tuple[Path, list[dict[str, Any]]]], fmt: str, broken: bool, data: st.DataObject
) -> None:
    run, rows = runs[fmt]
    shutil.rmtree(run / REVIEWED_DIR, ignore_errors=True)
    raw = _encode(fmt, data.draw(labelled(rows)))
    if broken:
        raw = data.draw(damaged(raw))
    labels = run.parent / f"labels_{fmt}.{fmt}"
    labels.write_bytes(raw)
    with ending(f"review labels .{fmt}") as end:
        merged, report = import_labels(run, labels)
        ties = report["ties_dropped"]
        assert len(merged) == PAIRS - ties
        assert all(r["label_source"] in ("judge", "human") for r in merged)
        end.rejects = ties
    if end.error is not None:
        assert not (run / REVIEWED_DIR).exists(), "a refused file still wrote reviewed/"
    end.check_files(run)


# found by reading the label reader for what the property draws: each was a traceback
FOUND = {
    "id_list.jsonl": b'{"review_id": ["a"], "human_label": "a"}\n',
    "responses_number.jsonl": b'{"review_id": "RID", "preference.responses": 5}\n',
    "bad_bytes.csv": b"review_id,human_label\nRID,\xff\n",
    "long_cell.csv": b'review_id,human_label,note\nRID,a,"' + b"x" * 200_000 + b'"\n',
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_label_files_the_fuzzing_found(
    runs: dict[str, tuple[Path, list[dict[str, Any]]]], name: str
) -> None:
    fmt = name.rpartition(".")[2]
    run, rows = runs[fmt]
    shutil.rmtree(run / REVIEWED_DIR, ignore_errors=True)
    labels = run.parent / name
    labels.write_bytes(FOUND[name].replace(b"RID", str(rows[0]["review_id"]).encode()))
    with ending(f"review labels .{fmt}") as end:
        import_labels(run, labels)
    assert (end.error is None) == (name == "long_cell.csv"), end.error
    end.check_files(run)
