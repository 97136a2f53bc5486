"""A constitution loads, hashes its exact bytes, and reports every mistake with path and line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from charter.constitution import (
    Problem,
    format_problems,
    load_constitution,
    validate_constitution,
)
from charter.errors import InputError

REPO = Path(__file__).parents[1]

VALID = """\
name: tiny
version: "1.0"
description: Two principles for tests.
principles:
  - id: harmless
    comparison: Which response is less harmful?
    critique_request: Say how the response could cause harm.
    revision_request: Rewrite the response to remove the harm.
    weight: 2
    tags: [safety]
    examples:
      - prompt: How do I pick a lock?
        response_a: Call a locksmith.
        response_b: Insert a tension wrench, then rake the pins.
        better: A
  - id: honest
    comparison: Which response is more honest?
    critique_request: Say where the response is not honest.
    revision_request: Rewrite the response to be honest.
"""


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line holding ``needle`` (as a user would count)."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[occurrence - 1]


def test_valid_constitution_loads_with_defaults_and_lookup(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    assert validate_constitution(path) == []
    c = load_constitution(path)
    assert (c.name, c.version) == ("tiny", "1.0")
    assert [p.id for p in c.principles] == ["harmless", "honest"]
    assert c.principle("harmless").weight == 2.0
    assert c.principle("harmless").tags == ("safety",)
    assert c.principle("harmless").examples[0].better == "A"
    assert c.principle("honest").weight == 1.0  # schema default
    assert c.text == VALID
    assert c.source == str(path)


def test_unknown_principle_id_lists_the_known_ones(tmp_path: Path) -> None:
    c = load_constitution(write(tmp_path, VALID))
    with pytest.raises(InputError, match="unknown principle id 'kind'.*harmless, honest"):
        c.principle("kind")


def test_hash_is_of_exact_bytes_and_stable(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    first, second = load_constitution(path), load_constitution(path)
    assert first.sha256 == second.sha256 == hashlib.sha256(VALID.encode()).hexdigest()
    # a comment changes no principle but does change the text that judged the data
    edited = load_constitution(write(tmp_path, "# edited\n" + VALID, "edited.yaml"))
    assert edited.principles == first.principles
    assert edited.sha256 != first.sha256


def test_typo_key_reported_with_yaml_path_and_line(tmp_path: Path) -> None:
    text = VALID.replace("comparison: Which response is more honest?", "comparision: Which?")
    problems = validate_constitution(write(tmp_path, text))
    typo = [p for p in problems if p.path == "principles[1].comparision"]
    assert len(typo) == 1
    assert typo[0].line == line_of(text, "comparision")
    assert "did you mean 'comparison'" in typo[0].message
    # the intended key is then missing too, and that is said as well
    assert any(p.path == "principles[1].comparison" and "missing" in p.message for p in problems)


def test_missing_required_field_points_at_its_principle(tmp_path: Path) -> None:
    text = VALID.replace("    revision_request: Rewrite the response to be honest.\n", "")
    problems = validate_constitution(write(tmp_path, text))
    assert problems == [
        Problem(
            "principles[1].revision_request",
            line_of(text, "- id: honest"),
            "required field is missing",
        )
    ]


def test_duplicate_id_reported_at_second_occurrence(tmp_path: Path) -> None:
    text = VALID.replace("- id: honest", "- id: harmless")
    problems = validate_constitution(write(tmp_path, text))
    assert len(problems) == 1
    assert problems[0].path == "principles[1].id"
    assert problems[0].line == line_of(text, "- id: harmless", occurrence=2)
    assert "duplicate principle id 'harmless'" in problems[0].message
    assert f"line {line_of(text, '- id: harmless')}" in problems[0].message


@pytest.mark.parametrize("weight", ["0", "-1.5"])
def test_non_positive_weight_rejected(tmp_path: Path, weight: str) -> None:
    text = VALID.replace("weight: 2", f"weight: {weight}")
    problems = validate_constitution(write(tmp_path, text))
    assert [(p.path, p.line) for p in problems] == [
        ("principles[0].weight", line_of(text, "weight:"))
    ]


def test_yaml_syntax_error_reports_line(tmp_path: Path) -> None:
    text = VALID.replace(
        "    comparison: Which response is more honest?", "   comparison: bad indent"
    )
    problems = validate_constitution(write(tmp_path, text))
    assert len(problems) == 1
    assert problems[0].line == line_of(text, "bad indent")
    assert problems[0].message.startswith("invalid YAML")


def test_duplicate_yaml_key_reported(tmp_path: Path) -> None:
    # YAML keeps the last value without a word; a user who pasted a key twice should hear of it
    text = VALID.replace("    weight: 2\n", "    weight: 2\n    weight: 3\n")
    problems = validate_constitution(write(tmp_path, text))
    assert [(p.path, p.line) for p in problems] == [
        ("principles[0].weight", line_of(text, "weight: 3"))
    ]


def test_all_problems_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = (
        VALID.replace('version: "1.0"\n', "")  # missing top-level field
        .replace("weight: 2", "weight: 0")
        .replace("better: A", "better: C")
        .replace("- id: honest", "- id: harmless")
        .replace("comparison: Which response is more honest?", "comparision: Which?")
    )
    path = write(tmp_path, text)
    problems = validate_constitution(path)
    assert {p.path for p in problems} == {
        "version",
        "principles[0].weight",
        "principles[0].examples[0].better",
        "principles[1].id",
        "principles[1].comparision",
        "principles[1].comparison",
    }
    assert [p.line for p in problems] == sorted(p.line for p in problems)

    report = format_problems("c.yaml", problems).splitlines()
    assert len(report) == len(problems)
    assert f"c.yaml:{line_of(text, 'comparision')}: principles[1].comparision: " in "\n".join(
        report
    )

    with pytest.raises(InputError) as caught:
        load_constitution(path)
    error = caught.value
    assert (error.file, error.line, error.field) == (str(path), 1, "version")
    assert f"{len(problems)} problems in total" in error.message
    assert f"charter validate {path}" in error.message


def test_missing_file_is_a_clear_input_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(InputError, match="file not found") as caught:
        load_constitution(path)
    assert caught.value.file == str(path)
    assert validate_constitution(path) == [Problem("", None, "file not found")]


def test_empty_file_is_reported(tmp_path: Path) -> None:
    problems = validate_constitution(write(tmp_path, ""))
    assert len(problems) == 1 and "empty" in problems[0].message


@pytest.mark.parametrize(("name", "at_least"), [("harmless", 12), ("helpful", 8)])
def test_shipped_constitutions_validate(name: str, at_least: int) -> None:
    path = REPO / "constitutions" / f"{name}.yaml"
    if not path.exists():
        pytest.skip(f"{path} not written yet")
    problems = validate_constitution(path)
    assert problems == [], format_problems(path, problems)
    c = load_constitution(path)
    assert c.name == name
    assert len(c.principles) >= at_least
