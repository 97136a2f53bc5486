"""Recover the constitution a run was judged under, and compare two of them principle by principle.

The most robust copy is the one inside the run directory: the dataset card (README.md) holds the
exact YAML text under "## Constitution", and every pair carries the sha256 of the file's bytes.
The path in ``.hydra/config.yaml`` is only a fallback, used when the file there still hashes to
the recorded sha256: a constitution edited in place since the run would otherwise show the
wrong "before".
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from charter.building import resolve_path
from charter.jsonl import read_jsonl
from charter.report.run_facts import saved_config

_CARD_BLOCK = re.compile(r"^## Constitution\n\n```yaml\n(.*?)\n```\n", re.DOTALL | re.MULTILINE)
_CARD_SHA = re.compile(r"\| constitution sha256 \| `([0-9a-f]{64})` \|")


@dataclass(frozen=True)
class ConstitutionCopy:
    """A run's constitution: its text (None if not recoverable), recorded hash and origin."""

    text: str | None
    sha256: str | None
    source: str


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: str
    after: str


@dataclass(frozen=True)
class PrincipleEdit:
    """A principle ``added``, ``removed`` or ``edited`` (with the fields that changed)."""

    principle: str
    what: str
    fields: list[FieldChange]


@dataclass(frozen=True)
class ConstitutionDiff:
    before: ConstitutionCopy
    after: ConstitutionCopy
    edits: list[PrincipleEdit]
    header_changes: list[FieldChange]

    @property
    def same_hash(self) -> bool:
        return self.before.sha256 is not None and self.before.sha256 == self.after.sha256

    @property
    def comparable(self) -> bool:
        return self.before.text is not None and self.after.text is not None


def recorded_sha256(run_dir: Path) -> str | None:
    """The constitution hash the run recorded (first pair, else the card)."""
    pairs = run_dir / "pairs.jsonl"
    if pairs.is_file():
        for _, row in read_jsonl(pairs):
            return row.get("constitution_sha256")
    card = run_dir / "README.md"
    found = _CARD_SHA.search(card.read_text()) if card.is_file() else None
    return found.group(1) if found else None


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def constitution_of(run_dir: Path) -> ConstitutionCopy:
    """The run's constitution text from its card, else from the configured file if unchanged."""
    sha = recorded_sha256(run_dir)
    card = run_dir / "README.md"
    found = _CARD_BLOCK.search(card.read_text()) if card.is_file() else None
    if found:
        text = found.group(1)
        # the card keeps the text without its trailing newlines
        verified = sha is not None and sha in (_sha(text), _sha(text + "\n"))
        note = "sha256 verified" if verified else "sha256 not verified"
        return ConstitutionCopy(text, sha, f"dataset card README.md ({note})")
    path_value = (saved_config(run_dir).get("constitution") or {}).get("path")
    if path_value:
        path = resolve_path(str(path_value))
        if path.is_file():
            data = path.read_bytes()
            if sha is None or hashlib.sha256(data).hexdigest() == sha:
                return ConstitutionCopy(data.decode(), sha, f"{path} (from .hydra/config.yaml)")
            return ConstitutionCopy(
                None, sha, f"{path} has changed since the run (its sha256 no longer matches)"
            )
    return ConstitutionCopy(None, sha, "no copy in the run directory and no readable file")


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _changes(before: dict[str, Any], after: dict[str, Any]) -> list[FieldChange]:
    return [
        FieldChange(key, _shown(before.get(key, "")), _shown(after.get(key, "")))
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


def _principles(data: Any) -> dict[str, dict[str, Any]]:
    items = data.get("principles") if isinstance(data, dict) else None
    return {str(p["id"]): p for p in items or [] if isinstance(p, dict) and "id" in p}


def diff_constitutions(before: ConstitutionCopy, after: ConstitutionCopy) -> ConstitutionDiff:
    """Principles added, removed and edited between two constitution copies (by id)."""
    if before.text is None or after.text is None:
        return ConstitutionDiff(before, after, [], [])
    old, new = yaml.safe_load(before.text) or {}, yaml.safe_load(after.text) or {}
    old_p, new_p = _principles(old), _principles(new)
    edits = []
    for pid in sorted(old_p.keys() | new_p.keys()):
        if pid not in old_p:
            edits.append(PrincipleEdit(pid, "added", _changes({}, new_p[pid])))
        elif pid not in new_p:
            edits.append(PrincipleEdit(pid, "removed", _changes(old_p[pid], {})))
        elif old_p[pid] != new_p[pid]:
            edits.append(PrincipleEdit(pid, "edited", _changes(old_p[pid], new_p[pid])))
    header = _changes(
        {k: v for k, v in old.items() if k != "principles"} if isinstance(old, dict) else {},
        {k: v for k, v in new.items() if k != "principles"} if isinstance(new, dict) else {},
    )
    return ConstitutionDiff(before, after, edits, header)
