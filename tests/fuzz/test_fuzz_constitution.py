"""Constitutions as users might write them by mistake: every file ends in a list of problems (and
a refusal to load), or a valid constitution; quickly, whatever the aliases expand to."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from charter.constitution import Constitution, load_constitution, validate_constitution
from tests.fuzz.bad_inputs import damaged, json_values, nasty_text, nonblank_text
from tests.fuzz.fuzzing import ending, examples

# milliseconds in practice (more while Hypothesis traces a failure); an alias bomb took hours
QUICK_S = 20.0
REQUIRED = ("name", "version", "description", "principles")
PRINCIPLE_FIELDS = ("id", "comparison", "critique_request", "revision_request")


@st.composite
def principles(draw: st.DrawFn, index: int) -> dict[str, Any]:
    principle: dict[str, Any] = {"id": f"p{index}"}
    for field in PRINCIPLE_FIELDS[1:]:
        principle[field] = draw(nonblank_text)
    if draw(st.booleans()):
        principle["weight"] = draw(st.floats(min_value=0.01, max_value=100))
    if draw(st.booleans()):
        principle["tags"] = draw(st.lists(nasty_text, max_size=3))
    if draw(st.booleans()):
        example = {
            "prompt": draw(nasty_text),
            "response_a": draw(nasty_text),
            "response_b": draw(nasty_text),
            "better": draw(st.sampled_from(["A", "B"])),
        }
        principle["examples"] = [example]
    return principle


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid constitution with a few fields deleted, retyped, renamed or blown up."""
    count = draw(st.integers(min_value=1, max_value=3))
    data: dict[str, Any] = {
        "name": draw(st.sampled_from(["harmless", "my-rules", "v2_draft"])),
        "version": draw(st.sampled_from(["1", "2.0.1"])),
        "description": draw(nasty_text),
        "principles": [draw(principles(i)) for i in range(count)],
    }
    listed = data["principles"]  # kept: a mutation may delete or retype the key itself
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        principle = draw(st.sampled_from(listed))
        where = draw(st.sampled_from([data, principle]))
        fields = REQUIRED if where is data else PRINCIPLE_FIELDS
        action = draw(st.sampled_from(["delete", "retype", "unknown", "huge", "dup_id", "weight"]))
        field = draw(st.sampled_from(fields))
        if action == "delete":
            where.pop(field, None)
        elif action == "retype":
            where[field] = draw(json_values)
        elif action == "unknown":
            where[draw(nasty_text)] = draw(json_values)
        elif action == "huge":
            where[field] = draw(st.sampled_from(["x", "é", "\U0001f600"])) * 60_000
        elif action == "dup_id":
            listed.append(dict(principle))
        else:
            principle["weight"] = draw(
                st.sampled_from([0, -1, math.nan, math.inf, -math.inf, True, "1", None, 1e308])
            )
    text = yaml.safe_dump(data, allow_unicode=draw(st.booleans()), sort_keys=draw(st.booleans()))
    return draw(damaged(text.encode("utf-8", "surrogatepass")))


@st.composite
def alias_bombs(draw: st.DrawFn) -> bytes:
    """Billion laughs: each level an anchored list of aliases to the level below."""
    levels = draw(st.integers(min_value=2, max_value=12))
    width = draw(st.integers(min_value=2, max_value=10))
    flow = draw(st.booleans())
    lines = [f"l0: &l0 {draw(st.sampled_from(['lol', '[lol, lol]', '{a: lol}']))}"]
    for level in range(1, levels):
        aliases = [f"*l{level - 1}"] * width
        if flow:
            lines.append(f"l{level}: &l{level} [{', '.join(aliases)}]")
        else:
            lines.append(f"l{level}: &l{level}")
            lines += [f"  - {a}" for a in aliases]
    key = draw(st.sampled_from(["name", "description", "principles", "tags", "extra"]))
    lines.append(f"{key}: *l{levels - 1}")
    if draw(st.booleans()):  # the bomb inside a merge key, as a principle
        lines.append(f"principles:\n  - <<: {{x: *l{levels - 1}}}\n    id: a")
    return "\n".join(lines).encode() + b"\n"


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from([10, 33, 200, 1000, 20_000]))
    flow = draw(st.booleans())
    body = "[" * depth + "]" * depth if flow else "{a: " * depth + "1" + "}" * depth
    key = draw(st.sampled_from(["name", "principles", "extra"]))
    return f"{key}: {body}\n".encode()


odd_documents = st.sampled_from(
    [
        b"",
        b"\n\n",
        b"# only a comment\n",
        b"- a\n- b\n",
        b"42\n",
        b"~\n",
        b"'just text'\n",
        b"name: a\n---\nname: b\n",
        b"a: &x [*x]\n",
        b"principles: &p [*p]\n",
        b"name: !!python/object/apply:os.system [echo hi]\n",
        b"name: !!binary aGVsbG8=\nversion: 2001-13-45\n",
        b"version: 1" + b"0" * 5000 + b"\n",
        b"? [a, b]\n: c\n",
        b"name: a\nname: b\n",
        b"\tname: tabs\n",
        b"name: \x00\n",
        b"\xff\xfe\x00n\x00a\x00m\x00e\x00",
    ]
)

constitution_files = st.one_of(
    mutated(), alias_bombs(), deep(), odd_documents, st.binary(max_size=512)
)


def _check_valid(constitution: Constitution) -> None:
    ids = [p.id for p in constitution.principles]
    assert ids and len(ids) == len(set(ids))
    assert all(math.isfinite(p.weight) and p.weight > 0 for p in constitution.principles)


BILLION_LAUGHS = "\n".join(
    ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["name: *l8"]
).encode()


# found by this property (each a traceback, a hang or a wrong answer before its fix)
@example(data=BILLION_LAUGHS)  # hung for hours at ~1 GB
@example(data=b"name: " + b"[" * 5000 + b"]" * 5000 + b"\n")  # RecursionError
@example(data=b"version: 1" + b"0" * 5000 + b"\n")  # ValueError: int digits
@example(data=b"version: 2001-13-01\n")  # ValueError: month must be in 1..12
@example(data=b"name: a\x00\n")  # a two-line problem
@example(data=b'? "\\t\\n"\n: 1\n')  # a key with a line break: a two-line error
@example(  # weight NaN was valid
    data=b"name: a\nversion: '1'\ndescription: d\nprinciples:\n- {id: a, comparison: c, "
    b"critique_request: c, revision_request: r, weight: .nan}\n"
)
@examples(60)
@given(data=constitution_files)
def test_any_constitution_file_gives_problems_or_a_constitution_quickly(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "constitution.yaml"
        path.write_bytes(data)
        start = time.perf_counter()
        with ending("constitution") as end:
            problems = validate_constitution(path)
            for problem in problems:
                assert problem.message.strip() and "\n" not in problem.message, problem
                assert problem.line is None or problem.line >= 1
            end.rejects = len(problems)
            constitution = load_constitution(path)
            assert not problems, "validate found problems that load let through"
            _check_valid(constitution)
        if end.error is not None:
            assert problems, "load refused a file that validate passed"
            assert str(path) in str(end.error)
        assert time.perf_counter() - start < QUICK_S
