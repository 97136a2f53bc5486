"""The over-optimisation curves of a PPO run: ``curves.jsonl`` and ``curves.png``.

One row per step: the trained reward's batch mean (what PPO climbs), the fresh judge's mean on
the same samples, the KL of the policy to the start policy, the KL coefficient, and whether the
guard warned. Where the reward keeps rising while the fresh judge falls and the KL grows, the
policy is exploiting the reward model; the plot puts the three on one picture.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from charter.jsonl import write_jsonl_atomic

CURVES = "curves.jsonl"
CURVES_PLOT = "curves.png"

_REWARD, _FRESH, _KL, _GUARD = "#3465a4", "#cc6633", "#555753", "#cc0000"


@dataclass(frozen=True)
class CurvePoint:
    """One step of ``curves.jsonl``; every figure is of the samples drawn at that step's start.

    Step 0 samples the start policy, so its KL is 0. ``kl_to_start`` sums, over each response's
    tokens, the KL between the policy's and the start policy's whole next-token distributions,
    and averages over the batch: nats per response, never below 0. ``kl_sampled`` is the
    cheaper estimate PPO's penalty and ``kl_budget`` use (``log pi - log pi_ref`` at the sampled
    tokens; noisier, can dip below 0). ``fresh_reward_mean`` is ``None`` (the key is kept) when
    no fresh judge ran. ``guard_fired`` is whether the guard warned at this step.
    """

    step: int
    reward_mean: float
    fresh_reward_mean: float | None
    kl_to_start: float
    kl_sampled: float
    kl_coef: float
    guard_fired: bool

    @classmethod
    def of(cls, log: Any, guard_fired: bool) -> CurvePoint:
        """The curve's point of one PPO step's log (a ``StepLog``: its ``kl`` is the sampled
        estimate), so the curve is read off the log rather than kept beside it."""
        return cls(
            step=log.step,
            reward_mean=log.reward_mean,
            fresh_reward_mean=log.fresh_reward_mean,
            kl_to_start=log.kl_to_start,
            kl_sampled=log.kl,
            kl_coef=log.kl_coef,
            guard_fired=guard_fired,
        )


def write_curves(out_dir: Path, points: Sequence[CurvePoint]) -> None:
    """Rewrite ``out_dir/curves.jsonl`` all or nothing, so a killed run keeps its steps so far."""
    write_jsonl_atomic(out_dir / CURVES, (asdict(p) for p in points))


def _quarter(n: int) -> int:
    return max(1, n // 4)


def curves_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each curve's first and last figure, and the guard's first warning step (``None``: never).

    A step's batch mean is noisy, so ``*_first`` and ``*_last`` average the first and last
    quarter of the steps (``steps_averaged``, at least one). ``rows`` are ``curves.jsonl``'s.
    """
    if not rows:
        return {}
    n = _quarter(len(rows))

    def mean(key: str, part: Sequence[Mapping[str, Any]]) -> float | None:
        values = [r[key] for r in part if r.get(key) is not None]
        return round(statistics.fmean(values), 4) if values else None

    out: dict[str, Any] = {"steps_averaged": n}
    for key in ("reward_mean", "fresh_reward_mean", "kl_to_start"):
        out[f"{key}_first"] = mean(key, rows[:n])
        out[f"{key}_last"] = mean(key, rows[-n:])
    out["guard_first_step"] = next((r["step"] for r in rows if r.get("guard_fired")), None)
    return out


def _standardised(ys: Sequence[float]) -> list[float]:
    mean = statistics.fmean(ys)
    sd = statistics.pstdev(ys) if len(ys) > 1 else 0.0
    return [(y - mean) / sd if sd > 0 else 0.0 for y in ys]


def _trailing_mean(ys: Sequence[float], window: int) -> list[float]:
    return [statistics.fmean(ys[max(0, i + 1 - window) : i + 1]) for i in range(len(ys))]


def curves_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Reward and fresh judge on the left axis, KL to start on the right, the guard's first
    warning as a vertical line. ``rows`` are ``curves.jsonl``'s.

    The two scores are on different scales, so each is standardised over the run; its batch
    means are faint dots and the line is their trailing mean over a quarter of the steps. The
    legend gives the raw first- and last-quarter means (:func:`curves_summary`).
    """
    fig = Figure(figsize=(6.0, 3.8), dpi=100)
    ax = fig.subplots()
    steps = [int(r["step"]) for r in rows]
    summary, window = curves_summary(rows), _quarter(len(rows))
    for key, name, colour in (
        ("reward_mean", "reward model", _REWARD),
        ("fresh_reward_mean", "fresh judge", _FRESH),
    ):
        points = [(s, r[key]) for s, r in zip(steps, rows, strict=True) if r.get(key) is not None]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        z = _standardised(ys)
        ax.plot(xs, z, color=colour, linestyle="none", marker="o", markersize=3, alpha=0.35)
        label = f"{name} ({summary[key + '_first']:.3g} -> {summary[key + '_last']:.3g})"
        ax.plot(xs, _trailing_mean(z, window), color=colour, label=label)
    ax.set_xlabel("PPO step")
    ax.set_ylabel(f"score, standardised ({window}-step mean)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    kl_ax = ax.twinx()
    kl = [r.get("kl_to_start") for r in rows]
    kl_ax.plot(steps, kl, color=_KL, linestyle="--", label="KL to start (nats/response)")
    kl_ax.set_ylabel("KL to the start policy (nats)")
    kl_ax.set_ylim(bottom=0)
    fired = [s for s, r in zip(steps, rows, strict=True) if r.get("guard_fired")]
    if fired:
        label = f"guard's first warning (step {fired[0]})"
        ax.axvline(fired[0], color=_GUARD, linestyle=":", label=label)
    handles = ax.get_legend_handles_labels()
    more = kl_ax.get_legend_handles_labels()
    ax.legend(
        handles[0] + more[0],
        handles[1] + more[1],
        fontsize="small",
        ncol=2,
        frameon=False,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),  # below the axes, clear of every curve
    )
    return fig


def write_curves_plot(out_dir: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Draw :func:`curves_figure` to ``out_dir/curves.png`` (a temp file renamed into place)."""
    path = out_dir / CURVES_PLOT
    tmp = path.with_name(f".{path.name}.tmp")
    curves_figure(rows).savefig(tmp, format="png", bbox_inches="tight")
    tmp.replace(path)
    return path
