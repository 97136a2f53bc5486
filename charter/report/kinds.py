"""What kind of output directory a report is asked about, read from the files it holds.

Each charter command leaves a recognisable set of files: ``charter run`` the stage files and
``summary.json``; a revise run ``revisions.jsonl``; ``eval-judge`` a ``metrics.json`` with an
agreement; ``calibrate`` a ``calibration.json``; a judge comparison sweep ``comparison.json``;
``train`` a ``metrics.json`` naming its trainer, a per-step log (TRL's ``log_history.jsonl``,
PPO's ``ppo_log.jsonl``) or the loop's ``loop_metrics.json``; ``train experiment=label_curve``
a ``label_curve.json``. The files, not the directory name,
decide, so a renamed or moved directory still gets the right page.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from charter import run_files, run_state
from charter.errors import InputError
from charter.jsonl import read_jsonl

RunKind = Literal[
    "pipeline", "revise", "eval_judge", "calibrate", "judge_comparison", "train", "label_curve"
]

KIND_NAMES: dict[str, str] = {
    "pipeline": "charter run",
    "revise": "charter run (critique -> revision)",
    "eval_judge": "charter eval-judge",
    "calibrate": "charter calibrate",
    "judge_comparison": "charter eval-judge (judge comparison)",
    "train": "charter train",
    "label_curve": "charter train (label curve)",
}

PIPELINE_FILES = (run_files.CANDIDATES, run_files.JUDGMENTS, run_files.PAIRS)


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is absent."""
    return json.loads(path.read_text()) if path.is_file() else None


def run_kind(run_dir: Path) -> RunKind:
    """The kind of ``run_dir``.

    Raises:
        InputError: the directory does not exist, or holds none of the files a report shows.
    """
    if not run_dir.is_dir():
        raise InputError("no such run directory", file=str(run_dir))
    summary = run_state.read_summary(run_dir)
    if "revise" in summary or (run_dir / "revisions.jsonl").is_file():
        return "revise"
    if (run_dir / "calibration.json").is_file():
        return "calibrate"
    if (run_dir / "comparison.json").is_file():
        return "judge_comparison"
    if (run_dir / "label_curve.json").is_file():
        return "label_curve"
    train_logs = ("loop_metrics.json", "ppo_log.jsonl", "log_history.jsonl")
    if any((run_dir / name).is_file() for name in train_logs):
        return "train"
    metrics = read_json(run_dir / "metrics.json")
    if isinstance(metrics, dict) and "trainer" in metrics:
        return "train"
    if isinstance(metrics, dict) and "agreement" in metrics:
        return "eval_judge"
    # a run stopped by its budget during generate has only its plan and its stop on record
    stages = {"generate", "judge", "pairs", "budget_stop"} & set(summary)
    if stages or any((run_dir / name).is_file() for name in (*PIPELINE_FILES, "plan.json")):
        return "pipeline"
    raise InputError(
        "nothing a report can show: no summary.json, candidates.jsonl, judgments.jsonl, "
        "pairs.jsonl, revisions.jsonl or metrics.json; is this a charter output directory?",
        file=str(run_dir),
    )


def samples_per_prompt(run_dir: Path) -> int | None:
    """K, the most common number of candidates per prompt (None without candidates.jsonl)."""
    path = run_dir / run_files.CANDIDATES
    if not path.is_file():
        return None
    counts = Counter(len(row.get("candidates", [])) for _, row in read_jsonl(path))
    return counts.most_common(1)[0][0] if counts else None


def shape(run_dir: Path) -> str:
    """The experiment shape two runs must share to be diffed: the kind and K."""
    kind = run_kind(run_dir)
    k = samples_per_prompt(run_dir) if kind == "pipeline" else None
    return f"{KIND_NAMES[kind]}, K={k}" if k is not None else KIND_NAMES[kind]


def check_comparable(run_dir: Path, against: Path) -> None:
    """Refuse a diff page between outputs of different shapes, in one line.

    Raises:
        InputError: either is not a pipeline or revise run, or the two differ in kind or K.
    """
    mine, theirs = run_kind(run_dir), run_kind(against)
    if mine not in ("pipeline", "revise") or theirs not in ("pipeline", "revise"):
        raise InputError(
            f"a diff page compares two runs with pairs; {against} is {KIND_NAMES[theirs]} output "
            f"and {run_dir} is {KIND_NAMES[mine]} output",
            file=str(run_dir),
        )
    if shape(run_dir) != shape(against):
        raise InputError(
            f"cannot diff runs of different shapes: {against} is {shape(against)}, "
            f"{run_dir} is {shape(run_dir)}",
            file=str(run_dir),
        )
