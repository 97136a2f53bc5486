"""The figures of a ``charter train`` output directory: loss, reward, KL and guard warnings.

What exists depends on the trainer. Every trainer writes ``metrics.json`` with its loss per
step (``losses``). The TRL-based trainers (reward, DPO, SFT, GRPO/RLOO, and online DPO, all its
rounds in order) also write ``log_history.jsonl``: TRL's own per-step log, with whatever the
method measures (rewards of chosen and rejected, their margin, KL, completion lengths, the
learning rate). Charter's PPO writes ``ppo_log.jsonl``, one row per step with reward, KL, losses
and the over-optimisation guard's figures, and ``curves.jsonl``, the reward, the fresh judge and
the KL to the start policy per step, which the page draws on one plot; the closed loop writes
``loop_metrics.json``, with each trainer's log in its own folder (``reward/``, ``dpo/``,
``ppo/``). An output directory written before the TRL log was kept has only the loss, and the
page says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.report.kinds import read_json
from charter.report.run_facts import read_rows
from charter.trainers.ppo_curves import CURVES

LOG_HISTORY = "log_history.jsonl"

_PPO_SERIES = (
    ("reward_mean", "reward (mean)"),
    ("fresh_reward_mean", "fresh judge reward (mean)"),
    ("kl", "KL to reference"),
    ("kl_to_start", "KL to reference, whole next-token distributions"),
    ("approx_kl", "approx. KL per update"),
    ("policy_loss", "policy loss"),
    ("value_loss", "value loss"),
    ("entropy", "entropy"),
    ("clip_frac", "clip fraction"),
    ("rank_corr", "rank correlation, reward vs fresh judge"),
)

_NO_LOG_NOTE = (
    "per-step reward, reward margin and KL: this directory has no log_history.jsonl (TRL's "
    "per-step log, which charter train writes beside metrics.json); it was written by a charter "
    "that kept only the loss"
)

_BOOKKEEPING = frozenset({"step", "epoch", "round"})
"""Columns of TRL's log that place a row rather than measure the model."""

_GROUP_OF = {
    "reward_std": "reward",
    "rewards": "reward",  # DPO's chosen/rejected/margins, GRPO's per-function mean and std
    "min_reward": "reward",  # the reward model's, over the batch's responses
    "mean_reward": "reward",
    "max_reward": "reward",
    "margin": "reward",
    "rewards/accuracies": "accuracy",
    "accuracy": "accuracy",
    "mean_token_accuracy": "accuracy",
    "completions/clipped_ratio": "clipped completions",
}
"""Keys whose name prefix alone would put them on the wrong axis: rewards share one plot
(chosen, rejected and their margin move together as the policy shifts), shares of 0 to 1 go
on their own."""

_FIRST = ("loss", "reward", "kl", "accuracy", "logps", "logits", "completions", "entropy")
_LAST = ("grad_norm", "learning_rate", "num_tokens", "step_time")
"""Plot order: what the method optimises and how the policy moves, then the rest in the order
TRL logged it, then the optimiser's bookkeeping."""
_TITLES = {
    "loss": "loss",
    "reward": "reward",
    "kl": "KL to reference",
    "accuracy": "accuracy (share of pairs or tokens)",
    "logps": "log-probability of the response",
    "logits": "mean logit",
    "completions": "completion length (tokens)",
    "clip_ratio": "clipped share of the policy ratio",
    "clipped completions": "share of completions cut at max length",
    "grad_norm": "gradient norm",
    "learning_rate": "learning rate",
    "num_tokens": "tokens seen",
    "step_time": "wall-clock seconds",
    "frac_reward_zero_std": "share of prompts whose samples all got one reward",
}


@dataclass(frozen=True)
class Series:
    """A per-step curve; ``None`` marks a step without a value."""

    key: str
    label: str
    values: list[float | None]


@dataclass(frozen=True)
class Chart:
    """The curves that share one plot: ``key`` is its id on the page."""

    key: str
    title: str
    series: list[Series]
    xlabel: str = "step"


@dataclass(frozen=True)
class TrainFacts:
    trainer: str
    scalars: list[tuple[str, Any]]
    charts: list[Chart]
    warnings: list[str]
    tables: list[tuple[str, list[dict[str, Any]]]]
    missing: list[str]
    not_recorded: list[str]
    sources: list[str]
    """The files the per-step plots were read from."""
    curves: list[dict[str, Any]] | None = None
    """PPO's ``curves.jsonl`` rows (reward, fresh judge, KL to start, guard), if written."""
    verdicts: list[dict[str, Any]] | None = None
    """A loop's trained-vs-base matches, one row per referee (see :func:`_verdicts`)."""


def _scalars(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            out += _scalars(value, f"{prefix}{key}.")
        elif _is_interval(value):
            out.append((f"{prefix}{key}", _interval(value)))
        elif not isinstance(value, list):
            out.append((f"{prefix}{key}", value))
    return out


def _is_interval(value: Any) -> bool:
    return (
        isinstance(value, list) and len(value) == 2 and all(_number(v) is not None for v in value)
    )


def _interval(value: list[float]) -> str:
    return f"[{value[0]:.3f}, {value[1]:.3f}]"


def _verdicts(loop: dict[str, Any]) -> list[dict[str, Any]]:
    """The loop's answer, one row per referee of trained vs base: the labelling judge's match
    (DPO, and PPO when it ran) and the independent evaluator's, each with its interval and, for
    the evaluator, its own agreement with people, so the page says at a glance whether the two
    referees agree and how far each can be trusted."""
    rows: list[dict[str, Any]] = []
    for policy, match in (
        ("DPO", loop.get("dpo_vs_base")),
        ("PPO", (loop.get("ppo") or {}).get("ppo_vs_base")),
    ):
        if isinstance(match, dict) and _is_interval(match.get("ci95")):
            rows.append(
                _verdict(
                    policy,
                    "the labelling judge, both orders",
                    match.get("prompts"),
                    match.get("win_rate"),
                    match["ci95"],
                    match.get("mean_p_trained"),
                )
            )
    independent = loop.get("independent")
    verdict = independent.get("dpo_vs_base") if isinstance(independent, dict) else None
    if (
        isinstance(independent, dict)
        and isinstance(verdict, dict)
        and _is_interval(verdict.get("ci95"))
    ):
        people = independent.get("agreement_with_people") or {}
        agreement = None
        if _is_interval(people.get("ci95")):
            agreement = (
                f"{people.get('rate')} {_interval(people['ci95'])} on {people.get('n')} "
                "held-out human pairs (longer response: "
                f"{independent.get('longer_response_baseline')})"
            )
        referee = str(independent.get("evaluator", "independent evaluator"))
        rows.append(
            _verdict(
                "DPO",
                referee,
                verdict.get("n"),
                verdict.get("rate"),
                verdict["ci95"],
                verdict.get("mean_p"),
                agreement,
            )
        )
    return rows


def _verdict(
    policy: str,
    referee: str,
    n: Any,
    rate: Any,
    ci95: list[float],
    mean_p: Any,
    agreement: str | None = None,
) -> dict[str, Any]:
    """One row of :func:`_verdicts`; its keys are the page's column headings."""
    return {
        "policy": policy,
        "referee": referee,
        "prompts": n,
        "win rate": rate,
        "95% interval": _interval(ci95),
        "mean P(trained better)": mean_p,
        "referee's agreement with people": agreement,
    }


def _one_each(series: list[Series]) -> list[Chart]:
    return [Chart(s.key, s.label, [s]) for s in series]


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


def _group(key: str) -> str:
    if key in _GROUP_OF:
        return _GROUP_OF[key]
    prefix = key.split("/", 1)[0]
    return _GROUP_OF.get(prefix, prefix)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _place(group: str) -> int:
    if group in _FIRST:
        return _FIRST.index(group)
    return len(_FIRST) + 1 + _LAST.index(group) if group in _LAST else len(_FIRST)


def log_charts(log: list[dict[str, Any]], prefix: str = "") -> list[Chart]:
    """Every measured column of a TRL log, grouped into plots (see ``_FIRST``, ``_GROUP_OF``).

    ``prefix`` names the trainer on a loop's page, which shows more than one log.
    """
    groups: dict[str, list[str]] = {}
    for row in log:
        for key, value in row.items():
            if key not in _BOOKKEEPING and _number(value) is not None:
                keys = groups.setdefault(_group(key), [])
                if key not in keys:
                    keys.append(key)
    order = sorted(groups, key=_place)
    xlabel = "step (rounds one after another)" if any("round" in r for r in log) else "step"
    charts = []
    for group in order:
        series = [Series(k, k, [_number(row.get(k)) for row in log]) for k in groups[group]]
        title = _TITLES.get(group, group)
        key = re.sub(r"[^A-Za-z0-9_-]+", "_", f"log-{prefix}-{group}" if prefix else f"log-{group}")
        charts.append(Chart(key, f"{prefix}: {title}" if prefix else title, series, xlabel))
    return charts


def _missing(metrics: dict[str, Any], loop: Any) -> list[str]:
    """What an unfinished training run has not written yet."""
    if not metrics and not loop:
        return ["metrics.json: training has not finished (only the per-step log exists)"]
    if not loop and not metrics.get("losses"):
        return ["losses: metrics.json has no per-step loss"]
    return []


def gather_train(run_dir: Path) -> TrainFacts:
    """Read a train (or loop) output directory into :class:`TrainFacts`."""
    metrics = read_json(run_dir / "metrics.json") or {}
    loop = read_json(run_dir / "loop_metrics.json")
    ppo_log = read_rows(run_dir, "ppo_log.jsonl") or read_rows(run_dir / "ppo", "ppo_log.jsonl")
    trl_log = read_rows(run_dir, LOG_HISTORY)
    curves = read_rows(run_dir, CURVES) or read_rows(run_dir / "ppo", CURVES)
    trainer = str(metrics.get("trainer") or ("closed loop" if loop else "PPO"))
    # the logs hold every per-step figure; metrics.json's copies of some of them would repeat it
    charts: list[Chart] = []
    not_recorded: list[str] = []
    sources: list[str] = []
    ppo_file = "ppo_log.jsonl" if (run_dir / "ppo_log.jsonl").is_file() else "ppo/ppo_log.jsonl"
    if loop:
        for folder, name in (("reward", "reward model"), ("dpo", "DPO")):
            log = read_rows(run_dir / folder, LOG_HISTORY)
            if log is None:
                not_recorded.append(f"{name} ({folder}/): {_NO_LOG_NOTE}")
                continue
            charts += log_charts(log, name)
            sources.append(f"{folder}/{LOG_HISTORY}")
        if ppo_log:
            charts += _one_each(_ppo_series(ppo_log))
            sources.append(ppo_file)
    elif ppo_log:
        charts, sources = _one_each(_ppo_series(ppo_log)), [ppo_file]
    elif trl_log is not None:
        charts, sources = log_charts(trl_log), [f"{LOG_HISTORY} (TRL's log, one row per step)"]
    else:
        charts, sources = _one_each(_metrics_series(metrics)), ["metrics.json"]
        not_recorded.append(_NO_LOG_NOTE)
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
        charts=charts,
        warnings=warnings,
        tables=tables,
        missing=_missing(metrics, loop),
        not_recorded=not_recorded,
        sources=sources,
        curves=curves,
        verdicts=_verdicts(loop) if loop else None,
    )
