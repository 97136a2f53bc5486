"""``charter run`` with a ``revise`` section (``experiment=cai_sl``): critique -> revision chains.

The supervised half of Constitutional AI, checked: degenerate revisions dropped with their
reason, then the run's judge compares each revision with its initial response. Writes
``revisions.jsonl``, the judgments, the preference pairs and the SFT rows, and the card.
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
from charter.building import EngineCache, build, call_stats, resolve_path
from charter.commands.shared import (
    cache_counts,
    publish_dataset,
    resolved,
    run_constitution,
    run_engines,
    stage_chunk_size,
)
from charter.dataset_card import CardFacts, render_card
from charter.jsonl import write_jsonl_atomic, write_text_atomic
from charter.judge_building import build_judge
from charter.progress import console, stage_progress, summary_table
from charter.prompts import PromptFields, load_prompts
from charter.records import to_row
from charter.revisions.outputs import UNVERIFIED, preference_pair, sft_row
from charter.revisions.report import revise_section
from charter.revisions.stage import revise_prompts
from charter.revisions.verify import verify_revisions
from charter.schema_check import check_rows

REVISIONS = "revisions.jsonl"
REVISE_OUTPUTS = (REVISIONS, run_files.PAIRS, run_files.SFT, "dataset", "sft_dataset", "README.md")


def revise_fingerprint(cfg: DictConfig) -> str:
    """What the revise path's outputs depend on (like :func:`stage_fingerprint`)."""
    settings = resolved(
        cfg.generator, cfg.prompts, cfg.revise, cfg.judge, cfg.constitution, cfg.seed
    )
    inputs = [resolve_path(cfg.prompts.path), resolve_path(cfg.constitution.path)]
    return run_state.stage_fingerprint([settings, cfg.experiment_name], inputs)


def run_revise(cfg: DictConfig, run_dir: Path, engines: EngineCache | None = None) -> None:
    """Critique -> revision chains, degenerate checks, the judge's check, SFT data and pairs."""
    engines = engines or run_engines(cfg)
    done = revise_fingerprint(cfg)
    run_state.clear_done(run_dir, "revise")
    constitution = run_constitution(cfg)
    settings = build(cfg.revise, "revise")
    fields = PromptFields(**OmegaConf.to_container(cfg.prompts.fields))  # type: ignore[arg-type]
    prompts, read_rejects = load_prompts(
        resolve_path(cfg.prompts.path), fields, limit=cfg.prompts.limit
    )
    engine = engines.get(cfg.generator.engine, "generator.engine")
    sampling = build(cfg.generator.sampling, "generator.sampling")
    before = call_stats(engine)
    start = time.perf_counter()
    with stage_progress(
        "revise (initial, critique, revision chats)", len(prompts) * (1 + 2 * settings.rounds)
    ) as advance:
        chains, too_long = revise_prompts(
            prompts, engine, sampling, constitution, settings, seed=cfg.seed, on_progress=advance
        )
    engines.commit()  # the chains' calls are durable before the judge's check starts
    revise_seconds = time.perf_counter() - start
    revise_cache = cache_counts(before, call_stats(engine))
    report = settings.degenerate.check(chains)
    verification: dict[str, Any] = {"enabled": settings.verify, "min_margin": settings.min_margin}
    judgments, verify_rejects, judge_method, template_sha = [], [], "", ""
    if settings.verify:
        judge = build_judge(cfg.judge, "judge", engines, constitution_sha256=constitution.sha256)
        total = sum(len(c.principle_ids) for c in report.kept)
        start = time.perf_counter()
        with stage_progress("verify (comparisons x2 orders)", total) as advance:
            result = verify_revisions(
                report.kept,
                judge,
                constitution,
                min_margin=settings.min_margin,
                chunk_size=stage_chunk_size(cfg, getattr(judge, "engine", None)),
                on_progress=advance,
            )
        judgments, verify_rejects, kept = result.judgments, result.rejects, result.kept
        judge_model, judge_method = judge.model_id, judge.method
        template_sha = str(judgments[0].raw.get("template_sha256", "")) if judgments else ""
        n = len(judgments)
        verification |= {
            "judged": len(report.kept),
            "kept": len(kept),
            "fraction_kept": round(len(kept) / len(report.kept), 4) if report.kept else None,
            "dropped": dict(result.dropped),
            "swap_consistency": round(sum(j.swap_consistent for j in judgments) / n, 4)
            if n
            else None,
            "seconds": round(time.perf_counter() - start, 2),
        }
    else:
        kept = [(chain, None) for chain in report.kept]
        judge_model = UNVERIFIED
        verification |= {"judged": 0, "kept": len(kept), "fraction_kept": None, "dropped": {}}

    sha = constitution.sha256
    pairs = [to_row(preference_pair(chain, verdict, sha)) for chain, verdict in kept]
    sft = [sft_row(chain, verdict, sha) for chain, verdict in kept]
    check_rows("sft", sft, file=str(run_dir / run_files.SFT))
    run_files.write_rows(run_dir, REVISIONS, chains)
    run_files.write_rows(run_dir, run_files.JUDGMENTS, judgments)
    run_files.write_rows(run_dir, run_files.PAIRS, pairs)
    write_jsonl_atomic(run_dir / run_files.SFT, sft)
    rejects = [*read_rejects, *too_long, *report.rejects, *verify_rejects]
    run_files.write_rows(run_dir, run_files.REJECTS, [asdict(r) for r in rejects])
    publish_dataset(run_dir, pairs)
    publish_dataset(run_dir, sft, folder="sft_dataset", name="sft.parquet")

    margins = [p["margin"] for p in pairs]
    figures = {
        "prompts_read": len(prompts) + len(read_rejects),
        "prompts_rejected": len(read_rejects) + len(too_long),
        "chains": len(chains),
        "rounds": settings.rounds,
        "principles_drawn": dict(Counter(r.principle_id for c in chains for r in c.rounds)),
        "degenerate": dict(report.dropped),
        "verification": verification,
        "pairs": len(pairs),
        "sft_rows": len(sft),
        "mean_margin": round(sum(margins) / len(margins), 4) if margins else None,
        "openings": report.openings,
        "repeated_sentences": report.repeated_sentences,
        "seconds": round(revise_seconds, 2),
        "cache": revise_cache,
    }
    facts = CardFacts(
        experiment=cfg.experiment_name,
        constitution_name=constitution.name,
        constitution_version=constitution.version,
        constitution_sha256=sha,
        constitution_text=constitution.text,
        generator_model=engine.model_id,
        judge_model=judge_model,
        judge_method=judge_method or "none (verification off)",
        judge_template_sha256=template_sha,
        sampling=asdict(sampling),
        num_samples=1,
        pair_settings={
            "strategy": "revision_vs_initial",
            **{k: v for k, v in asdict(settings).items() if k != "degenerate"},
        },
        counts={
            "prompts": figures["prompts_read"],
            "chains (initial + rounds)": len(chains),
            "non-degenerate revisions": len(report.kept),
            "judged (each in 2 orders)": verification["judged"],
            "pairs": len(pairs),
            "sft rows": len(sft),
        },
        dropped={**report.dropped, **verification["dropped"]},
        rejects_by_reason=dict(
            Counter(
                f"{r.stage}: {re.sub(r'[0-9.]+', 'N', r.reason)}"
                for r in [*read_rejects, *too_long]
            )
        ),
        swap_consistency=verification.get("swap_consistency"),
        mean_margin=figures["mean_margin"] if settings.verify else None,
        extra_configs=[
            {"config_name": "sft", "data_files": [{"split": "train", "path": "sft.parquet"}]}
        ],
        extra_section=revise_section(figures),
    )
    write_text_atomic(run_dir / "README.md", render_card(facts))
    run_state.update_summary(run_dir, "revise", figures, done=done)


def run_revise_path(cfg: DictConfig, run_dir: Path, engines: EngineCache) -> None:
    """``charter run`` when the config has a ``revise`` section (e.g. ``experiment=cai_sl``)."""
    start = time.perf_counter()
    fingerprint = revise_fingerprint(cfg)
    finished = run_state.read_summary(run_dir).get(run_state.STAGES_KEY, {}).get("revise")
    if finished == fingerprint and all((run_dir / n).exists() for n in REVISE_OUTPUTS):
        console.print("revise: already complete in this run directory, skipped")
    else:
        run_revise(cfg, run_dir, engines)
    summary = run_state.update_summary(
        run_dir, "run", {"seconds": round(time.perf_counter() - start, 2)}
    )
    rev = summary["revise"]
    ver = rev["verification"]
    summary_table(
        f"charter run: {cfg.experiment_name} (critique -> revision)",
        {
            "prompts (read / rejected)": f"{rev['prompts_read']} / {rev['prompts_rejected']}",
            "chains": rev["chains"],
            "revise seconds": rev["seconds"],
            "degenerate dropped": ", ".join(f"{k}: {v}" for k, v in rev["degenerate"].items())
            or "none",
            "judge prefers revision": f"{ver['kept']} / {ver['judged']}"
            if ver["enabled"]
            else "verification off",
            "pairs / sft rows published": f"{rev['pairs']} / {rev['sft_rows']}",
            "top opening": rev["openings"][0][0] if rev["openings"] else "n/a",
            "total seconds": summary["run"]["seconds"],
            "output": str(run_dir),
        },
    )
