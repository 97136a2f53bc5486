"""``charter plan``: what a run will ask of its models, what the cache already holds, and what the
rest will cost in seconds and money, before any model is loaded.

The plan runs the real stage functions (prompt reading, context filtering, the principle draw,
the tournament's rounds) on dry engines behind the read-only call cache
(:mod:`charter.dry_engine`). So its request counts are the run's own, and so are its cached
counts where the inputs are known: generation always; the judge's chats wherever the responses
are already cached. After a one-principle edit, only that principle's comparisons show as new.

Seconds come from the throughput the same engine reached in earlier runs
(:mod:`charter.throughput`), else from a short probe that loads the model and times a few of the
planned calls (``plan.probe``), else they are unknown. Cost comes from ``price_per_mtok``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from charter import throughput
from charter.building import build, open_call_cache, resolve_path
from charter.constitution import load_constitution
from charter.dry_engine import DryEngines
from charter.errors import InputError
from charter.generators.model_files import default_cache_dir
from charter.generators.stage import generate_candidates
from charter.judge_building import build_judge
from charter.judges.protocol import Comparison
from charter.judges.stage import judge_candidates
from charter.prompts import PromptFields, load_prompts
from charter.records import Judgment

KIND_OF_STAGE = {"generate": "generate", "judge": "choice_logprobs"}


@dataclass
class StagePlan:
    """One stage's requests: ``chats`` sent to engines, of which ``cached`` are in the cache;
    ``units`` are samples (generate) or chats (judge) that reach a model."""

    chats: int = 0
    cached: int = 0
    new_units: int = 0
    prompt_tokens: int = 0
    new_prompt_tokens: int = 0
    max_new_output_tokens: int = 0
    seconds: float | None = None
    seconds_source: str = "unknown"
    cost: float | None = None


@dataclass
class PrincipleCount:
    comparisons: int = 0
    chats: int = 0
    cached: int = 0


@dataclass
class Plan:
    """Everything ``plan.json`` holds."""

    experiment: str
    prompts_read: int
    prompts_rejected: int
    prompts_kept: int
    num_samples: int
    ranking: str
    comparisons: int
    all_pairs_comparisons: int
    stages: dict[str, StagePlan]
    principles: dict[str, PrincipleCount]
    seconds: float | None
    cost: float | None
    notes: list[str] = field(default_factory=list)
    planning_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _PrincipleTally:
    """Judges each call's comparisons one principle at a time and books the cache hits and
    misses of each group to its principle."""

    def __init__(self, judge: Any, engines: DryEngines, tally: dict[str, PrincipleCount]):
        self.inner = judge
        self.engines = engines
        self.tally = tally

    def _stats(self) -> tuple[int, int]:
        chats = cached = 0
        for _, cache, counter in self.engines.by_config.values():
            chats += counter.requests
            cached += cache.stats.hits if cache is not None else 0
        return chats, cached

    def judge(self, comparisons: list[Comparison]) -> list[Judgment]:
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(comparisons):
            groups.setdefault(c.principle.id, []).append(i)
        out: list[Judgment | None] = [None] * len(comparisons)
        for pid, idx in groups.items():
            chats, cached = self._stats()
            done = self.inner.judge([comparisons[i] for i in idx])
            after_chats, after_cached = self._stats()
            count = self.tally.setdefault(pid, PrincipleCount())
            count.comparisons += len(idx)
            count.chats += after_chats - chats
            count.cached += after_cached - cached
            for i, j in zip(idx, done, strict=True):
                out[i] = j
        return [j for j in out if j is not None]


def _snapshot(engines: DryEngines) -> dict[str, tuple[int, int, dict, dict, dict]]:
    snap = {}
    for name, (described, cache, counter) in engines.by_config.items():
        spend = described.engine.spend
        snap[name] = (
            counter.requests,
            cache.stats.hits if cache is not None else 0,
            dict(spend.units),
            dict(spend.prompt_tokens),
            dict(spend.max_output_tokens),
        )
    return snap


def _stage_plan(
    engines: DryEngines, before: dict[str, Any], kind: str, tokens_before: dict[str, int]
) -> tuple[StagePlan, list[tuple[Any, int, int, int]]]:
    """The stage's totals, and per engine (described, new units, new prompt tokens, max out)."""
    plan = StagePlan()
    per_engine = []
    for name, (described, cache, counter) in engines.by_config.items():
        chats0, hits0, units0, ptok0, out0 = before.get(name, (0, 0, {}, {}, {}))
        spend = described.engine.spend
        plan.chats += counter.requests - chats0
        plan.cached += (cache.stats.hits if cache is not None else 0) - hits0
        plan.prompt_tokens += counter.prompt_tokens - tokens_before.get(name, 0)
        units = spend.units.get(kind, 0) - units0.get(kind, 0)
        ptok = spend.prompt_tokens.get(kind, 0) - ptok0.get(kind, 0)
        out = spend.max_output_tokens.get(kind, 0) - out0.get(kind, 0)
        plan.new_units += units
        plan.new_prompt_tokens += ptok
        if kind == "generate":
            plan.max_new_output_tokens += out
        if units:
            per_engine.append((described, units, ptok, out))
    return plan, per_engine


def _probe(cfg: DictConfig, described: Any, kind: str) -> float | None:
    """Seconds per unit from timing a few of the planned calls on the real engine (uncached)."""
    examples = described.engine.spend.examples.get(kind, [])
    if not examples:
        return None
    engine = build(described.node, "probe")
    start = time.perf_counter()
    if kind == "generate":
        sampling = build(cfg.generator.sampling, "generator.sampling")
        chats = examples[:8]
        engine.generate(chats, sampling, n=cfg.generator.num_samples)
        units = len(chats) * cfg.generator.num_samples
    else:
        chats = examples[:32]
        engine.choice_logprobs(chats, ["A", "B"])
        units = len(chats)
    return (time.perf_counter() - start) / units


def _time_and_cost(
    cfg: DictConfig, stage: StagePlan, per_engine: list[Any], kind: str, probe: bool, notes: list
) -> None:
    cache_dir = throughput_dir(cfg)
    seconds = 0.0
    cost = 0.0
    sources = []
    for described, units, ptok, out in per_engine:
        eng = described.engine
        found = throughput.rate(cache_dir, kind, eng.model_id, described.fingerprint)
        if found is None and probe:
            per = _probe(cfg, described, kind)
            if per is not None:
                found = throughput.Rate(per, "a probe of this machine")
                notes.append(f"{kind}: no earlier runs of {eng.model_id}; timed by a probe")
        if found is None:
            seconds = float("nan")
        else:
            seconds += found.seconds_per_unit * units
            sources.append(found.source)
        prices = eng.price_per_mtok or {}
        cost += (ptok * prices.get("input", 0.0) + out * prices.get("output", 0.0)) / 1e6
    # three significant figures: a fast engine's estimate must not round to zero
    stage.seconds = None if seconds != seconds else float(f"{seconds:.3g}")
    stage.seconds_source = ", ".join(sorted(set(sources))) or (
        "nothing new to run" if not per_engine else "unknown (no earlier runs; plan.probe=false)"
    )
    stage.cost = round(cost, 6)


def throughput_dir(cfg: DictConfig) -> Path:
    """Where throughput records live: beside the call cache."""
    return Path(cfg.cache_dir).expanduser() if cfg.get("cache_dir") else default_cache_dir()


def make_plan(cfg: DictConfig, *, probe: bool = False) -> Plan:
    """Plan a ``charter run`` of ``cfg`` (a composed run config)."""
    if cfg.get("revise") is not None:
        raise InputError(
            "charter plan covers generate -> judge -> pairs runs; a revise run is not planned yet",
            field="revise",
        )
    start = time.perf_counter()
    constitution = load_constitution(resolve_path(cfg.constitution.path))
    engines = DryEngines(open_call_cache(cfg))
    fields = PromptFields(**OmegaConf.to_container(cfg.prompts.fields))  # type: ignore[arg-type]
    prompts, rejects = load_prompts(resolve_path(cfg.prompts.path), fields, limit=cfg.prompts.limit)
    gen = engines.get(cfg.generator.engine, "generator.engine")
    sampling = build(cfg.generator.sampling, "generator.sampling")
    notes: list[str] = []

    before, tokens0 = _snapshot(engines), {}
    sets, too_long = generate_candidates(
        prompts, gen, sampling, cfg.generator.num_samples, chunk_size=max(1, len(prompts))
    )
    stages: dict[str, StagePlan] = {}
    stages["generate"], gen_engines = _stage_plan(engines, before, "generate", tokens0)
    _time_and_cost(cfg, stages["generate"], gen_engines, "generate", probe, notes)
    if stages["generate"].new_units:
        notes.append(
            "judge: responses not generated yet are placeholders of max_new_tokens tokens, so "
            "the judge's prompt tokens are an estimate (an upper bound for a real model) and "
            "their calls all count as new"
        )

    tokens_now = {name: c.prompt_tokens for name, (_, _, c) in engines.by_config.items()}
    before = _snapshot(engines)
    judge = build_judge(
        cfg.judge,
        "judge",
        engines,
        constitution_sha256=constitution.sha256,  # type: ignore[arg-type]
    )
    principles: dict[str, PrincipleCount] = {}
    judgments, _, judge_rejects = judge_candidates(
        sets,
        _PrincipleTally(judge, engines, principles),  # type: ignore[arg-type]
        constitution,
        seed=cfg.seed,
        chunk_size=max(1, cfg.chunk_size),
        principle_per=cfg.principle_per,
        ranking=cfg.ranking,
    )
    stages["judge"], judge_engines = _stage_plan(engines, before, "choice_logprobs", tokens_now)
    _time_and_cost(cfg, stages["judge"], judge_engines, "choice_logprobs", probe, notes)
    if cfg.ranking != "all_pairs":
        notes.append(
            f"ranking={cfg.ranking}: which pairs are judged depends on the answers; new "
            "comparisons are planned with even scores"
        )
    all_pairs = sum(len(s.candidates) * (len(s.candidates) - 1) // 2 for s in sets)
    times = [s.seconds for s in stages.values()]
    return Plan(
        experiment=cfg.experiment_name,
        prompts_read=len(prompts) + len(rejects),
        prompts_rejected=len(rejects) + len(too_long),
        prompts_kept=len(sets),
        num_samples=cfg.generator.num_samples,
        ranking=cfg.ranking,
        comparisons=len(judgments),
        all_pairs_comparisons=all_pairs - sum(1 for r in judge_rejects if "identical" in r.reason),
        stages=stages,
        principles=dict(sorted(principles.items())),
        seconds=None if any(t is None for t in times) else float(f"{sum(times):.3g}"),  # type: ignore[arg-type]
        cost=round(sum(s.cost or 0.0 for s in stages.values()), 6),
        notes=notes,
        planning_seconds=round(time.perf_counter() - start, 2),
    )


def plan_error(plan: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Planned against actual, per stage: chats and cached chats (actual minus planned; 0 is
    exact) and seconds (actual over planned)."""
    out: dict[str, Any] = {}
    for stage in ("generate", "judge"):
        planned, actual = plan["stages"].get(stage), summary.get(stage, {})
        cache = actual.get("cache")
        if not planned or not cache:
            continue
        secs = planned.get("seconds")
        out[stage] = {
            "chats": cache["hits"] + cache["misses"] - planned["chats"],
            "cached": cache["hits"] - planned["cached"],
            "seconds_ratio": round(actual["seconds"] / secs, 3) if secs else None,
        }
    judge = summary.get("judge", {})
    if "comparisons" in judge:
        out["comparisons"] = judge["comparisons"] - plan["comparisons"]
    return out
