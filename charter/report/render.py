"""Render a run directory into one self-contained HTML page (``charter report``).

The page opens from disk in any browser with no network: CSS and JavaScript are inline, plots
are inline SVG, images are data URIs, and a Content-Security-Policy forbids fetching anything.
Every text that came from a model or a user (prompts, responses, critiques, principle ids) goes
through Jinja2's autoescaping, so a response that says ``</script>`` is shown, never run.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from charter.errors import InputError
from charter.report import plots
from charter.report.diff_facts import WHATS, gather_diff
from charter.report.judge_eval_facts import (
    gather_calibrate,
    gather_eval_judge,
    gather_judge_comparison,
)
from charter.report.kinds import KIND_NAMES, check_comparable, run_kind
from charter.report.label_curve_facts import gather_label_curve
from charter.report.revise_facts import gather_revise
from charter.report.run_facts import RunFacts, gather_run
from charter.report.table_rows import TableRow, select_rows
from charter.report.train_facts import gather_train
from charter.trainers.ppo_curves import curves_figure

log = logging.getLogger(__name__)

REPORT = "report.html"
SCATTER_POINTS = 2000
"""At most this many comparisons in the length scatter plot: an SVG point is ~200 bytes."""
LINE_POINTS = 1000
"""At most this many steps per training curve (every k-th step of a longer run)."""


@dataclass(frozen=True)
class Report:
    """A rendered page: where it goes, its HTML, the kind of run, and what the run lacked."""

    path: Path
    html: str
    kind: str
    missing: list[str]


def _number(value: Any) -> str:
    """A figure as the page prints it: as recorded, floats rounded to 4 places."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(round(value, 4))
    return str(value)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("charter.report", "templates"),
        autoescape=True,  # every template: the data in them is untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    return env


def report_path(run_dir: Path, against: Path | None = None) -> Path:
    """``RUN/report.html``, or ``RUN/report_vs_<OTHER's folder name>.html`` for a diff page."""
    if against is None:
        return run_dir / REPORT
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", against.resolve().name) or "other"
    return run_dir / f"report_vs_{name}.html"


def _thin(points: list[Any], most: int) -> list[Any]:
    """Every k-th point, so at most ``most`` remain (deterministic, spread over the run)."""
    step = -(-len(points) // most) if points else 1
    return points[::step]


def _pipeline_plots(facts: RunFacts) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    rows: list[TableRow] = facts.rows
    if facts.judgments:
        figures["margins"] = plots.margin_histogram(
            [abs(2 * j.p_a - 1) for j in facts.judgments],
            [r.margin for r in rows if r.kept and r.margin is not None],
        )
        # comparisons as judged (first = candidate a), pairs as published (first = chosen)
        by_a = [
            (r.length_difference, r.p_first)
            if r.first.id == r.a_id
            else (-r.length_difference, 1 - (r.p_first or 0.0))
            for r in rows
        ]
        kept = [(r.length_difference, r.p_first) for r in rows if r.kept]
        figures["length"] = plots.p_against_length(
            _thin(by_a, SCATTER_POINTS), _thin(kept, SCATTER_POINTS)
        )
        figures["length_sampled"] = len(by_a) > SCATTER_POINTS or len(kept) > SCATTER_POINTS
        rates = [(p.principle, p.first_position_rate) for p in facts.principles]
        figures["position"] = plots.position_bias([(n, r) for n, r in rates if r is not None])
    times = [(c.stage, c.seconds) for c in facts.costs if c.seconds is not None]
    times = [(s, t) for s, t in times if s != "whole run"]
    if times:
        figures["times"] = plots.bars(times, "seconds", "times")
    return figures


def _pipeline(run_dir: Path, max_pairs: int) -> tuple[str, dict[str, Any], list[str]]:
    facts = gather_run(run_dir)
    selection = select_rows(facts.rows, max_pairs, certainty=lambda r: r.margin)
    return (
        "run.html.jinja2",
        {
            "facts": facts,
            "selection": selection,
            "plots": _pipeline_plots(facts),
            "principle_ids": sorted({r.principle for r in facts.rows}),
            "strategy": (facts.settings.get("pairs") or {}).get("strategy"),
        },
        facts.missing,
    )


def _revise(run_dir: Path, max_pairs: int) -> tuple[str, dict[str, Any], list[str]]:
    facts = gather_revise(run_dir)
    selection = select_rows(facts.rows, max_pairs, certainty=lambda r: r.margin)
    figures: dict[str, Any] = {}
    margins = [r.margin for r in facts.rows if r.margin is not None]
    if margins:
        kept = [r.margin for r in facts.rows if r.kept and r.margin is not None]
        figures["margins"] = plots.margin_histogram(
            margins, kept, signed=True, labels=("judged revisions", "kept revisions")
        )
    times = [(c.stage, c.seconds) for c in facts.costs if c.seconds is not None]
    times = [(s, t) for s, t in times if s != "whole run"]
    if times:
        figures["times"] = plots.bars(times, "seconds", "times")
    context = {
        "facts": facts,
        "selection": selection,
        "plots": figures,
        "principle_ids": sorted({r.principle for r in facts.rows}),
    }
    return "revise.html.jinja2", context, facts.missing


def _judge_eval(run_dir: Path, kind: str) -> tuple[str, dict[str, Any], list[str]]:
    gather = {
        "eval_judge": gather_eval_judge,
        "calibrate": gather_calibrate,
        "judge_comparison": gather_judge_comparison,
    }[kind]
    facts = gather(run_dir)
    return "judge_eval.html.jinja2", {"facts": facts}, facts.missing


def _train(run_dir: Path) -> tuple[str, dict[str, Any], list[str]]:
    facts = gather_train(run_dir)
    figures = {}
    for i, chart in enumerate(facts.charts):
        steps = _thin(list(range(1, max(len(s.values) for s in chart.series) + 1)), LINE_POINTS)
        curves = {
            s.label: [s.values[x - 1] if x <= len(s.values) else None for x in steps]
            for s in chart.series
        }
        figures[chart.key] = plots.lines(curves, chart.xlabel, chart.title, f"train-{i}", steps)
    if facts.curves:
        figures["curves"] = plots.to_svg(curves_figure(facts.curves), "train-curves")
    return "train.html.jinja2", {"facts": facts, "plots": figures}, facts.missing


def _diff(run_dir: Path, against: Path, max_pairs: int) -> tuple[str, dict[str, Any], list[str]]:
    check_comparable(run_dir, against)
    facts = gather_diff(run_dir, against)
    selection = select_rows(
        facts.rows,
        max_pairs,
        certainty=lambda r: r.margin,
        always=lambda r: r.what == "flipped",
        always_name="flip",
    )
    copies = (("A", facts.constitution.before), ("B", facts.constitution.after))
    unknown = [f"{name}: {copy.source}" for name, copy in copies if copy.text is None]
    missing = ["constitution text: " + "; ".join(unknown)] if unknown else []
    context = {
        "facts": facts,
        "selection": selection,
        "principle_ids": sorted({r.principle for r in facts.rows}),
        "whats": WHATS,
    }
    return "diff.html.jinja2", context, missing


def build_report(run_dir: Path, against: Path | None = None, max_pairs: int = 200) -> Report:
    """Render the page for ``run_dir`` (a diff page against ``against``) without writing it.

    Raises:
        InputError: ``run_dir`` does not exist or holds nothing a report shows; ``max_pairs``
            is negative; ``against`` is output of another shape (kind or K).
    """
    run_dir = Path(run_dir)
    if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 0:
        raise InputError(f"max_pairs must be a whole number >= 0, got {max_pairs!r}")
    kind = run_kind(run_dir)
    if against is not None:
        against = Path(against)
        template, context, missing = _diff(run_dir, against, max_pairs)
        title = f"charter diff: {against.name} -> {run_dir.name}"
    else:
        if kind == "pipeline":
            template, context, missing = _pipeline(run_dir, max_pairs)
        elif kind == "revise":
            template, context, missing = _revise(run_dir, max_pairs)
        elif kind == "train":
            template, context, missing = _train(run_dir)
        elif kind == "label_curve":
            facts = gather_label_curve(run_dir)
            template, context, missing = "label_curve.html.jinja2", {"facts": facts}, facts.missing
        else:
            template, context, missing = _judge_eval(run_dir, kind)
        title = f"{KIND_NAMES[kind]}: {run_dir.name}"
    html = (
        _environment()
        .get_template(template)
        .render(
            title=title,
            kind=kind,
            kind_name=KIND_NAMES[kind],
            run_dir=str(run_dir),
            against=str(against) if against is not None else None,
            max_pairs=max_pairs,
            missing=missing,
            **context,
        )
    )
    return Report(report_path(run_dir, against), html, kind, missing)


def write_report(run_dir: Path, against: Path | None = None, max_pairs: int = 200) -> Path:
    """Write ``run_dir/report.html`` (with ``against``, ``run_dir/report_vs_<name>.html``, the
    changes from ``against`` to ``run_dir``) and return its path.

    What an unfinished run lacks is stated on the page and logged as a warning, once per item.

    Raises:
        InputError: as :func:`build_report`.
    """
    from charter.jsonl import write_text_atomic

    report = build_report(run_dir, against, max_pairs)
    write_text_atomic(report.path, report.html)
    for item in report.missing:
        log.warning("report: missing %s", item)
    return report.path
