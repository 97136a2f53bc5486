"""``charter run`` and its stage commands (``generate``, ``judge``, ``pairs``).

Each stage reads the run directory's files, calls its stage function with objects built from
the config, and writes its outputs and its section of ``summary.json``; ``run_all`` chains them
and skips the stages whose mark says they are already complete.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from charter import run_files, run_state
from charter.budget import BudgetReached, Ledger
from charter.building import EngineCache, build, call_stats, resolve_path
from charter.commands.shared import (
    cache_counts,
    publish_dataset,
    record_throughput,
    resolved,
    run_budget,
    run_constitution,
    run_engines,
    stage_chunk_size,
    write_run_report,
)
from charter.dataset_card import (
    CardFacts,
    judge_section,
    principle_section,
    render_card,
    vector_counts,
)
from charter.exports import with_score_columns
from charter.generators.stage import generate_candidates
from charter.jsonl import read_jsonl, write_text_atomic
from charter.judge_building import build_judge
from charter.judges.calibrated import CalibratedJudge
from charter.judges.cascade import CascadeJudge
from charter.judges.stage import judge_candidates
from charter.judges.tournament import max_comparisons
from charter.pairs import make_pairs
from charter.progress import console, stage_progress, summary_table
from charter.prompts import PromptFields, load_prompts
from charter.records import to_row


def stage_fingerprint(cfg: DictConfig, stage: str, run_dir: Path) -> str:
    """What a stage's outputs depend on: its config slice and its input files' bytes.

    ``chunk_size`` and the engines' batch sizes are left out on purpose: they change how work
    is split, not what it produces.
    """
    constitution = resolve_path(cfg.constitution.path)
    if stage == "generate":
        settings = resolved(cfg.generator, cfg.prompts)
        inputs = [resolve_path(cfg.prompts.path)]
    elif stage == "judge":
        settings = resolved(cfg.judge, cfg.constitution, cfg.seed, cfg.principle_per, cfg.ranking)
        if cfg.principle_per == "all":  # only here, so other runs keep their stage marks
            settings = resolved(settings, principle_aggregation(cfg))
        inputs = [constitution, run_dir / run_files.CANDIDATES, *calibration_files(cfg.judge)]
    else:
        settings = resolved(cfg.pairs, cfg.constitution, cfg.experiment_name)
        names = (run_files.CANDIDATES, run_files.JUDGMENTS, run_files.RANKINGS)
        inputs = [constitution, *(run_dir / n for n in names)]
    return run_state.stage_fingerprint(settings, inputs)


def principle_aggregation(cfg: DictConfig) -> str:
    """How ``principle_per=all`` combines principles (``log_odds`` in a config from before the
    setting existed)."""
    return str(cfg.get("principle_aggregation") or "log_odds")


def calibration_files(judge: DictConfig) -> list[Path]:
    """The calibration files a judge config reads (its own and its cascade tiers'): a refitted
    file changes the judge stage's output, so its bytes are part of the stage's fingerprint."""
    paths = [judge.get("calibration")]
    paths += [tier.get("calibration") for tier in (judge.get("tiers") or {}).values()]
    return [resolve_path(str(p)) for p in paths if p]


def run_generate(cfg: DictConfig, run_dir: Path, engines: EngineCache | None = None) -> None:
    """Read prompts, sample K candidates each, write candidates.jsonl and the rejects."""
    engines = engines or run_engines(cfg)
    done = stage_fingerprint(cfg, "generate", run_dir)
    run_state.clear_done(run_dir, "generate")
    fields = PromptFields(**OmegaConf.to_container(cfg.prompts.fields))  # type: ignore[arg-type]
    prompts, rejects = load_prompts(resolve_path(cfg.prompts.path), fields, limit=cfg.prompts.limit)
    engine = engines.get(cfg.generator.engine, "generator.engine")
    sampling = build(cfg.generator.sampling, "generator.sampling")
    before = call_stats(engine)
    start = time.perf_counter()
    with stage_progress("generate (prompts)", len(prompts)) as advance:
        sets, too_long = generate_candidates(
            prompts,
            engine,
            sampling,
            cfg.generator.num_samples,
            chunk_size=stage_chunk_size(cfg, engine),
            on_progress=advance,
        )
    seconds = time.perf_counter() - start
    counts = cache_counts(before, call_stats(engine))
    if counts:
        samples = counts["misses"] * cfg.generator.num_samples
        record_throughput(cfg, engine, "generate", samples, seconds)
    run_files.write_rows(run_dir, run_files.CANDIDATES, sets)
    run_files.replace_rejects(run_dir, "generate", [*rejects, *too_long])
    tokens = sum(c.num_tokens for s in sets for c in s.candidates)
    run_state.update_summary(
        run_dir,
        "generate",
        {
            "prompts_read": len(prompts) + len(rejects),
            "prompts_rejected": len(rejects) + len(too_long),
            "candidate_sets": len(sets),
            "candidates": sum(len(s.candidates) for s in sets),
            "generated_tokens": tokens,
            "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
            "cache": counts,
        },
        done=done,
    )


def run_judge(cfg: DictConfig, run_dir: Path, engines: EngineCache | None = None) -> None:
    """Judge all candidate pairs of a run in both orders; write judgments and rankings."""
    engines = engines or run_engines(cfg)
    sets = run_files.read_candidates(run_dir)
    done = stage_fingerprint(cfg, "judge", run_dir)
    run_state.clear_done(run_dir, "judge")
    constitution = run_constitution(cfg)
    if cfg.principle_per == "all" and len(constitution.principles) == 1:
        console.print(
            f"warning: principle_per=all with the single principle "
            f"{constitution.principles[0].id!r} is the same as principle_per=prompt; going on",
            markup=False,
            soft_wrap=True,
            highlight=False,
        )
    judge = build_judge(cfg.judge, "judge", engines, constitution_sha256=constitution.sha256)
    engine = getattr(judge, "engine", None)
    total = sum(len(s.candidates) * (len(s.candidates) - 1) // 2 for s in sets)
    # a tournament's count depends on the answers: its bar runs to the most it can ask
    bar = (
        total
        if cfg.ranking == "all_pairs"
        else sum(max_comparisons(len(s.candidates)) + 1 for s in sets)
    )
    before = call_stats(engine)
    start = time.perf_counter()
    with stage_progress("judge (comparisons x2 orders)", bar) as advance:
        judgments, rankings, rejects = judge_candidates(
            sets,
            judge,
            constitution,
            seed=cfg.seed,
            chunk_size=stage_chunk_size(cfg, engine),
            principle_per=cfg.principle_per,
            principle_aggregation=principle_aggregation(cfg),  # type: ignore[arg-type]
            ranking=cfg.ranking,
            on_progress=advance,
        )
    seconds = time.perf_counter() - start
    counts = cache_counts(before, call_stats(engine))
    if counts and judge_scores_choices(judge):
        record_throughput(cfg, engine, "choice_logprobs", counts["misses"], seconds)
    run_files.write_rows(run_dir, run_files.JUDGMENTS, judgments)
    run_files.write_rows(run_dir, run_files.RANKINGS, rankings)
    run_files.replace_rejects(run_dir, "judge", rejects)
    n = len(judgments)
    extra: dict[str, Any] = {}
    if isinstance(judge, CascadeJudge):
        extra["cascade"] = {
            **judge.summary(),
            "needs_human": sum(bool(j.raw["cascade"]["needs_human"]) for j in judgments),
        }
    if cfg.principle_per == "all":
        extra["principles"] = {
            "count": len(constitution.principles),
            "aggregation": principle_aggregation(cfg),
            "comparisons": n * len(constitution.principles),
            "comparisons_per_second": round(n * len(constitution.principles) / seconds, 3)
            if seconds
            else None,
        }
    if isinstance(judge, CalibratedJudge):
        extra["calibration"] = {
            "file": str(cfg.judge.calibration),
            "sha256": judge.calibration_sha256,
            "fitted_on": judge.calibration.n,
        }
    run_state.update_summary(
        run_dir,
        "judge",
        {
            "comparisons": n,
            "ranking": cfg.ranking,
            "all_pairs_comparisons": total,
            "skipped": len(rejects),
            "swap_consistency": round(sum(j.swap_consistent for j in judgments) / n, 4)
            if n
            else None,
            "first_position_rate": round(
                sum((j.p_first_order > 0.5) + (j.p_swapped < 0.5) for j in judgments) / (2 * n), 4
            )
            if n
            else None,
            "seconds": round(seconds, 2),
            "comparisons_per_second": round(n / seconds, 3) if seconds else None,
            "cache": counts,
            **extra,
        },
        done=done,
    )


def judge_scores_choices(judge: Any) -> bool:
    """Whether a judge's calls are choice scores (the pairwise logprob judges), the only kind a
    throughput record of ``choice_logprobs`` describes; a generating judge's stage time is not
    a rate of choice scores."""
    return getattr(judge, "method", None) == "pairwise_logprob"


def _rejects_by_reason(run_dir: Path) -> dict[str, int]:
    path = run_dir / run_files.REJECTS
    rows = [row for _, row in read_jsonl(path)] if path.exists() else []
    counts = Counter(
        f"{r['stage']}: {re.sub(r'[0-9.]+', 'N', r['reason'])}"
        for r in rows
        if r["stage"] != "pairs"
    )
    return dict(sorted(counts.items()))


def run_pairs(cfg: DictConfig, run_dir: Path, engines: EngineCache | None = None) -> None:
    """Select and filter pairs, validate them, and publish the dataset and its card."""
    sets = run_files.read_candidates(run_dir)
    judgments = run_files.read_judgments(run_dir)
    rankings = run_files.read_rankings(run_dir)
    done = stage_fingerprint(cfg, "pairs", run_dir)
    run_state.clear_done(run_dir, "pairs")
    constitution = run_constitution(cfg)
    settings = build(cfg.pairs, "pairs")
    result = make_pairs(
        sets, judgments, rankings, settings, constitution_sha256=constitution.sha256
    )
    rows = [to_row(p) for p in result.pairs]
    run_files.write_rows(run_dir, run_files.PAIRS, rows)
    run_files.replace_rejects(run_dir, "pairs", result.rejects)
    publish_dataset(run_dir, [with_score_columns(r) for r in rows])
    n = len(judgments)
    summary = run_state.update_summary(
        run_dir,
        "pairs",
        {
            "pairs": len(rows),
            "dropped": dict(result.dropped),
            "mean_margin": round(sum(r["margin"] for r in rows) / len(rows), 4) if rows else None,
        },
    )
    first = judgments[0] if judgments else None
    facts = CardFacts(
        experiment=cfg.experiment_name,
        constitution_name=constitution.name,
        constitution_version=constitution.version,
        constitution_sha256=constitution.sha256,
        constitution_text=constitution.text,
        generator_model=sets[0].generator_model if sets else "",
        judge_model=first.judge_model if first else "",
        judge_method=first.judge_method if first else "",
        judge_template_sha256=str(first.raw.get("template_sha256", "")) if first else "",
        sampling=sets[0].sampling if sets else {},
        num_samples=len(sets[0].candidates) if sets else 0,
        pair_settings=asdict(settings),
        counts={
            "prompts": summary.get("generate", {}).get("prompts_read", len(sets)),
            "prompts with candidates": len(sets),
            "candidates": sum(len(s.candidates) for s in sets),
            "comparisons (each in 2 orders)": n,
            **vector_counts(judgments),
            "pairs": len(rows),
        },
        dropped=dict(result.dropped),
        rejects_by_reason=_rejects_by_reason(run_dir),
        swap_consistency=sum(j.swap_consistent for j in judgments) / n if n else None,
        mean_margin=summary["pairs"]["mean_margin"],
        extra_section=judge_section(summary.get("judge", {})) + principle_section(judgments),
    )
    write_text_atomic(run_dir / "README.md", render_card(facts))
    run_state.update_summary(run_dir, "pairs", summary["pairs"], done=done)


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
