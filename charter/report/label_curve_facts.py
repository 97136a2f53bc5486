"""The figures of a ``charter train experiment=label_curve`` output directory.

The command writes everything into ``label_curve.json`` (rewritten after each model, so a stopped
run shows the points it has) and draws ``label_curve.png``; the page lays the rows out as one
table row per label count, a column group per label source, and embeds that same PNG, as the
eval-judge page does with its reliability diagram.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.report.judge_eval_facts import png_data_uri
from charter.report.kinds import read_json

RESULT = "label_curve.json"
PLOT = "label_curve.png"


@dataclass(frozen=True)
class LabelCurveFacts:
    """``table`` has one row per count: ``{"count": n, source: row or None, ...}``."""

    sources: list[str]
    counts: list[int]
    dimensions: list[str]
    table: list[dict[str, Any]]
    baseline: dict[str, Any]
    judge: dict[str, Any] | None
    heldout_pairs: int
    usable_pairs: int
    data: list[dict[str, Any]]
    optim: dict[str, Any]
    png: str | None
    missing: list[str]


def gather_label_curve(run_dir: Path) -> LabelCurveFacts:
    """Read a label-curve output directory into :class:`LabelCurveFacts`."""
    result = read_json(run_dir / RESULT) or {}
    settings = result.get("settings") or {}
    rows = result.get("rows") or []
    sources = list(settings.get("labels") or dict.fromkeys(r["source"] for r in rows))
    counts = sorted(settings.get("counts") or {r["count"] for r in rows})
    baseline = result.get("longer_response_baseline") or {}
    dimensions = sorted(baseline.get("by_dimension") or {})
    by_key = {(r["source"], r["count"]): r for r in rows}
    table = [{"count": c, **{s: by_key.get((s, c)) for s in sources}} for c in counts]
    missing = [f"{s} labels x {c}: not trained yet" for c in counts for s in sources
               if (s, c) not in by_key]  # fmt: skip
    png = png_data_uri(run_dir / PLOT)
    if png is None:
        missing.append(f"{PLOT}: drawn when every model is trained")
    return LabelCurveFacts(
        sources=sources,
        counts=counts,
        dimensions=dimensions,
        table=table,
        baseline=baseline,
        judge=result.get("judge"),
        heldout_pairs=int((result.get("heldout") or {}).get("pairs") or 0),
        usable_pairs=int(result.get("usable_pairs") or 0),
        data=list(result.get("data") or []),
        optim=dict((settings.get("reward") or {}).get("optim") or {}),
        png=png,
        missing=missing,
    )
