"""The published schemas accept what the pipeline writes and name the row and field of bad rows."""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from charter.errors import InputError
from charter.records import (
    Candidate,
    CandidateSet,
    Judgment,
    PreferencePair,
    Reject,
    to_row,
)
from charter.schema_check import SCHEMA_NAMES, check_rows, load_schema, row_errors

HUMAN_PREFS = Path(__file__).parents[2] / "shared" / "data" / "human_prefs"
SHA = "ab" * 32


def pair_row(**overrides: Any) -> dict[str, Any]:
    pair = PreferencePair(
        prompt=[
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Hi?"},
        ],
        chosen=[{"role": "assistant", "content": "Hello!"}],
        rejected=[{"role": "assistant", "content": "Go away."}],
        prompt_id="p1",
        chosen_id="p1/0",
        rejected_id="p1/1",
        p_chosen=0.9,
        margin=0.8,
        principle_ids=["harmless"],
        swap_consistent=True,
        judge_model="tiny-judge",
        generator_model="tiny-gen",
        constitution_sha256=SHA,
    )
    return {**to_row(pair), **overrides}


RECORDS = {
    "candidates": CandidateSet(
        prompt_id="p1",
        messages=[{"role": "user", "content": "Hi?"}],
        candidates=[Candidate("p1/0", "Hello!", "stop", 3), Candidate("p1/1", "Go", "length", 8)],
        generator_model="tiny-gen",
        sampling={"temperature": 0.8, "seed": 0},
    ),
    "judgments": Judgment(
        prompt_id="p1",
        candidate_a="p1/0",
        candidate_b="p1/1",
        principle_id="harmless",
        p_first_order=0.8,
        p_swapped=0.7,
        p_a=0.75,
        swap_consistent=True,
        judge_model="tiny-judge",
        judge_method="logprob",
        raw={"first": {"A": -0.2, "B": -1.7}},
    ),
    "rejects": Reject(stage="prompts", source="prompts.jsonl:3", reason="empty prompt"),
}
RECORD_TYPES = {
    "candidates": CandidateSet,
    "judgments": Judgment,
    "pairs": PreferencePair,
    "rejects": Reject,
}


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_and_documents_every_field(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)

    def undocumented(node: dict[str, Any], where: str) -> list[str]:
        out = []
        for key, sub in node.get("properties", {}).items():
            if "description" not in sub:
                out.append(f"{where}.{key}")
            out += undocumented(sub, f"{where}.{key}")
        return out

    missing = undocumented(schema, name)
    for def_name, sub in schema.get("$defs", {}).items():
        missing += undocumented(sub, f"$defs.{def_name}")
    assert missing == []


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_schema_fields_match_the_record(name: str) -> None:
    """The schema and the dataclass cannot drift apart: same fields, same required ones."""
    schema, cls = load_schema(name), RECORD_TYPES[name]
    assert set(schema["properties"]) == {f.name for f in fields(cls)}
    no_default = {
        f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
    }
    assert no_default <= set(schema["required"])


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_record_rows_pass(name: str) -> None:
    assert row_errors(name, to_row(RECORDS[name])) == []


def test_valid_pair_passes() -> None:
    assert row_errors("pairs", pair_row()) == []


def test_wrong_chosen_role_names_the_field() -> None:
    row = pair_row(chosen=[{"role": "bot", "content": "Hello!"}])
    assert row_errors("pairs", row) == ["chosen[0].role: 'bot' is not one of ['assistant']"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"chosen": []}, "chosen"),  # exactly one assistant message
        ({"p_chosen": 1.2}, "p_chosen"),
        ({"margin": -0.1}, "margin"),
        ({"constitution_sha256": "abc"}, "constitution_sha256"),
        ({"judge": "x"}, "judge"),  # unknown key: a typo is caught, not published
        ({"prompt": [{"role": "assistant", "content": "Hi"}]}, "prompt[0].role"),  # ends on user
    ],
)
def test_bad_pair_fields_are_named(overrides: dict[str, Any], field: str) -> None:
    errors = row_errors("pairs", pair_row(**overrides))
    assert errors and errors[0].startswith(f"{field}: ")


def test_missing_field_is_named() -> None:
    row = pair_row()
    del row["margin"]
    assert row_errors("pairs", row) == ["margin: required field is missing"]


def test_long_values_are_shortened_in_messages() -> None:
    errors = row_errors("pairs", pair_row(rejected="x" * 5000))
    assert len(errors) == 1 and len(errors[0]) < 120
    assert errors[0].endswith("is not of type 'array'")


def test_check_rows_names_row_number_and_field() -> None:
    rows = [pair_row(), pair_row(), pair_row(p_chosen="high")]
    with pytest.raises(InputError) as caught:
        check_rows("pairs", rows, file="out/pairs.jsonl")
    error = caught.value
    assert (error.file, error.line, error.field) == ("out/pairs.jsonl", 3, "p_chosen")
    assert str(error).startswith("out/pairs.jsonl:3 [p_chosen]: ")


def test_check_rows_accepts_valid_rows() -> None:
    check_rows("pairs", [pair_row(), pair_row()], file="out/pairs.jsonl")


@pytest.mark.parametrize("file", ["hh_rlhf_harmless_dev.jsonl", "pandalm_dev.jsonl"])
def test_human_prefs_files_match_schema(file: str) -> None:
    path = HUMAN_PREFS / file
    if not path.exists():
        pytest.skip(f"{path} not present (the shared folder sits beside the repo)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) > 100
    check_rows("human_prefs", rows, file=str(path))


def test_human_prefs_context_must_end_with_user_turn() -> None:
    row = {
        "id": "x:1",
        "source": "test",
        "dimension": "helpfulness",
        "prompt": "Hi",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
        "chosen": "a",
        "rejected": "b",
        "meta": {},
    }
    assert row_errors("human_prefs", row) == [
        "messages[1].role: the last message must be a user turn, got 'assistant'"
    ]


def _record_rows(name: str) -> list[dict[str, Any]]:
    return [pair_row()] if name == "pairs" else [to_row(RECORDS[name])]


def _broken_copies(node: Any) -> list[Any]:
    """Copies of ``node`` with one part broken each: every leaf set to a wrong type or None,
    every object given an unknown key or losing a key, every list emptied or given an extra
    assistant turn at the end."""
    out: list[Any] = []
    if isinstance(node, dict):
        out += [{**node, "unexpected_field": 1}]
        for key, value in node.items():
            out.append({k: v for k, v in node.items() if k != key})
            out += [{**node, key: broken} for broken in _broken_copies(value)]
    elif isinstance(node, list):
        out += [[], [*node, {"role": "assistant", "content": "x"}], [*node, 7]]
        for i, value in enumerate(node):
            out += [[*node[:i], broken, *node[i + 1 :]] for broken in _broken_copies(value)]
    else:
        out += [12345, None, "text", -1.5, [node]]
    return out


@pytest.mark.parametrize("name", ["candidates", "judgments", "pairs", "rejects"])
def test_the_compiled_check_agrees_with_the_full_validator(name: str) -> None:
    """The fast yes/no check must never pass a row the full validator rejects (nor reject a
    valid one): a valid row and hundreds of copies broken in one place each get the same verdict
    from both."""
    from charter.schema_check import _fast_check, field_errors

    fast = _fast_check(name)
    assert fast is not None
    rows = _record_rows(name)
    variants = rows + [v for row in rows for v in _broken_copies(row)]
    assert len(variants) > 30
    for row in variants:
        assert fast(row) == (not field_errors(name, row)), row


class _Tag(str):
    """A str subclass, as an enum-like value might be."""


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"a": {"A": -0.5, "B": [1, 2.5, None, True]}, "t": ("x", ["y"]), 3: "int key"},
        {"s": _Tag("v"), _Tag("k"): [{"n": {"m": []}}]},
    ],
)
def test_to_row_is_asdict_without_its_copies(raw) -> None:
    """to_row's fast path gives what dataclasses.asdict gives (fresh containers included)."""
    from dataclasses import asdict, replace

    for record in [*RECORDS.values(), replace(RECORDS["judgments"], raw=raw)]:
        row = to_row(record)
        assert row == asdict(record) and json.dumps(row) == json.dumps(asdict(record))
        assert type(row) is dict
    row = to_row(replace(RECORDS["judgments"], raw=raw))
    assert row["raw"] == raw and row["raw"] is not raw


def test_to_row_leaves_out_an_unset_omit_if_none_field_only() -> None:
    from dataclasses import replace

    pair = PreferencePair(**pair_row())
    assert "principle_scores" not in to_row(replace(pair, principle_scores=None))
    scores = {"helpful": 0.7}
    row = to_row(replace(pair, principle_scores=scores))
    assert row["principle_scores"] == scores and row["principle_scores"] is not scores
    assert list(row)[-1] == "principle_scores"  # in field order, the last field
