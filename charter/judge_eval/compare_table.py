"""One table comparing judge configurations, from the metrics.json of each eval-judge job, and
one reliability diagram with every judge's curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charter.judge_eval.reliability import ReliabilityBin, plot_reliability

COLUMNS = (
    ("judge", "judge"),
    ("overrides", "config"),
    ("n", "n"),
    ("agreement", "agree"),
    ("agreement_soft", "soft"),
    ("length_controlled_agreement", "len-ctrl agree"),
    ("length_baseline_agreement", "longer baseline"),
    ("swap_consistency", "swap-consistent"),
    ("first_position_rate", "first-pos rate"),
    ("prefers_longer_rate", "prefers longer"),
    ("injection_flip_rate", "injection flips"),
    ("ece", "ECE"),
    ("abstention_rate", "abstained"),
    ("jury_agreement", "jury agree"),
    ("jury_kappa", "jury kappa"),
    ("tokens_per_comparison", "tokens/cmp"),
    ("seconds_per_comparison", "s/cmp"),
)


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """Metrics of every finished job under a Hydra sweep dir, with the overrides that made it."""
    rows = []
    for metrics in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: int(p.parent.name)):
        row = json.loads(metrics.read_text())
        overrides = metrics.parent / ".hydra" / "overrides.yaml"
        if overrides.exists():
            lines = [x[2:] for x in overrides.read_text().splitlines() if x.startswith("- ")]
            row["overrides"] = " ".join(o for o in lines if not o.startswith("data="))
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table, one row per judge configuration."""
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    body = ["| " + " | ".join(_cell(r.get(key)) for key, _ in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def reliability_curves(sweep_dir: Path) -> dict[str, list[ReliabilityBin]]:
    """Each job's reliability bins (its reliability.json), named by its judge and number."""
    curves = {}
    for path in sorted(sweep_dir.glob("*/reliability.json"), key=lambda p: int(p.parent.name)):
        metrics = path.parent / "metrics.json"
        name = json.loads(metrics.read_text())["judge"] if metrics.exists() else "judge"
        bins = [ReliabilityBin(**b) for b in json.loads(path.read_text())]
        curves[f"{path.parent.name}: {name}"] = bins
    return curves


def write_comparison(sweep_dir: Path) -> str:
    """Write comparison.json, comparison.md and reliability.png (every judge's curve) into the
    sweep dir; return the Markdown."""
    rows = collect(sweep_dir)
    text = markdown(rows)
    (sweep_dir / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    (sweep_dir / "comparison.md").write_text(text)
    curves = reliability_curves(sweep_dir)
    if curves:
        plot_reliability(curves, sweep_dir / "reliability.png", title="Reliability by judge")
    return text
