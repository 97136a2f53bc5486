"""The human-labelled pairs an audit reads: a dev file, or the human labels of a reviewed run.

A reviewed run's ``reviewed/pairs.jsonl`` holds every published pair with ``label_source``; the
rows people labelled (``human``) already have the human choice as ``chosen``, so they become
:class:`~charter.human_prefs.HumanPair` rows like a dev file's and are judged afresh under the
audited judge and constitution (the call cache serves what the run already judged).
"""

from __future__ import annotations

from pathlib import Path

from charter import run_files
from charter.errors import InputError
from charter.human_prefs import HumanPair, load_human_pairs
from charter.jsonl import read_jsonl
from charter.records import Reject


def pairs_from_reviewed_run(run_dir: Path, limit: int | None = None) -> tuple[list[HumanPair], str]:
    """The pairs people labelled in a reviewed run, and the sha256 of the run's constitution.

    Raises:
        InputError: the run has no reviewed pairs, or none of them was labelled by a person.
    """
    reviewed = run_dir / "reviewed" / run_files.PAIRS
    if not reviewed.exists():
        raise InputError(
            f"no reviewed pairs; label a queue and run `charter review import {run_dir} FILE`",
            file=str(reviewed),
        )
    pairs: list[HumanPair] = []
    sha = ""
    for _, row in read_jsonl(reviewed):
        if row.get("label_source") != "human":
            continue
        sha = row.get("constitution_sha256", sha)
        pairs.append(
            HumanPair(
                id=f"{row['chosen_id']}|{row['rejected_id']}",
                messages=row["prompt"],
                chosen=row["chosen"][-1]["content"],
                rejected=row["rejected"][-1]["content"],
                dimension="reviewed",
            )
        )
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise InputError(
            "the run has reviewed pairs but none labelled by a person", file=str(reviewed)
        )
    return pairs, sha


def load_labelled(
    data: Path | None, run_dir: Path | None, limit: int | None
) -> tuple[list[HumanPair], list[Reject], str, str | None]:
    """Pairs from exactly one of ``data`` (a JSONL file) or ``run_dir`` (a reviewed run).

    Returns:
        the pairs, the rejected input rows, a name for the source, and the run's constitution
        sha256 (None for a file).
    """
    if (data is None) == (run_dir is None):
        raise InputError("give one of data=FILE (human-labelled pairs) or run_dir=RUN (reviewed)")
    if run_dir is not None:
        pairs, sha = pairs_from_reviewed_run(run_dir, limit)
        return pairs, [], str(run_dir), sha
    assert data is not None
    pairs, rejects = load_human_pairs(data, limit=limit)
    return pairs, rejects, str(data), None
