"""A run's plan against what it did, and a stop by budget, as the run page shows them.

``charter run`` plans itself first (``plan.json``: chats, cached chats, new units and seconds per
stage) and, at the end, stores how far the plan was off in ``summary.json``'s ``plan_error``. It
compares only the stages that invocation ran (a stage skipped as already complete has no fresh
figures), so this page takes the differences and the seconds ratio from ``plan_error`` as the
run computed them, and shows the planned and actual figures they came from beside them.

A run stopped by a budget (``summary.json``'s ``budget_stop``) exits before ``plan_error`` is
written and before its later stages write their files; both are expected, and the page says how
to resume rather than listing the files as missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.report.kinds import read_json

PLAN = "plan.json"
STAGES = ("generate", "judge")


@dataclass(frozen=True)
class StageAgainstPlan:
    """One stage, planned and actual.

    ``chats_error`` and ``cached_error`` are actual minus planned (0: the plan was exact);
    ``seconds_ratio`` is actual over planned seconds. All three are ``plan_error``'s, None where
    the run did not compare this stage (``note`` says why).
    """

    stage: str
    planned_chats: int | None
    planned_cached: int | None
    planned_new_units: int | None
    planned_seconds: float | None
    seconds_source: str
    actual_chats: int | None
    actual_cached: int | None
    actual_seconds: float | None
    chats_error: int | None
    cached_error: int | None
    seconds_ratio: float | None
    note: str = ""


@dataclass(frozen=True)
class PlanCheck:
    """Everything the "Plan against actual" section shows."""

    stages: list[StageAgainstPlan]
    planned_comparisons: int | None
    actual_comparisons: int | None
    comparisons_error: int | None
    compared: bool
    notes: list[str]
    judge_prompt_tokens: int | None
    judge_tokens_estimated: bool


@dataclass(frozen=True)
class BudgetStop:
    """``summary.json``'s ``budget_stop``; ``finished`` when a later invocation completed the
    run (the section stays in summary.json after a successful resume)."""

    reason: str
    resume: str
    seconds: float | None
    tokens: int | None
    cost: float | None
    finished: bool


def _not_compared(stage: str, actual: dict[str, Any] | None, check: dict[str, Any] | None) -> str:
    if check is None:
        return "no plan_error in summary.json: the run has not finished"
    if actual is None:
        return f"the {stage} stage has not run"
    if not actual.get("cache"):
        return "call cache off: no actual chat counts"
    return "not run by the invocation that made plan.json (already complete)"


def _stage(stage: str, planned: dict[str, Any], summary: dict[str, Any]) -> StageAgainstPlan:
    actual = summary.get(stage)
    check = summary.get("plan_error")
    error = (check or {}).get(stage)
    cache = (actual or {}).get("cache") or {}
    hits, misses = cache.get("hits"), cache.get("misses")
    return StageAgainstPlan(
        stage=stage,
        planned_chats=planned.get("chats"),
        planned_cached=planned.get("cached"),
        planned_new_units=planned.get("new_units"),
        planned_seconds=planned.get("seconds"),
        seconds_source=str(planned.get("seconds_source", "")),
        actual_chats=hits + misses if hits is not None and misses is not None else None,
        actual_cached=hits,
        actual_seconds=(actual or {}).get("seconds"),
        chats_error=(error or {}).get("chats"),
        cached_error=(error or {}).get("cached"),
        seconds_ratio=(error or {}).get("seconds_ratio"),
        note="" if error is not None else _not_compared(stage, actual, check),
    )


def gather_plan(run_dir: Path, summary: dict[str, Any]) -> PlanCheck | None:
    """The run's plan beside its actual figures; None without ``plan.json``."""
    plan = read_json(run_dir / PLAN)
    if not isinstance(plan, dict):
        return None
    stages = plan.get("stages") or {}
    check = summary.get("plan_error")
    judge = stages.get("judge") or {}
    # placeholders stand in for responses the plan could not see yet: their length is a guess
    estimated = bool((stages.get("generate") or {}).get("new_units"))
    return PlanCheck(
        stages=[_stage(s, stages[s], summary) for s in STAGES if s in stages],
        planned_comparisons=plan.get("comparisons"),
        actual_comparisons=(summary.get("judge") or {}).get("comparisons"),
        comparisons_error=(check or {}).get("comparisons"),
        compared=check is not None,
        notes=[str(n) for n in plan.get("notes") or []],
        judge_prompt_tokens=judge.get("prompt_tokens"),
        judge_tokens_estimated=estimated,
    )


def gather_budget_stop(run_dir: Path, summary: dict[str, Any], finished: bool) -> BudgetStop | None:
    """The budget stop recorded in ``summary.json``, None when the run was never stopped."""
    stop = summary.get("budget_stop")
    if not isinstance(stop, dict):
        return None
    return BudgetStop(
        reason=str(stop.get("reason", "a budget was reached")),
        resume=f"charter run run_dir={run_dir}",
        seconds=stop.get("seconds"),
        tokens=stop.get("tokens"),
        cost=stop.get("cost"),
        finished=finished,
    )
