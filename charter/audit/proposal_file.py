"""``proposed.yaml``: the user's constitution text with the picked principle appended, and its diff.

The new principle is inserted as text after the last item of ``principles``, at that list's
indentation, so the user's comments, order and quoting survive and the diff shows one added
block. If the file's layout defeats that (a flow-style list, say), the whole constitution is
written out again by the YAML dumper instead; either way the result is checked to load as the
old principles plus the new one. The user's file is only ever read.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml


def _principles_node(root: yaml.Node) -> yaml.SequenceNode | None:
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if key.value == "principles" and isinstance(value, yaml.SequenceNode):
            return value
    return None


def _block(principle: dict[str, Any], comment: str, dash_column: int) -> str:
    dumped = yaml.safe_dump([principle], sort_keys=False, allow_unicode=True, width=96)
    pad = " " * dash_column
    lines = [f"{pad}# {line}".rstrip() for line in comment.splitlines()]
    lines += [pad + line for line in dumped.splitlines()]
    return "\n".join(lines) + "\n"


def _inserted(text: str, principle: dict[str, Any], comment: str) -> str | None:
    """The text with the principle inserted after the last list item, or None if it cannot be."""
    try:
        seq = _principles_node(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return None
    if seq is None or seq.flow_style or not seq.value:
        return None
    first = seq.value[0].start_mark
    line = text.splitlines()[first.line]
    dash = line.rfind("-", 0, first.column)
    if dash < 0 or line[:dash].strip():
        return None
    at = seq.value[-1].end_mark.index
    head = text[:at]
    if not head.endswith("\n"):
        head += "\n"
    if not head.endswith("\n\n"):  # a blank line between principles, as the bundled files have
        head += "\n"
    return head + _block(principle, comment, dash) + text[at:]


def with_principle(text: str, principle: dict[str, Any], comment: str) -> str:
    """The constitution ``text`` with ``principle`` added as its last principle.

    Args:
        text: the current constitution file's text (valid).
        principle: the new principle's fields, as they should appear in YAML.
        comment: put above the new principle as ``#`` lines (why it was proposed).
    """
    data = yaml.safe_load(text)
    expected = {**data, "principles": [*data["principles"], principle]}
    inserted = _inserted(text, principle, comment)
    if inserted is not None:
        try:
            if yaml.safe_load(inserted) == expected:
                return inserted
        except yaml.YAMLError:
            pass
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    return header + yaml.safe_dump(expected, sort_keys=False, allow_unicode=True, width=96)


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    """A unified diff of two texts, as ``diff -u`` prints it."""
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=old_name,
            tofile=new_name,
        )
    )
