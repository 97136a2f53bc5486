"""``charter judge``: judge a run's candidate pairs in both orders and rank each prompt's
candidates, window by window, into ``judgments.jsonl`` and ``rankings.jsonl``."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from charter import run_files, run_state
from charter.building import EngineCache, call_stats
from charter.commands.shared import (
    cache_counts,
    record_throughput,
    run_constitution,
    run_engines,
    stage_chunk_size,
)
from charter.commands.stage_settings import (
    on_ray_data,
    principle_aggregation,
    stage_fingerprint,
    stream_window,
)
from charter.judge_building import build_judge
from charter.judges.calibrated import CalibratedJudge
from charter.judges.cascade import CascadeJudge
from charter.judges.stage import judge_parts
from charter.judges.tournament import max_comparisons
from charter.progress import console, stage_progress
from charter.records import CandidateSet, Judgment, Reject
from charter.streaming import judge_windows


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
