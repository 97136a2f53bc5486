"""The report's plots, drawn by matplotlib and embedded in the page as inline SVG.

Figures are made with :class:`matplotlib.figure.Figure` directly, never through pyplot, so no
GUI backend is touched and no global figure state leaks between reports (the effect of the Agg
backend, without switching the process's backend). Text stays text in the SVG
(``svg.fonttype: none``) in the page's own font stack: no embedded or external fonts, and the
labels can be searched and copied. A fixed hash salt and no date make the SVG the same bytes for
the same data, so two reports of one run compare equal.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import matplotlib
from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_COLOURS = ("#3465a4", "#cc6633", "#4e9a06", "#75507b", "#c4a000", "#555753")


def _plain(label: str) -> str:
    """A label matplotlib prints as written (``$`` would start mathtext)."""
    return label.replace("$", r"\$")


def to_svg(fig: Figure, name: str) -> Markup:
    """The figure as an ``<svg>`` element (XML prolog and DOCTYPE removed) for inline use.

    matplotlib escapes the text it writes, so the markup is safe to embed as it is. Element ids
    (``patch_1``, ``line2d_3``, ...) repeat from one figure to the next, so each is prefixed with
    ``name`` to keep ids unique in a page holding several figures.
    """
    buffer = io.StringIO()
    params = {"svg.fonttype": "none", "svg.hashsalt": f"charter-report-{name}"}
    with matplotlib.rc_context(params):
        fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'id="([^"]+)"', rf'id="{name}-\1"', text)
    text = re.sub(r'(xlink:href="#|url\(#)([^")]+)', rf"\g<1>{name}-\2", text)
    return Markup(text)


def _figure(width: float = 6.0, height: float = 3.4) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.subplots()


def margin_histogram(
    all_margins: Sequence[float],
    kept_margins: Sequence[float],
    *,
    signed: bool = False,
    labels: tuple[str, str] = ("comparisons", "published pairs"),
) -> Markup:
    """How sure the judge was: ``|2p - 1|`` of every comparison, and each pair's margin.

    ``signed`` draws margins from -1 to 1 (a revise run's judge can prefer the initial response).
    """
    fig, ax = _figure()
    low = -1.0 if signed else 0.0
    bins = [low + i * (1 - low) / 20 for i in range(21)]
    if all_margins:
        ax.hist(all_margins, bins=bins, color=_COLOURS[5], alpha=0.45, label=labels[0])
    if kept_margins:
        ax.hist(kept_margins, bins=bins, color=_COLOURS[0], alpha=0.8, label=labels[1])
    ax.set_xlim(low, 1)
    ax.set_xlabel("margin, 2 * p - 1 (0 a coin flip, 1 certain)")
    ax.set_ylabel("count")
    ax.legend(loc="upper right", fontsize="small")
    return to_svg(fig, "margins")


def p_against_length(
    comparisons: Sequence[tuple[int, float]], pairs: Sequence[tuple[int, float]]
) -> Markup:
    """P(first better) against len(first) - len(second) in characters.

    Comparisons are plotted as stored (first = candidate a); pairs with first = chosen. A rising
    cloud means the judge prefers longer responses whatever they say.
    """
    fig, ax = _figure()
    if comparisons:
        xs, ys = zip(*comparisons, strict=True)
        ax.scatter(xs, ys, s=12, color=_COLOURS[5], alpha=0.5, label="comparisons: P(a better)")
    if pairs:
        xs, ys = zip(*pairs, strict=True)
        ax.scatter(xs, ys, s=22, color=_COLOURS[0], label="pairs: p_chosen")
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    ax.axvline(0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_ylim(0, 1)
    ax.set_xlabel("length difference, first minus second (characters)")
    ax.set_ylabel("P(first better)")
    ax.legend(loc="lower right", fontsize="small")
    return to_svg(fig, "length")


def position_bias(rates: Sequence[tuple[str, float]]) -> Markup:
    """First-position rate per principle; 0.5 is no position bias."""
    fig, ax = _figure(6.0, 0.6 + 0.35 * max(len(rates), 1))
    names = [_plain(name) for name, _ in rates]
    ax.barh(names, [rate for _, rate in rates], color=_COLOURS[1])
    ax.axvline(0.5, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("first-position rate (0.5 = unbiased)")
    return to_svg(fig, "position")


def bars(values: Sequence[tuple[str, float]], xlabel: str, name: str) -> Markup:
    """Horizontal bars, one per label (time per stage, pairs per principle)."""
    fig, ax = _figure(6.0, 0.6 + 0.35 * max(len(values), 1))
    ax.barh([_plain(label) for label, _ in values], [v for _, v in values], color=_COLOURS[2])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    return to_svg(fig, name)


def lines(
    series: dict[str, Sequence[float | None]],
    xlabel: str,
    ylabel: str,
    name: str,
    steps: Sequence[int] | None = None,
) -> Markup:
    """One line per series against its step; a None is a gap.

    ``steps`` are the x values shared by every series (default 1, 2, ...), so a long log can be
    thinned without renumbering its steps. Markers only where there are few points to mark.
    """
    fig, ax = _figure()
    for colour, (label, ys) in zip(_COLOURS * 4, series.items(), strict=False):
        xs_all = steps if steps is not None else range(1, len(ys) + 1)
        points = [(x, y) for x, y in zip(xs_all, ys, strict=False) if y is not None]
        if points:
            xs, vs = zip(*points, strict=True)
            marker = {"marker": "o", "markersize": 3} if len(points) <= 60 else {}
            ax.plot(xs, vs, color=colour, label=_plain(label), **marker)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_plain(ylabel))
    if len(series) > 1:
        ax.legend(fontsize="small")
    return to_svg(fig, name)
