"""Prompts load the same from every format; a bad row is rejected with its line and reason."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from charter.errors import InputError
from charter.prompts import PromptFields, load_prompts

ROWS = [
    {"id": "p1", "prompt": "How do I boil an egg?"},
    {"id": "p2", "prompt": "Explain tides.\nBriefly, please."},
    {"id": "p3", "prompt": "Write a haiku about rain."},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _dataset(path: Path, rows: list[dict]) -> Path:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def _dataset_dict(path: Path, rows: list[dict]) -> Path:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(rows)
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(path))
    return path


# Expected row numbers: the CSV header is line 1, and p2's prompt holds a newline, so its quoted
# cell spans lines 3-4 and p3 starts on line 5. Parquet and datasets rows count from 1.
FORMATS = {
    "prompts.jsonl": (_jsonl, [1, 2, 3]),
    "prompts.csv": (_csv, [2, 3, 5]),
    "prompts.parquet": (_parquet, [1, 2, 3]),
    "prompts_ds": (_dataset, [1, 2, 3]),
    "prompts_dd": (_dataset_dict, [1, 2, 3]),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_loads_the_same_prompts(tmp_path: Path, name: str) -> None:
    write, lines = FORMATS[name]
    path = write(tmp_path / name, ROWS)
    prompts, rejects = load_prompts(path)
    assert rejects == []
    assert [p.prompt_id for p in prompts] == ["p1", "p2", "p3"]
    assert [p.messages for p in prompts] == [
        [{"role": "user", "content": r["prompt"]}] for r in ROWS
    ]
    assert [p.source for p in prompts] == [f"{path}:{n}" for n in lines]


def test_malformed_jsonl_line_is_rejected_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": oops}\n{"prompt": "fine"}\n', encoding="utf-8")
    prompts, rejects = load_prompts(path)
    assert [p.source for p in prompts] == [f"{path}:1", f"{path}:3"]
    assert len(rejects) == 1
    assert rejects[0].source == f"{path}:2"
    assert rejects[0].stage == "generate"
    assert "not valid JSON" in rejects[0].reason


def test_missing_field_names_the_field_and_the_columns(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"id": "x", "text": "hello"}])
    prompts, rejects = load_prompts(path)
    assert len(prompts) == 1
    (reject,) = rejects
    assert reject.field == "prompt"
    assert reject.source == f"{path}:2"
    assert "'prompt'" in reject.reason and "'messages'" in reject.reason
    assert "['id', 'text']" in reject.reason
    assert reject.row == {"id": "x", "text": "hello"}


@pytest.mark.parametrize("empty", ["", "   \n\t"])
def test_empty_prompt_is_rejected(tmp_path: Path, empty: str) -> None:
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"prompt": empty}])
    _, rejects = load_prompts(path)
    assert [(r.source, r.field) for r in rejects] == [(f"{path}:2", "prompt")]
    assert "empty" in rejects[0].reason


def test_messages_must_end_with_a_user_turn(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"messages": chat}])
    _, rejects = load_prompts(path)
    assert [(r.source, r.field) for r in rejects] == [(f"{path}:2", "messages")]
    assert "end with a non-empty user turn" in rejects[0].reason


@pytest.mark.parametrize(
    ("messages", "why"),
    [
        ([], "non-empty list"),
        ("not json", "non-empty list"),
        ([{"role": "robot", "content": "x"}], "role 'robot'"),
        ([{"role": "user"}], "text 'content'"),
        ([{"role": "user", "content": "  "}], "non-empty user turn"),
    ],
)
def test_malformed_messages_are_rejected(tmp_path: Path, messages: object, why: str) -> None:
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"messages": messages}])
    _, rejects = load_prompts(path)
    assert len(rejects) == 1 and why in rejects[0].reason


def test_parquet_null_prompt_is_a_missing_field(tmp_path: Path) -> None:
    path = _parquet(
        tmp_path / "p.parquet", [{"id": "a", "prompt": "ok"}, {"id": "b", "prompt": None}]
    )
    _, rejects = load_prompts(path)
    assert [(r.source, r.field) for r in rejects] == [(f"{path}:2", "prompt")]
    assert "['id']" in rejects[0].reason


def test_multi_turn_messages_keep_their_turns(tmp_path: Path) -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "name": "bot"},
        {"role": "user", "content": "and now?"},
    ]
    path = _jsonl(tmp_path / "p.jsonl", [{"id": "c", "messages": chat, "prompt": "flat"}])
    (prompt,), _ = load_prompts(path)
    assert prompt.messages[2] == {"role": "assistant", "content": "hello"}  # extra keys dropped
    assert len(prompt.messages) == 4  # messages win over a flattened prompt


def test_csv_messages_column_holds_json(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "from csv"}]
    path = _csv(tmp_path / "p.csv", [{"id": "a", "messages": json.dumps(chat)}])
    (prompt,), _ = load_prompts(path)
    assert prompt.messages == chat


def test_field_mapping_reads_other_columns(tmp_path: Path) -> None:
    rows = [{"uid": 7, "question": "Why is the sky blue?", "sys": "Answer like a poet."}]
    path = _jsonl(tmp_path / "q.jsonl", rows)
    (prompt,), _ = load_prompts(path, PromptFields(id="uid", prompt="question", system="sys"))
    assert prompt.prompt_id == "7"
    assert prompt.messages == [
        {"role": "system", "content": "Answer like a poet."},
        {"role": "user", "content": "Why is the sky blue?"},
    ]


def test_mapping_to_a_missing_column_names_the_columns(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "q.jsonl", [{"instruction": "Do X", "output": "..."}] * 2)
    with pytest.raises(InputError) as err:
        load_prompts(path, PromptFields(prompt="question"))
    assert "'question'" in str(err.value)
    assert "['instruction', 'output']" in str(err.value)
    assert err.value.file == str(path)


def test_mapping_a_missing_system_column_is_an_error(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "q.jsonl", [{"prompt": "hi"}])
    with pytest.raises(InputError, match="'system_prompt'"):
        load_prompts(path, PromptFields(system="system_prompt"))


def test_rows_without_id_get_file_line_ids_and_duplicates_are_rejected(tmp_path: Path) -> None:
    rows = [{"prompt": "a"}, {"id": "x", "prompt": "b"}, {"id": "x", "prompt": "c"}]
    path = _jsonl(tmp_path / "mine.jsonl", rows)
    prompts, rejects = load_prompts(path)
    assert [p.prompt_id for p in prompts] == ["mine-00001", "x"]
    assert [(r.source, r.field) for r in rejects] == [(f"{path}:3", "id")]
    assert "duplicate id 'x'" in rejects[0].reason and f"{path}:2" in rejects[0].reason


def test_limit_stops_after_that_many_prompts(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "p.jsonl", ROWS)
    prompts, _ = load_prompts(path, limit=2)
    assert [p.prompt_id for p in prompts] == ["p1", "p2"]


def test_missing_file_and_unknown_format_raise(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_prompts(tmp_path / "absent.jsonl")
    other = tmp_path / "prompts.txt"
    other.write_text("hello")
    with pytest.raises(InputError, match=r"\.jsonl.*\.csv.*\.parquet"):
        load_prompts(other)


def test_no_usable_rows_says_how_many_and_why(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": ""}, {"prompt": " "}])
    with pytest.raises(InputError, match=r"2 rejected; first: .*p\.jsonl:1: prompt is empty"):
        load_prompts(path)


def test_dataset_dict_without_train_split(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(ROWS)
    only = tmp_path / "only"
    datasets.DatasetDict({"test": ds}).save_to_disk(str(only))
    assert len(load_prompts(only)[0]) == 3
    many = tmp_path / "many"
    datasets.DatasetDict({"test": ds, "validation": ds}).save_to_disk(str(many))
    with pytest.raises(InputError, match=r"\['test', 'validation'\]"):
        load_prompts(many)


def test_plain_directory_is_not_a_dataset(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="save_to_disk"):
        load_prompts(tmp_path / "d")
