"""``charter validate FILE ...``: check constitution files without composing a config."""

from __future__ import annotations

from charter.building import resolve_path
from charter.constitution import format_problems, load_constitution, validate_constitution
from charter.progress import console


def validate(paths: list[str]) -> int:
    """``charter validate FILE ...``: report every problem; exit 1 if any file has one."""
    if not paths:
        console.print("usage: charter validate FILE [FILE ...]")
        return 2
    status = 0
    for raw in paths:
        path = resolve_path(raw)
        problems = validate_constitution(path)
        if problems:
            status = 1
            print(format_problems(str(path), problems))
        else:
            c = load_constitution(path)
            print(f"{path}: ok ({len(c.principles)} principles, sha256 {c.sha256[:12]})")
    return status
