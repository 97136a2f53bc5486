"""``charter prompts synthesize``: a prompts file for a team that has none.

This is where the config becomes objects and files; the drafting and screening live in
:mod:`charter.synthesis`. Writes ``prompts.jsonl`` (or ``out=FILE``) and, beside it,
``rejects.jsonl`` (every dropped draft with its reason) and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from charter.building import build, call_stats, resolve_path
from charter.commands.shared import cache_counts, run_constitution, run_engines
from charter.errors import InputError
from charter.jsonl import write_jsonl_atomic, write_text_atomic
from charter.progress import console, stage_progress, summary_table
from charter.prompts import load_prompts
from charter.synthesis.sources import Parent
from charter.synthesis.stage import SynthesisResult, SynthesisSettings, synthesize_prompts


def _parents(path: str | None) -> list[Parent]:
    """The last user turn of each prompt in a prompts file (any format ``prompts.path`` reads)."""
    if not path:
        return []
    prompts, _ = load_prompts(resolve_path(path))
    return [Parent(p.prompt_id, p.messages[-1]["content"]) for p in prompts]


def _settings(cfg: DictConfig) -> SynthesisSettings:
    n = cfg.n
    if isinstance(n, bool) or not isinstance(n, int):
        raise InputError(f"must be a whole number of prompts, not {n!r}", field="n")
    return SynthesisSettings(
        n=n,
        shares=build(cfg.shares, "shares"),
        oversample=float(cfg.oversample),
        max_rounds=int(cfg.max_rounds),
        pre_query=bool(cfg.pre_query),
        prefill=bool(cfg.prefill),
    )


def synthesize(cfg: DictConfig, out_dir: Path) -> None:
    """Draft, screen and write ``cfg.n`` prompts; fewer, with one line saying why, if the
    filters leave fewer (still exit 0)."""
    settings = _settings(cfg)
    filters = build(cfg.filters, "filters")
    dedup = build(cfg.dedup, "dedup")
    sampling = build(cfg.generator.sampling, "generator.sampling")
    seeds = _parents(cfg.seed_prompts)
    excluded = _parents(cfg.exclude)
    constitution = run_constitution(cfg)
    out = Path(cfg.out).expanduser() if cfg.out else out_dir / "prompts.jsonl"
    engine = run_engines(cfg).get(cfg.generator.engine, "generator.engine")
    before = call_stats(engine)
    start = time.perf_counter()
    with stage_progress("synthesize (prompts kept)", settings.n) as advance:
        result = synthesize_prompts(
            engine,
            constitution,
            settings,
            sampling,
            filters=filters,
            dedup=dedup,
            seeds=seeds,
            excluded=excluded,
            on_progress=advance,
        )
    seconds = time.perf_counter() - start
    model = engine.model_id
    write_jsonl_atomic(out, [d.row(model) for d in result.kept])
    rejects = out.parent / "rejects.jsonl"
    write_jsonl_atomic(rejects, [asdict(d.reject(model)) for d in result.drops])
    summary = _summary(cfg, result, seconds, model, constitution)
    summary["cache"] = cache_counts(before, call_stats(engine))
    summary["pre_query_cache"] = result.pre_query_blocks
    summary["files"] = {"prompts": str(out), "rejects": str(rejects)}
    write_text_atomic(out.parent / "summary.json", json.dumps(summary, indent=2) + "\n")
    summary_table(
        f"synthesize: {len(result.kept)} of {settings.n} kept",
        {
            **{f"kept ({s})": summary["by_source"][s]["kept"] for s in summary["by_source"]},
            "drafted": summary["drafted"],
            "dropped": len(result.drops),
            "duplicate rate": summary["duplicate_rate"],
            "distinct-1": summary["distinct_1"],
            "distinct-2": summary["distinct_2"],
            "prompts/minute": summary["prompts_per_minute"],
        },
    )
    if len(result.kept) < settings.n:
        console.print(shortfall_line(result, settings.n), markup=False, soft_wrap=True)
    console.print(f"prompts: {out}", soft_wrap=True, highlight=False)


def shortfall_line(result: SynthesisResult, n: int) -> str:
    """The one line saying that fewer prompts were kept than asked, and the top drop reasons."""
    top = [f"{code} {count}" for code, count in result.drop_counts.items() if code != "surplus"]
    why = ", ".join(top[:3]) or "no drafts to screen"
    return (
        f"synthesized {len(result.kept)} of {n} prompts asked after {result.rounds} round(s); "
        f"most drops: {why} (every drop is in rejects.jsonl; raise max_rounds or oversample, or "
        "loosen filters/dedup)"
    )


def _summary(
    cfg: DictConfig, result: SynthesisResult, seconds: float, model: str, constitution: Any
) -> dict[str, Any]:
    kept_by = {s: 0 for s in result.targets}
    for draft in result.kept:
        kept_by[draft.source] += 1
    by_source = {
        s: {"target": result.targets[s], "drafted": result.drafted[s], "kept": kept_by[s]}
        for s in result.targets
    }
    diversity = result.diversity()
    return {
        "n": cfg.n,
        "kept": len(result.kept),
        "drafted": sum(result.drafted.values()),
        "dropped": result.drop_counts,
        "duplicate_rate": round(result.duplicate_rate, 4),
        "distinct_1": round(diversity["distinct_1"], 4),
        "distinct_2": round(diversity["distinct_2"], 4),
        "by_source": by_source,
        "magpie_method": result.magpie_method,
        "rounds": result.rounds,
        "seconds": round(seconds, 2),
        "prompts_per_minute": round(len(result.kept) / seconds * 60, 2) if seconds else None,
        "generator_model": model,
        "seed": cfg.seed,
        "constitution": {"name": constitution.name, "sha256": constitution.sha256},
        "exclude": cfg.exclude,
        "seed_prompts": cfg.seed_prompts,
    }
