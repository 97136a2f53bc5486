"""Load and validate a constitution: the YAML file of principles a judge applies.

A constitution is data, not code, so its mistakes are the user's to fix.
:func:`validate_constitution` lists every problem at once, each with the YAML path and source line
(``principles[3].comparision`` at line 41), because fixing one error per run is slow.
:func:`load_constitution` refuses a file with any problem, so a typo can never silently drop a
principle from a run.

The file's exact bytes are hashed (``Constitution.sha256``) into every pair's provenance, and the
raw text goes into the dataset card: a published dataset names the text that judged it.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from charter.errors import InputError
from charter.schema_check import field_errors, format_path


@dataclass(frozen=True)
class FewShotExample:
    """A worked comparison shown to the judge before the real one."""

    prompt: str
    response_a: str
    response_b: str
    better: Literal["A", "B"]
    explanation: str | None = None


@dataclass(frozen=True)
class Principle:
    """One principle: the pairwise question for the judge and the critique/revision requests.

    ``weight`` (> 0) sets how much this principle's verdict counts when verdicts are combined.
    """

    id: str
    comparison: str
    critique_request: str
    revision_request: str
    weight: float = 1.0
    tags: tuple[str, ...] = ()
    examples: tuple[FewShotExample, ...] = ()


@dataclass(frozen=True)
class Constitution:
    """A validated constitution.

    ``sha256`` is of the file's exact bytes (a changed comment is a changed constitution: the
    hash identifies the text, not its meaning); ``source`` is the path it was read from and
    ``text`` the raw YAML, for the dataset card.
    """

    name: str
    version: str
    description: str
    principles: tuple[Principle, ...]
    sha256: str
    source: str
    text: str

    def principle(self, id: str) -> Principle:
        """The principle with this id.

        Raises:
            InputError: no principle has this id (the message lists the ids there are).
        """
        for principle in self.principles:
            if principle.id == id:
                return principle
        known = ", ".join(p.id for p in self.principles)
        raise InputError(
            f"unknown principle id {id!r}; constitution {self.name!r} has: {known}",
            file=self.source,
            field="principle_id",
        )


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a constitution file.

    ``path`` is the YAML path at fault (``principles[3].comparision``; ``""`` for the whole
    file) and ``line`` its 1-based source line, when known.
    """

    path: str
    line: int | None
    message: str


def _node_line(root: yaml.Node, path: tuple[str | int, ...]) -> int:
    """The source line of the node at ``path``, or of its deepest existing ancestor.

    A missing field has no node, so it points at the mapping that should hold it.
    """
    node, line = root, root.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            # reversed: with a duplicated key YAML keeps the last value, so point at that one
            pairs = (kv for kv in reversed(node.value) if kv[0].value == str(part))
            match = next(pairs, None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _duplicate_keys(node: yaml.Node, path: tuple[str | int, ...], seen: set[int]) -> list[Problem]:
    """Repeated keys in any mapping: YAML silently keeps the last one, which hides a mistake."""
    if id(node) in seen:  # an alias back to an anchor: already checked
        return []
    seen.add(id(node))
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if key.value in first:
                problems.append(
                    Problem(
                        format_path((*path, key.value)),
                        line,
                        f"duplicate key {key.value!r} (first at line {first[key.value]}); "
                        "YAML would silently keep only the last one",
                    )
                )
            first.setdefault(key.value, line)
            problems += _duplicate_keys(value, (*path, key.value), seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicate_keys(item, (*path, index), seen)
    return problems


def _duplicate_ids(data: Any, root: yaml.Node) -> list[Problem]:
    """Principle ids must be unique: judgments and pairs cite principles by id."""
    principles = data.get("principles") if isinstance(data, dict) else None
    if not isinstance(principles, list):
        return []
    problems, first = [], {}
    for index, principle in enumerate(principles):
        pid = principle.get("id") if isinstance(principle, dict) else None
        if not isinstance(pid, str):
            continue
        path = ("principles", index, "id")
        line = _node_line(root, path)
        if pid in first:
            message = f"duplicate principle id {pid!r} (first used at line {first[pid]})"
            problems.append(Problem(format_path(path), line, message))
        first.setdefault(pid, line)
    return problems


def _yaml_problem(error: yaml.YAMLError, text: str) -> Problem:
    if isinstance(error, yaml.reader.ReaderError):  # a NUL or control character
        line = text.count("\n", 0, error.position) + 1
        char = f"#x{error.character:04x}" if isinstance(error.character, int) else "?"
        return Problem("", line, f"invalid YAML: unacceptable character {char} ({error.reason})")
    mark = getattr(error, "problem_mark", None)
    if not isinstance(error, yaml.MarkedYAMLError) or mark is None:
        return Problem("", None, f"invalid YAML: {' '.join(str(error).split())}")
    message = f"invalid YAML: {error.problem}"
    if error.context and error.context_mark is not None:
        message += f" ({error.context} at line {error.context_mark.line + 1})"
    elif error.context:
        message += f" ({error.context})"
    return Problem("", mark.line + 1, message)


MAX_VALUES = 100_000
"""The most values a constitution may expand to, counting each use of an alias: the bundled
ones have a few hundred; an alias bomb ("billion laughs") has billions in a few lines."""

MAX_DEPTH = 32
"""The deepest nesting allowed; a constitution's own structure is five levels deep."""


_BRACKET = re.compile(r"[\[\]{}]")


def _bracket_depth(text: str) -> int:
    """How deep ``[``/``{`` nest in the raw text (quotes ignored: an over-count needs dozens of
    unclosed brackets inside strings). Checked before parsing, because PyYAML scans deeply
    nested flow collections in quadratic time, then runs out of stack."""
    depth = deepest = 0
    for match in _BRACKET.finditer(text):
        depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expansion_problem(root: yaml.Node) -> Problem | None:
    """Refuse a document too big once its aliases are expanded, nested too deep, or holding an
    alias inside its own anchor, before anything walks it value by value.

    The walk is iterative and counts each shared node once (its expanded size is remembered),
    so it takes time in the size of the file, not of the expansion.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()  # the nodes being walked: an alias to one of them is a loop
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, finished = stack.pop()
        line = node.start_mark.line + 1
        if finished:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[id(node)] > MAX_VALUES:
                message = (
                    f"expands to more than {MAX_VALUES:,} values through its aliases "
                    "(a YAML alias bomb?)"
                )
                return Problem("", line, message)
            continue
        if id(node) in sizes:
            continue
        if id(node) in on_path:
            return Problem("", line, "an alias refers to its own anchor (a structure with no end)")
        if depth > MAX_DEPTH:
            return Problem("", line, f"nested more than {MAX_DEPTH} levels deep")
        on_path.add(id(node))
        stack.append((node, depth, True))
        stack += [(child, depth + 1, False) for child in _children(node) if id(child) not in sizes]
    return None


def _non_finite_weights(data: Any, root: yaml.Node) -> list[Problem]:
    """``weight: .nan`` or ``.inf`` slips past the schema's ``> 0`` (NaN compares false)."""
    principles = data.get("principles") if isinstance(data, dict) else None
    if not isinstance(principles, list):
        return []
    problems = []
    for index, principle in enumerate(principles):
        weight = principle.get("weight") if isinstance(principle, dict) else None
        if isinstance(weight, float) and not math.isfinite(weight):
            path = ("principles", index, "weight")
            message = f"weight must be a finite number > 0, got {weight}"
            problems.append(Problem(format_path(path), _node_line(root, path), message))
    return problems


def _read(path: Path) -> tuple[bytes | None, Any, list[Problem]]:
    """Read, parse and check a constitution: ``(raw bytes, data, problems sorted by line)``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None, [Problem("", None, "file not found")]
    except OSError as error:
        return None, None, [Problem("", None, f"cannot read the file: {error.strerror}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        problem = Problem("", None, f"not UTF-8 text ({error.reason} at byte {error.start})")
        return raw, None, [problem]
    if _bracket_depth(text) > MAX_DEPTH:
        return raw, None, [Problem("", None, f"brackets nested more than {MAX_DEPTH} deep")]
    try:
        loader = yaml.SafeLoader(text)  # checks every character first: a NUL fails here
    except yaml.YAMLError as error:
        return raw, None, [_yaml_problem(error, text)]
    try:
        root = loader.get_single_node()
        too_big = _expansion_problem(root) if root is not None else None
        if too_big is not None:
            return raw, None, [too_big]
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as error:
        return raw, None, [_yaml_problem(error, text)]
    except RecursionError:  # composing nests a call per level: deeper than Python's stack
        return raw, None, [Problem("", None, f"nested more than {MAX_DEPTH} levels deep")]
    except ValueError as error:  # a value YAML cannot build: a 5,000-digit integer, month 13
        reason = str(error).split(";")[0]
        return raw, None, [Problem("", None, f"invalid YAML value: {reason}")]
    finally:
        loader.dispose()
    if root is None:
        message = "the file is empty; a constitution needs name, version, description, principles"
        return raw, None, [Problem("", 1, message)]
    problems = _duplicate_keys(root, (), set())
    for error in field_errors("constitution", data):
        problems.append(Problem(error.field, _node_line(root, error.path), error.message))
    problems += _duplicate_ids(data, root)
    problems += _non_finite_weights(data, root)
    problems.sort(key=lambda p: (p.line is None, p.line or 0))
    return raw, data, problems


def validate_constitution(path: str | Path) -> list[Problem]:
    """Every problem in the constitution at ``path``, in file order; empty if it is valid.

    Reports YAML syntax errors (parsing stops at the first), unknown or missing fields and bad
    values (schema ``constitution.schema.json``), duplicate keys and duplicate principle ids.
    """
    return _read(Path(path))[2]


def load_constitution(path: str | Path) -> Constitution:
    """Load a constitution, refusing it if anything is wrong.

    Raises:
        InputError: the file is missing, or has problems; the error points at the first one and
            says how many there are (``charter validate PATH`` lists them all).
    """
    raw, data, problems = _read(Path(path))
    if raw is None:
        raise InputError(
            f"cannot read the constitution: {problems[0].message}; pass the path to a YAML "
            "file such as constitutions/harmless.yaml",
            file=str(path),
        )
    if problems:
        first, count = problems[0], len(problems)
        total = f"{count} problem{'s' if count > 1 else ''} in total"
        raise InputError(
            f"{first.message} ({total}; run `charter validate {path}` to list them all)",
            file=str(path),
            line=first.line,
            field=first.path or None,
        )
    principles = tuple(
        Principle(
            id=p["id"],
            comparison=p["comparison"],
            critique_request=p["critique_request"],
            revision_request=p["revision_request"],
            weight=float(p.get("weight", 1.0)),
            tags=tuple(p.get("tags", ())),
            examples=tuple(FewShotExample(**e) for e in p.get("examples", ())),
        )
        for p in data["principles"]
    )
    return Constitution(
        name=data["name"],
        version=data["version"],
        description=data["description"],
        principles=principles,
        sha256=hashlib.sha256(raw).hexdigest(),
        source=str(path),
        text=raw.decode("utf-8"),
    )


def format_problems(file: str | Path, problems: list[Problem]) -> str:
    """One ``file:line: path: message`` line per problem, for the CLI (like a compiler's output)."""
    lines = []
    for problem in problems:
        where = f"{file}:{problem.line}" if problem.line is not None else str(file)
        what = f"{problem.path}: {problem.message}" if problem.path else problem.message
        lines.append(f"{where}: {what}")
    return "\n".join(lines)
