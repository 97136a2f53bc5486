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


def _yaml_problem(error: yaml.YAMLError) -> Problem:
    mark = getattr(error, "problem_mark", None)
    if not isinstance(error, yaml.MarkedYAMLError) or mark is None:
        return Problem("", None, f"invalid YAML: {error}")
    message = f"invalid YAML: {error.problem}"
    if error.context and error.context_mark is not None:
        message += f" ({error.context} at line {error.context_mark.line + 1})"
    elif error.context:
        message += f" ({error.context})"
    return Problem("", mark.line + 1, message)


def _read(path: Path) -> tuple[bytes | None, Any, list[Problem]]:
    """Read, parse and check a constitution: ``(raw bytes, data, problems sorted by line)``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None, [Problem("", None, "file not found")]
    except OSError as error:
        return None, None, [Problem("", None, f"cannot read the file: {error.strerror}")]
    try:
        loader = yaml.SafeLoader(raw.decode("utf-8"))
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError as error:
        return (
            raw,
            None,
            [Problem("", None, f"not UTF-8 text ({error.reason} at byte {error.start})")],
        )
    except yaml.YAMLError as error:
        return raw, None, [_yaml_problem(error)]
    if root is None:
        message = "the file is empty; a constitution needs name, version, description, principles"
        return raw, None, [Problem("", 1, message)]
    problems = _duplicate_keys(root, (), set())
    for error in field_errors("constitution", data):
        problems.append(Problem(error.field, _node_line(root, error.path), error.message))
    problems += _duplicate_ids(data, root)
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
