"""The figures of ``charter eval-judge`` and ``charter calibrate`` output directories.

Both commands already write their numbers (``metrics.json``) and a reliability diagram
(``reliability.png``, drawn by matplotlib in :mod:`charter.judge_eval.reliability`); the page
shows the numbers as tables and embeds that same PNG as a data URI rather than drawing it again,
so the report and the file beside it are the one picture. eval-judge's ``verdicts.jsonl`` adds an
agreement table per principle (every verdict has the human choice as candidate a).
"""

from __future__ import annotations

import base64
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.judge_eval.compare_table import COLUMNS
from charter.report.kinds import read_json
from charter.report.run_facts import read_rows


@dataclass(frozen=True)
class Metric:
    """One row of an agreement table: ``low``/``high`` bound a 95% interval when known."""

    key: str
    label: str
    value: Any
    low: float | None = None
    high: float | None = None
    after: Any = None
    after_low: float | None = None
    after_high: float | None = None


@dataclass(frozen=True)
class PrincipleAgreement:
    """How often the judge agreed with the human label under one principle."""

    principle: str
    n: int
    agreement: float
    swap_consistency: float
    first_position_rate: float


@dataclass(frozen=True)
class JudgeEvalFacts:
    judge: str
    metrics: list[Metric]
    reliability_bins: list[dict[str, Any]]
    reliability_png: str | None
    principles: list[PrincipleAgreement]
    comparison_columns: list[tuple[str, str]]
    comparison_rows: list[dict[str, Any]]
    extra: dict[str, Any]
    missing: list[str]


_EVAL_LABELS = {key: title for key, title in COLUMNS}
_CALIBRATION_METRICS = (
    ("agreement", "agreement"),
    ("length_controlled_agreement", "length-controlled agreement"),
    ("log_loss", "log-loss"),
    ("brier", "Brier score"),
    ("ece", "ECE"),
)


def png_data_uri(path: Path) -> str | None:
    """``data:image/png;base64,...`` of a PNG file, None when it is absent."""
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _per_principle(verdicts: list[dict[str, Any]]) -> list[PrincipleAgreement]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in verdicts:
        grouped[v["principle_id"]].append(v)
    out = []
    for pid, vs in sorted(grouped.items()):
        n = len(vs)
        wins = sum(1.0 if v["p_a"] > 0.5 else 0.5 if v["p_a"] == 0.5 else 0.0 for v in vs)
        first = sum((v["p_first_order"] > 0.5) + (v["p_swapped"] < 0.5) for v in vs)
        out.append(
            PrincipleAgreement(
                principle=pid,
                n=n,
                agreement=round(wins / n, 4),
                swap_consistency=round(sum(bool(v["swap_consistent"]) for v in vs) / n, 4),
                first_position_rate=round(first / (2 * n), 4),
            )
        )
    return out


def gather_eval_judge(run_dir: Path) -> JudgeEvalFacts:
    """An eval-judge directory: metrics.json, reliability.json/.png, verdicts.jsonl."""
    metrics = read_json(run_dir / "metrics.json") or {}
    rows = [
        Metric(key, _EVAL_LABELS.get(key, key), value)
        for key, value in metrics.items()
        if key != "judge" and not isinstance(value, dict | list)
    ]
    missing = []
    bins = read_json(run_dir / "reliability.json")
    if bins is None:
        missing.append("reliability.json: no reliability bins were written")
    png = png_data_uri(run_dir / "reliability.png")
    if png is None:
        missing.append("reliability.png: no reliability diagram was written")
    verdicts = read_rows(run_dir, "verdicts.jsonl")
    if verdicts is None:
        missing.append("verdicts.jsonl: no per-pair verdicts, so no per-principle agreement")
    extra = {k: v for k, v in metrics.items() if isinstance(v, dict | list)}
    return JudgeEvalFacts(
        judge=str(metrics.get("judge", "")),
        metrics=rows,
        reliability_bins=bins or [],
        reliability_png=png,
        principles=_per_principle(verdicts or []),
        comparison_columns=[],
        comparison_rows=[],
        extra=extra,
        missing=missing,
    )


def gather_calibrate(run_dir: Path) -> JudgeEvalFacts:
    """A calibrate directory: cross-validated metrics before and after, and the diagram."""
    metrics = read_json(run_dir / "metrics.json") or {}
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    rows = []
    for key, label in _CALIBRATION_METRICS:
        b, a = before.get(key) or {}, after.get(key) or {}
        rows.append(
            Metric(
                key,
                label,
                b.get("value"),
                b.get("low"),
                b.get("high"),
                a.get("value"),
                a.get("low"),
                a.get("high"),
            )
        )
    missing = [] if metrics else ["metrics.json: the calibration did not finish"]
    png = png_data_uri(run_dir / "reliability.png")
    if png is None:
        missing.append("reliability.png: no reliability diagram was written")
    extra = {
        key: metrics.get(key)
        for key in ("data", "n", "folds", "features", "coefficients", "per_principle")
        if key in metrics
    }
    return JudgeEvalFacts(
        judge=str(metrics.get("judge", "")),
        metrics=rows,
        reliability_bins=[],
        reliability_png=png,
        principles=_per_principle(read_rows(run_dir, "verdicts.jsonl") or []),
        comparison_columns=[],
        comparison_rows=[],
        extra=extra,
        missing=missing,
    )


def gather_judge_comparison(run_dir: Path) -> JudgeEvalFacts:
    """An eval-judge sweep directory: comparison.json (one row per judge) and the diagram."""
    rows = read_json(run_dir / "comparison.json") or []
    png = png_data_uri(run_dir / "reliability.png")
    return JudgeEvalFacts(
        judge=f"{len(rows)} judge configurations",
        metrics=[],
        reliability_bins=[],
        reliability_png=png,
        principles=[],
        comparison_columns=list(COLUMNS),
        comparison_rows=rows,
        extra={},
        missing=[] if png else ["reliability.png: no reliability diagram was written"],
    )
