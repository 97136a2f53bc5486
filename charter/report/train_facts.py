"""The figures of a ``charter train`` output directory: loss, reward, KL and guard warnings.

What exists depends on the trainer. Every trainer writes ``metrics.json`` with its loss per
step (``losses``); charter's PPO also writes ``ppo_log.jsonl``, one row per step with reward, KL,
losses and the over-optimisation guard's figures; GRPO/RLOO keep a mean reward per step; online
DPO a row per round; the closed loop writes ``loop_metrics.json`` (and PPO's log under ``ppo/``).
The TRL-based trainers (reward, DPO, SFT, online DPO) keep only the loss: TRL's per-step log
(rewards, margins, KL) is discarded after training, and the page lists that as missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.report.kinds import read_json
from charter.report.run_facts import read_rows

_PPO_SERIES = (
    ("reward_mean", "reward (mean)"),
    ("fresh_reward_mean", "fresh judge reward (mean)"),
    ("kl", "KL to reference"),
    ("approx_kl", "approx. KL per update"),
    ("policy_loss", "policy loss"),
    ("value_loss", "value loss"),
    ("entropy", "entropy"),
    ("clip_frac", "clip fraction"),
    ("rank_corr", "rank correlation, reward vs fresh judge"),
)

_TRL_LOG_NOTE = (
    "per-step reward, reward margin and KL: TRL logs them in trainer.state.log_history, but "
    "charter keeps only the loss (charter/trainers/common.py losses_of); writing log_history "
    "to the output directory would let this page plot them"
)


@dataclass(frozen=True)
class Series:
    """A per-step curve; ``None`` marks a step without a value."""

    key: str
    label: str
    values: list[float | None]


@dataclass(frozen=True)
class TrainFacts:
    trainer: str
    scalars: list[tuple[str, Any]]
    series: list[Series]
    warnings: list[str]
    tables: list[tuple[str, list[dict[str, Any]]]]
    missing: list[str]
    not_recorded: list[str]


def _scalars(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            out += _scalars(value, f"{prefix}{key}.")
        elif not isinstance(value, list):
            out.append((f"{prefix}{key}", value))
    return out


def _ppo_series(log: list[dict[str, Any]]) -> list[Series]:
    return [
        Series(key, label, [row.get(key) for row in log])
        for key, label in _PPO_SERIES
        if any(row.get(key) is not None for row in log)
    ]


def _metrics_series(metrics: dict[str, Any]) -> list[Series]:
    found = [
        ("losses", "loss"),
        ("reward_mean_per_step", "reward (mean)"),
        ("mean_reward_per_step", "reward (mean)"),
        ("kl_per_step", "KL to reference"),
        ("fresh_reward_per_step", "fresh judge reward (mean)"),
    ]
    return [
        Series(key, label, list(metrics[key]))
        for key, label in found
        if isinstance(metrics.get(key), list) and metrics[key]
    ]


def _missing(metrics: dict[str, Any], loop: Any) -> list[str]:
    """What an unfinished training run has not written yet."""
    if not metrics and not loop:
        return ["metrics.json: training has not finished (only the PPO log exists)"]
    if not loop and not metrics.get("losses"):
        return ["losses: metrics.json has no per-step loss"]
    return []


def _not_recorded(series: list[Series], ppo: bool) -> list[str]:
    """Per-step figures this trainer never writes (a limitation, not an unfinished run)."""
    keys = {s.key for s in series}
    if ppo:
        return []  # the PPO log holds every per-step figure
    if not keys & {"reward_mean_per_step", "mean_reward_per_step"}:
        return [_TRL_LOG_NOTE]
    if "kl_per_step" not in keys:
        return ["per-step KL: the GRPO/RLOO trainer does not write it; " + _TRL_LOG_NOTE]
    return []


def gather_train(run_dir: Path) -> TrainFacts:
    """Read a train (or loop) output directory into :class:`TrainFacts`."""
    metrics = read_json(run_dir / "metrics.json") or {}
    loop = read_json(run_dir / "loop_metrics.json")
    ppo_log = read_rows(run_dir, "ppo_log.jsonl") or read_rows(run_dir / "ppo", "ppo_log.jsonl")
    trainer = str(metrics.get("trainer") or ("closed loop" if loop else "PPO"))
    # PPO's log has every per-step figure; metrics.json's copies of some of them would repeat it
    series = _ppo_series(ppo_log) if ppo_log else _metrics_series(metrics)
    warnings = [str(w) for w in metrics.get("warnings") or []]
    if loop:
        warnings += [str(w) for w in (loop.get("ppo") or {}).get("warnings") or []]
    tables: list[tuple[str, list[dict[str, Any]]]] = []
    if isinstance(metrics.get("rounds"), list):
        tables.append(("online DPO rounds", metrics["rounds"]))
    scalars = _scalars({k: v for k, v in metrics.items() if k != "warnings"})
    if loop:
        scalars += _scalars(loop)
    return TrainFacts(
        trainer=trainer,
        scalars=scalars,
        series=series,
        warnings=warnings,
        tables=tables,
        missing=_missing(metrics, loop),
        not_recorded=_not_recorded(series, bool(ppo_log)),
    )
