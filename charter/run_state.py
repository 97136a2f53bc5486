"""Which stages of a run directory are complete, so a resumed run skips exactly those.

``summary.json`` holds each stage's figures and, under ``"stages"``, a fingerprint per completed
stage: a sha256 of the stage's resolved config and of the bytes of its input files. A stage
clears its mark before it writes anything and sets it, in the same atomic write as its figures,
after all of its outputs are in place. So a run killed at any point resumes by redoing only the
stages without a matching mark; within a stage, finished engine calls come back from the call
cache, so the redo costs at most the one call that was in flight.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from charter.jsonl import write_text_atomic

SUMMARY = "summary.json"
STAGES_KEY = "stages"
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "generate": ("candidates.jsonl", "rejects.jsonl"),
    "judge": ("judgments.jsonl", "rankings.jsonl", "rejects.jsonl"),
    "pairs": ("pairs.jsonl", "pairs.parquet", "dataset", "README.md", "rejects.jsonl"),
}


def file_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes, or None if it does not exist."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage_fingerprint(settings: Any, inputs: Iterable[Path]) -> str:
    """sha256 of a stage's settings (JSON-ready) and its input files' contents."""
    material = {
        "settings": settings,
        "inputs": {str(p.name): file_sha256(p) for p in inputs},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SUMMARY
    return json.loads(path.read_text()) if path.exists() else {}


def _write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_text_atomic(run_dir / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")


def update_summary(
    run_dir: Path, section: str, values: dict[str, Any], *, done: str | None = None
) -> dict[str, Any]:
    """Replace one section of summary.json; with ``done``, also mark stage ``section`` complete."""
    summary = read_summary(run_dir)
    summary[section] = values
    if done is not None:
        summary.setdefault(STAGES_KEY, {})[section] = done
    _write_summary(run_dir, summary)
    return summary


def clear_done(run_dir: Path, stage: str) -> None:
    """Unmark a stage before it rewrites its outputs (a kill mid-stage must not look complete)."""
    summary = read_summary(run_dir)
    if summary.get(STAGES_KEY, {}).pop(stage, None) is not None:
        _write_summary(run_dir, summary)


def is_done(run_dir: Path, stage: str, fingerprint: str) -> bool:
    """Whether ``stage`` completed here with these settings and inputs, outputs still present."""
    if read_summary(run_dir).get(STAGES_KEY, {}).get(stage) != fingerprint:
        return False
    return all((run_dir / name).exists() for name in STAGE_OUTPUTS[stage])


def remove_leftovers(run_dir: Path) -> int:
    """Delete temp files and folders that atomic writes left behind when a run was killed."""
    if not run_dir.is_dir():
        return 0
    stale = [
        p
        for p in run_dir.iterdir()
        if (p.name.startswith(".") and p.name.endswith((".tmp", ".old")))
        or p.name == "pairs.parquet.tmp"
    ]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return len(stale)
