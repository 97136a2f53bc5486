"""``charter run`` and its stage commands (``generate``, ``judge``, ``pairs``).

Each stage reads the run directory's files, calls its stage function with objects built from
the config, and writes its outputs and its section of ``summary.json``; ``run_all`` chains them
and skips the stages whose mark says they are already complete.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from charter import run_files, run_state
from charter.budget import BudgetReached, Ledger
from charter.building import EngineCache, build, call_stats, resolve_path
from charter.commands.shared import (
    cache_counts,
    publish_dataset_from,
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
from charter.errors import InputError
from charter.exports import with_score_columns
from charter.generators.stage import generate_candidates
from charter.jsonl import read_jsonl, write_text_atomic
from charter.judge_building import build_judge
from charter.judges.calibrated import CalibratedJudge
from charter.judges.cascade import CascadeJudge
from charter.judges.stage import judge_parts
from charter.judges.tournament import max_comparisons
from charter.pairs import make_pairs
from charter.progress import console, stage_progress, summary_table
from charter.prompts import PromptFields, prompt_windows
from charter.records import CandidateSet, Judgment, PromptRecord, Reject, to_row
from charter.streaming import in_step, judge_windows, windows_of


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
    """Read prompts window by window, sample K candidates each, append them to
    candidates.jsonl, and write the rejects (see :mod:`charter.streaming`)."""
    engines = engines or run_engines(cfg)
    done = stage_fingerprint(cfg, "generate", run_dir)
    run_state.clear_done(run_dir, "generate")
    fields = PromptFields(**OmegaConf.to_container(cfg.prompts.fields))  # type: ignore[arg-type]
    path = resolve_path(cfg.prompts.path)
    streaming = on_ray_data(cfg)
    engine = None if streaming else engines.get(cfg.generator.engine, "generator.engine")
    sampling = build(cfg.generator.sampling, "generator.sampling")
    chunk = cfg.chunk_size if streaming else stage_chunk_size(cfg, engine)
    # whole chunks per window, so the engine gets the calls a single window would give it; an
    # engine that batches for itself (vLLM, a server) gets each window in one call; on Ray Data
    # a window is one chunk, the unit handed to a replica
    if streaming:
        window = chunk
    elif chunk == sys.maxsize:
        window = stream_window(cfg)
    else:
        window = -(-stream_window(cfg) // chunk) * chunk
    read_rejects: list[Reject] = []
    too_long: list[Reject] = []
    counts: Counter[str] = Counter()
    ray_cache: Counter[str] = Counter()
    before = call_stats(engine)
    start = time.perf_counter()
    with (
        stage_progress("generate (prompts)", prompt_count(path, cfg.prompts.limit)) as advance,
        run_files.appending(run_dir, run_files.CANDIDATES) as out,
    ):
        parts = prompt_windows(path, fields, limit=cfg.prompts.limit, size=window)

        def prompts_of() -> Iterator[list[PromptRecord]]:
            for part in parts:
                read_rejects.extend(part.rejects)
                counts["prompts"] += len(part.prompts)
                yield part.prompts

        if streaming:
            from charter.executors.ray_streaming import stream_generate_windows

            results = stream_generate_windows(cfg, prompts_of(), on_cache=ray_cache.update)
        else:
            results = (
                generate_candidates(
                    prompts,
                    engine,
                    sampling,
                    cfg.generator.num_samples,
                    chunk_size=chunk,
                    on_progress=advance,
                )
                for prompts in prompts_of()
            )
        for sets, skipped in results:
            too_long.extend(skipped)
            out.add(run_files.CANDIDATES, sets)
            counts["sets"] += len(sets)
            counts["candidates"] += sum(len(cs.candidates) for cs in sets)
            counts["tokens"] += sum(c.num_tokens for cs in sets for c in cs.candidates)
            if streaming:
                advance(len(sets) + len(skipped))
    engines.commit()  # the stage's calls are durable before it is marked done (and timed)
    seconds = time.perf_counter() - start
    cache = (
        dict(ray_cache)
        if streaming and cfg.call_cache
        else cache_counts(before, call_stats(engine))
    )
    if cache and not streaming:
        samples = cache["misses"] * cfg.generator.num_samples
        record_throughput(cfg, engine, "generate", samples, seconds)
    run_files.replace_rejects(run_dir, "generate", [*read_rejects, *too_long])
    tokens = counts["tokens"]
    run_state.update_summary(
        run_dir,
        "generate",
        {
            "prompts_read": counts["prompts"] + len(read_rejects),
            "prompts_rejected": len(read_rejects) + len(too_long),
            "candidate_sets": counts["sets"],
            "candidates": counts["candidates"],
            "generated_tokens": tokens,
            "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
            "cache": cache,
        },
        done=done,
    )


def on_ray_data(cfg: DictConfig) -> bool:
    """``executor=ray executor.streaming=true``: generate and judge run on Ray Data's streaming
    path (:mod:`charter.executors.ray_streaming`), the engines built in its actors, not here.
    A budget meters engine calls in this process, so it cannot bound them there."""
    node = cfg.get("executor")
    if node is None or not node.get("streaming"):
        return False
    if any(v is not None for v in (cfg.get("budget") or {}).values()):
        raise InputError(
            "budget.* limits are not available with executor.streaming=true (the engines run "
            "in Ray Data's actors); drop the budget or the streaming",
            field="executor.streaming",
        )
    return True


def stream_window(cfg: DictConfig) -> int:
    """Prompts a stage holds at once (``stream_window``, checked >= 1 by the config check; a
    config from before the setting existed gets 1024)."""
    value = cfg.get("stream_window")
    return 1024 if value is None else int(value)


def prompt_count(path: Path, limit: int | None) -> int | None:
    """Rows of a JSONL prompts file (an upper bound on its prompts, for the progress bar), at
    most ``limit``; None for other formats, whose bar then counts without a total."""
    if path.suffix.lower() not in (".jsonl", ".json") or not path.is_file():
        return limit
    with path.open("rb") as fh:
        rows = sum(1 for line in fh if line.strip())
    return min(rows, limit) if limit is not None else rows


def run_judge(cfg: DictConfig, run_dir: Path, engines: EngineCache | None = None) -> None:
    """Judge all candidate pairs of a run in both orders, window by window; append judgments
    and rankings (see :mod:`charter.streaming`)."""
    engines = engines or run_engines(cfg)
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
    streaming = on_ray_data(cfg)
    judge = (
        None
        if streaming
        else build_judge(cfg.judge, "judge", engines, constitution_sha256=constitution.sha256)
    )
    engine = getattr(judge, "engine", None)
    chunk = cfg.chunk_size if streaming else stage_chunk_size(cfg, engine)
    per_pair = len(constitution.principles) if cfg.principle_per == "all" else 1
    sizes: Counter[int] = Counter()  # candidates per set -> sets: the summary's pair count

    def counted(sets: Iterator[CandidateSet]) -> Iterator[CandidateSet]:
        for cs in sets:
            sizes[len(cs.candidates)] += 1
            yield cs

    # the bar's length from the generate stage's summary (no extra pass over the file); a
    # tournament's count depends on the answers, so its bar runs to the most it can ask
    made = run_state.read_summary(run_dir).get("generate", {})
    k = int(cfg.generator.num_samples)
    per_set = k * (k - 1) // 2 if cfg.ranking == "all_pairs" else max_comparisons(k) + 1
    bar = made["candidate_sets"] * per_set if made.get("candidate_sets") is not None else None
    windows = judge_windows(
        counted(run_files.iter_candidates(run_dir)),
        window=1 if streaming else stream_window(cfg),  # on Ray Data: one engine call each
        chunk_size=chunk,
        per_pair=per_pair,
        # an engine that batches for itself gets a window per call: cut by prompts alone
        at_call_boundaries=cfg.ranking == "all_pairs" and chunk < sys.maxsize,
    )
    tally = JudgeTally()
    identical: list[Reject] = []
    too_long: list[Reject] = []
    ray_cache: Counter[str] = Counter()
    before = call_stats(engine)
    start = time.perf_counter()
    with (
        stage_progress("judge (comparisons x2 orders)", bar) as advance,
        run_files.appending(run_dir, run_files.JUDGMENTS, run_files.RANKINGS) as out,
    ):
        if streaming:
            from charter.executors.ray_streaming import stream_judge_windows

            results = stream_judge_windows(cfg, windows, on_cache=ray_cache.update)
        else:
            results = (
                judge_parts(
                    sets,
                    judge,
                    constitution,
                    seed=cfg.seed,
                    chunk_size=chunk,
                    principle_per=cfg.principle_per,
                    principle_aggregation=principle_aggregation(cfg),  # type: ignore[arg-type]
                    ranking=cfg.ranking,
                    on_progress=advance,
                )
                for sets in windows
            )
        for judgments, rankings, same, skipped in results:
            if streaming:
                advance(len(judgments) + len(skipped))
            out.add(run_files.JUDGMENTS, judgments)
            out.add(run_files.RANKINGS, rankings)
            tally.add(judgments)
            identical.extend(same)
            too_long.extend(skipped)
    engines.commit()  # the stage's calls are durable before it is marked done (and timed)
    seconds = time.perf_counter() - start
    counts = (
        dict(ray_cache)
        if streaming and cfg.call_cache
        else cache_counts(before, call_stats(engine))
    )
    if counts and not streaming and judge_scores_choices(judge):
        record_throughput(cfg, engine, "choice_logprobs", counts["misses"], seconds)
    run_files.replace_rejects(run_dir, "judge", [*identical, *too_long])
    total = sum(sets * k * (k - 1) // 2 for k, sets in sizes.items())
    n = tally.n
    extra: dict[str, Any] = {}
    if isinstance(judge, CascadeJudge):
        extra["cascade"] = {**judge.summary(), "needs_human": tally.needs_human}
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
            "skipped": len(identical) + len(too_long),
            "swap_consistency": round(tally.swap_consistent / n, 4) if n else None,
            "first_position_rate": round(tally.first_position / (2 * n), 4) if n else None,
            "seconds": round(seconds, 2),
            "comparisons_per_second": round(n / seconds, 3) if seconds else None,
            "cache": counts,
            **extra,
        },
        done=done,
    )


@dataclass
class JudgeTally:
    """The judge stage's summary figures, added up window by window."""

    n: int = 0
    swap_consistent: int = 0
    first_position: int = 0
    needs_human: int = 0

    def add(self, judgments: list[Judgment]) -> None:
        self.n += len(judgments)
        self.swap_consistent += sum(j.swap_consistent for j in judgments)
        self.first_position += sum((j.p_first_order > 0.5) + (j.p_swapped < 0.5) for j in judgments)
        self.needs_human += sum(
            bool(j.raw.get("cascade", {}).get("needs_human")) for j in judgments
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
    """Select and filter pairs prompt window by prompt window, validate them, and publish the
    dataset and its card."""
    done = stage_fingerprint(cfg, "pairs", run_dir)
    run_state.clear_done(run_dir, "pairs")
    constitution = run_constitution(cfg)
    settings = build(cfg.pairs, "pairs")
    rows_of = in_step(
        run_files.iter_candidates(run_dir),
        run_files.iter_judgments(run_dir),
        run_files.iter_rankings(run_dir),
    )
    dropped: Counter[str] = Counter()
    rejects: list[Reject] = []
    facts = PairFacts()
    try:
        with run_files.appending(run_dir, run_files.PAIRS) as out:
            for window in windows_of(rows_of, stream_window(cfg)):
                sets = [r.candidates for r in window]
                judgments = [j for r in window for j in r.judgments]
                rankings = [r.ranking for r in window if r.ranking is not None]
                result = make_pairs(
                    sets, judgments, rankings, settings, constitution_sha256=constitution.sha256
                )
                rows = [to_row(pair) for pair in result.pairs]
                out.add(run_files.PAIRS, rows)
                dropped.update(result.dropped)
                rejects.extend(result.rejects)
                facts.add(sets, judgments, rows)
    except ValueError as exc:
        raise InputError(str(exc), file=str(run_dir / run_files.JUDGMENTS)) from None
    run_files.replace_rejects(run_dir, "pairs", rejects)
    publish_dataset_from(run_dir, run_files.PAIRS, with_score_columns)
    n = facts.judgments
    summary = run_state.update_summary(
        run_dir,
        "pairs",
        {
            "pairs": facts.pairs,
            "dropped": dict(dropped),
            "mean_margin": round(facts.margin_sum / facts.pairs, 4) if facts.pairs else None,
        },
    )
    first, first_set = facts.first_judgment, facts.first_set
    card = CardFacts(
        experiment=cfg.experiment_name,
        constitution_name=constitution.name,
        constitution_version=constitution.version,
        constitution_sha256=constitution.sha256,
        constitution_text=constitution.text,
        generator_model=first_set.generator_model if first_set else "",
        judge_model=first.judge_model if first else "",
        judge_method=first.judge_method if first else "",
        judge_template_sha256=str(first.raw.get("template_sha256", "")) if first else "",
        sampling=first_set.sampling if first_set else {},
        num_samples=len(first_set.candidates) if first_set else 0,
        pair_settings=asdict(settings),
        counts={
            "prompts": summary.get("generate", {}).get("prompts_read", facts.sets),
            "prompts with candidates": facts.sets,
            "candidates": facts.candidates,
            "comparisons (each in 2 orders)": n,
            **vector_counts(facts.vectors),
            "pairs": facts.pairs,
        },
        dropped=dict(dropped),
        rejects_by_reason=_rejects_by_reason(run_dir),
        swap_consistency=facts.swap_consistent / n if n else None,
        mean_margin=summary["pairs"]["mean_margin"],
        extra_section=judge_section(summary.get("judge", {})) + principle_section(facts.vectors),
    )
    write_text_atomic(run_dir / "README.md", render_card(card))
    run_state.update_summary(run_dir, "pairs", summary["pairs"], done=done)


@dataclass
class PairFacts:
    """What the dataset card says about a run, added up window by window. Judgments with a
    score per principle (``principle_per=all``) are kept whole for the card's agreement table,
    the one part that needs them all; other runs keep none."""

    sets: int = 0
    candidates: int = 0
    judgments: int = 0
    swap_consistent: int = 0
    pairs: int = 0
    margin_sum: float = 0.0
    first_set: CandidateSet | None = None
    first_judgment: Judgment | None = None
    vectors: list[Judgment] = field(default_factory=list)

    def add(self, sets: list[CandidateSet], judgments: list[Judgment], rows: list[dict]) -> None:
        self.first_set = self.first_set or (sets[0] if sets else None)
        self.first_judgment = self.first_judgment or (judgments[0] if judgments else None)
        self.sets += len(sets)
        self.candidates += sum(len(cs.candidates) for cs in sets)
        self.judgments += len(judgments)
        self.swap_consistent += sum(j.swap_consistent for j in judgments)
        self.pairs += len(rows)
        self.margin_sum += sum(r["margin"] for r in rows)
        self.vectors.extend(j for j in judgments if j.raw.get("principle_scores"))


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
