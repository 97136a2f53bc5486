"""``charter run``: the generate, judge and pairs stages in turn, in one run directory.

A stage whose completion mark matches its current config and inputs is skipped, so a killed run
started again resumes; each stage lives in a module of its own (``generate_stage``,
``judge_stage``, ``pairs_stage``), which also serve the single-stage commands.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from charter import run_state
from charter.budget import BudgetReached, Ledger
from charter.commands.generate_stage import run_generate
from charter.commands.judge_stage import run_judge
from charter.commands.pairs_stage import run_pairs
from charter.commands.shared import run_budget, run_constitution, run_engines, write_run_report
from charter.commands.stage_settings import stage_fingerprint
from charter.jsonl import write_text_atomic
from charter.progress import console, summary_table

STAGE_TASKS = (("generate", run_generate), ("judge", run_judge), ("pairs", run_pairs))


def _cache_cell(section: dict[str, Any], ran: bool) -> str:
    if not ran:
        return "skipped (already complete)"
    counts = section.get("cache")
    return f"{counts['hits']} / {counts['misses']}" if counts else "cache off"


def run_all(cfg: DictConfig, run_dir: Path) -> None:
    """``charter run``: every stage, one model load shared where configs match.

    In a run directory that already has outputs (a killed run started again with the same
    command, or ``charter run run_dir=DIR``), stages whose mark matches their current config and
    inputs are skipped; the rest are redone, their finished engine calls served by the cache.

    The CLI then writes ``report.html`` (:func:`charter.commands.shared.write_run_report`).
    With ``plan.before_run`` the run plans itself first (``plan.json``) and records how far the
    plan was off (``summary.json``'s ``plan_error``). With a ``budget``, it stops before the
    engine call that could pass it (exit status 3); the calls finished so far are cached.
    """
    budget = run_budget(cfg)
    ledger = Ledger(budget) if budget.any else None
    engines = run_engines(cfg, ledger)
    start = time.perf_counter()
    run_constitution(cfg)  # a typo in the constitution should stop the run before any sampling
    console.print(f"[bold]charter run[/] {cfg.experiment_name} -> {run_dir}", soft_wrap=True)
    run_state.remove_leftovers(run_dir)
    if cfg.get("revise") is not None:
        from charter.commands.revise import run_revise_path

        try:
            run_revise_path(cfg, run_dir, engines)
        except BudgetReached as exc:
            assert ledger is not None
            stop_for_budget(cfg, run_dir, str(exc), ledger, time.perf_counter() - start)
        return
    plan = plan_run(cfg, run_dir)
    ran: dict[str, bool] = {}
    try:
        for stage, task in STAGE_TASKS:
            ran[stage] = not run_state.is_done(
                run_dir, stage, stage_fingerprint(cfg, stage, run_dir)
            )
            if ran[stage]:
                task(cfg, run_dir, engines)
            else:
                console.print(f"{stage}: already complete in this run directory, skipped")
    except BudgetReached as exc:
        assert ledger is not None
        stop_for_budget(cfg, run_dir, str(exc), ledger, time.perf_counter() - start)
    seconds = round(time.perf_counter() - start, 2)
    summary = run_state.update_summary(run_dir, "run", {"seconds": seconds})
    if plan is not None:
        from charter.planning import plan_error

        fresh = {k: v for k, v in summary.items() if ran.get(k)}
        summary = run_state.update_summary(run_dir, "plan_error", plan_error(plan, fresh))
    gen, jud, par = summary["generate"], summary["judge"], summary["pairs"]
    summary_table(
        f"charter run: {cfg.experiment_name}",
        {
            "prompts (read / rejected)": f"{gen['prompts_read']} / {gen['prompts_rejected']}",
            "candidates": gen["candidates"],
            "generate seconds (tok/s)": f"{gen['seconds']} ({gen['tokens_per_second']})",
            "generate cache hits / misses": _cache_cell(gen, ran["generate"]),
            "comparisons (x2 orders)": jud["comparisons"],
            "judge seconds": jud["seconds"],
            "judge cache hits / misses": _cache_cell(jud, ran["judge"]),
            "swap consistency": jud["swap_consistency"],
            "first-position rate": jud["first_position_rate"],
            "pairs published": par["pairs"],
            "dropped": ", ".join(f"{k}: {v}" for k, v in par["dropped"].items()) or "none",
            "total seconds": summary["run"]["seconds"],
            "output": str(run_dir),
        },
    )


def plan_run(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The run's own plan, written to ``plan.json`` (``plan.before_run``; no probe: the run is
    about to time itself)."""
    if not cfg.plan.before_run:
        return None
    import json

    from charter.planning import make_plan

    plan = make_plan(cfg, probe=False).to_json()
    write_text_atomic(run_dir / "plan.json", json.dumps(plan, indent=2) + "\n")
    return plan


def stop_for_budget(
    cfg: DictConfig, run_dir: Path, reason: str, ledger: Ledger, seconds: float
) -> None:
    """Record the stop in ``summary.json``, write the report of what exists, say so in one
    line, and exit 3."""
    run_state.update_summary(
        run_dir,
        "budget_stop",
        {
            "reason": reason,
            "seconds": round(seconds, 2),
            "model_seconds": round(ledger.seconds, 2),
            "tokens": ledger.tokens,
            "cost": round(ledger.cost, 6),
        },
    )
    console.print(
        f"stopped by budget: {reason}. Finished calls are cached; resume with: "
        f"charter run run_dir={run_dir}",
        markup=False,
        soft_wrap=True,
        highlight=False,
    )
    write_run_report(cfg, run_dir)
    raise SystemExit(3)
