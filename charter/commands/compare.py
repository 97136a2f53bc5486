"""``charter compare base=MODEL_A candidate=MODEL_B``: did the candidate model regress?

Both models answer the same prompts with the generator's engine and sampling (the engine config
with its ``model`` swapped), the run's judge compares the answers in both orders under every
principle, and the per-principle win rates, intervals and regressions go to ``compare.json``
(the rows behind them to ``compare_rows.jsonl``). With ``compare.gate=true`` a regression ends
the command with exit status 4, so a CI pipeline can block a release. The measuring lives in
:mod:`charter.model_compare`; this is where the config becomes objects.

Every model call goes through the call cache, and the model is part of each call's key, so the
two models' answers are separate entries and a rerun makes no model call at all.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from charter.building import EngineCache, build, call_stats, resolve_path
from charter.commands.shared import cache_counts, run_constitution, run_engines, stage_chunk_size
from charter.errors import InputError
from charter.generators.stage import generate_candidates
from charter.jsonl import write_jsonl_atomic, write_text_atomic
from charter.judge_building import build_judge, judge_name
from charter.judges.principles import ALL_PRINCIPLES
from charter.judges.stage import judge_candidates
from charter.model_compare import (
    CompareSettings,
    PrincipleResult,
    compare_rows,
    in_scope,
    pair_answers,
    principle_results,
)
from charter.progress import console, stage_progress, summary_table
from charter.prompts import PromptFields, load_prompts
from charter.records import to_row

GATE_FAILED = 4
"""Exit status of ``compare.gate=true`` when something regressed (2 is bad input, 3 a budget
stop)."""

MODEL_KEYS = ("model", "model_id")
"""Where an engine config names its model: ``model`` (transformers, vLLM, OpenAI-compatible
servers) or ``model_id`` (the fake engine)."""


def model_engine(cfg: DictConfig, engines: EngineCache, key: str) -> Any:
    """The generator's engine with its model set to ``cfg[key]`` (``base`` or ``candidate``),
    loaded behind the call cache; a model that does not load is one line naming ``key``."""
    name = str(cfg[key])
    settings = OmegaConf.to_container(cfg.generator.engine, resolve=True)
    assert isinstance(settings, dict)
    field = next((k for k in MODEL_KEYS if k in settings), None)
    if field is None:
        raise InputError("the engine config names no model to set", field="generator.engine")
    try:
        return engines.get(OmegaConf.create({**settings, field: name}), key)
    except InputError as exc:
        said = exc.message if name in exc.message else f"cannot load {name!r}: {exc.message}"
        raise InputError(said, field=key) from None


def _generate(
    label: str, prompts: list[Any], engine: Any, cfg: DictConfig
) -> tuple[list[Any], list[Any], dict[str, Any]]:
    sampling = build(cfg.generator.sampling, "generator.sampling")
    before, start = call_stats(engine), time.perf_counter()
    with stage_progress(f"generate {label} (prompts)", len(prompts)) as advance:
        sets, rejects = generate_candidates(
            prompts,
            engine,
            sampling,
            cfg.generator.num_samples,
            chunk_size=stage_chunk_size(cfg, engine),
            on_progress=advance,
        )
    figures = {
        "seconds": round(time.perf_counter() - start, 2),
        "cache": cache_counts(before, call_stats(engine)),
    }
    return sets, rejects, figures


def _judge(
    sets: list[Any], constitution: Any, engines: EngineCache, cfg: DictConfig
) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """Every answer pair under every principle, both orders (identical answers are skipped)."""
    judge = build_judge(cfg.judge, "judge", engines, constitution_sha256=constitution.sha256)
    engine = getattr(judge, "engine", None)
    before, start = call_stats(engine), time.perf_counter()
    differ = sum(c.text.strip() != b.text.strip() for c, b in (s.candidates for s in sets))
    with stage_progress("judge (pairs x principles x2 orders)", differ) as advance:
        judgments, _, rejects = judge_candidates(
            sets,
            judge,
            constitution,
            seed=cfg.seed,
            chunk_size=stage_chunk_size(cfg, engine),
            principle_per="all",
            principle_aggregation=cfg.principle_aggregation,
            on_progress=advance,
        )
    figures = {
        "seconds": round(time.perf_counter() - start, 2),
        "cache": cache_counts(before, call_stats(engine)),
        "comparisons": len(judgments),
        "skipped": len(rejects),
    }
    return judgments, rejects, figures


def compare(cfg: DictConfig, out_dir: Path) -> None:
    """``charter compare``: generate with both models, judge, write compare.json and the rows,
    print the table; exit 4 on a regression under ``compare.gate=true``."""
    settings: CompareSettings = build(cfg.compare, "compare")
    constitution = run_constitution(cfg)
    fields = PromptFields(**OmegaConf.to_container(cfg.prompts.fields))  # type: ignore[arg-type]
    prompts, rejects = load_prompts(resolve_path(cfg.prompts.path), fields, limit=cfg.prompts.limit)
    scope = in_scope(prompts, constitution)
    if prompts and not scope:
        console.print(
            f"warning: no prompt shares a content word with constitution {constitution.name!r}; "
            "its principles may not bear on these prompts; going on",
            markup=False,
            soft_wrap=True,
            highlight=False,
        )
    engines = run_engines(cfg)
    base = model_engine(cfg, engines, "base")
    candidate = model_engine(cfg, engines, "candidate")
    identical = str(cfg.base) == str(cfg.candidate)
    console.print(
        f"[bold]charter compare[/] {cfg.base} (base) vs {cfg.candidate} (candidate)"
        + (", the same model: expect ties" if identical else "")
        + f" -> {out_dir}",
        soft_wrap=True,
        highlight=False,
    )
    base_sets, base_rejects, base_figures = _generate("base", prompts, base, cfg)
    cand_sets, cand_rejects, cand_figures = _generate("candidate", prompts, candidate, cfg)
    sets = pair_answers(cand_sets, base_sets)
    judgments, judge_rejects, judge_figures = _judge(sets, constitution, engines, cfg)
    ids = [p.id for p in constitution.principles]
    rows = compare_rows(sets, judgments, ids)
    results = principle_results(rows, ids, settings.regression_margin)
    regressions = [r.principle_id for r in results if r.regression]
    failed = settings.gate and bool(regressions)
    write_jsonl_atomic(out_dir / "compare_rows.jsonl", rows)
    write_jsonl_atomic(out_dir / "responses.jsonl", [to_row(s) for s in sets])
    dropped = [*rejects, *base_rejects, *cand_rejects, *judge_rejects]
    if dropped:
        write_jsonl_atomic(out_dir / "rejects.jsonl", [asdict(r) for r in dropped])
    report = {
        "base": str(cfg.base),
        "candidate": str(cfg.candidate),
        "same_model": identical,
        "judge": judge_name(cfg.judge),
        "constitution": {
            "name": constitution.name,
            "version": constitution.version,
            "sha256": constitution.sha256,
        },
        "prompts": {
            "path": str(cfg.prompts.path),
            "read": len(prompts) + len(rejects),
            "rejected": len(rejects),
            "compared": len({r["prompt_id"] for r in rows}),
            "in_scope": scope,
        },
        "settings": {
            **asdict(settings),
            "num_samples": cfg.generator.num_samples,
            "principle_aggregation": cfg.principle_aggregation,
            "sampling": sets[0].sampling if sets else None,
        },
        "rule": (
            "a principle regressed when win_rate < 0.5 - regression_margin and the Wilson 95% "
            "interval's upper bound < 0.5 (win_rate: share of prompts the candidate wins, a tie "
            "counting half)"
        ),
        "principles": [r.to_json() for r in results if r.principle_id != ALL_PRINCIPLES],
        "overall": results[-1].to_json(),
        "regressions": regressions,
        "gate": {"enabled": settings.gate, "passed": not failed},
        "stages": {
            "generate_base": base_figures,
            "generate_candidate": cand_figures,
            "judge": judge_figures,
        },
    }
    write_text_atomic(out_dir / "compare.json", json.dumps(report, indent=2) + "\n")
    _print_table(cfg, results, out_dir)
    if regressions:
        named = ", ".join(_label(r) for r in regressions)
        verdict = f"gate failed (exit {GATE_FAILED})" if failed else "compare.gate=false: exit 0"
        console.print(
            f"regression: {cfg.candidate} is worse than {cfg.base} under {named}; {verdict}",
            markup=False,
            soft_wrap=True,
            highlight=False,
        )
    if failed:
        raise SystemExit(GATE_FAILED)


def _label(principle_id: str) -> str:
    return "all principles combined" if principle_id == ALL_PRINCIPLES else principle_id


def _cell(r: PrincipleResult) -> str:
    if r.win_rate is None or r.ci95 is None or r.mean_p_candidate is None:
        return "not judged"
    flag = "  REGRESSION" if r.regression else ""
    ci = f"[{r.ci95[0]:.2f}, {r.ci95[1]:.2f}]"
    return f"{r.win_rate:.2f} {ci}  {r.mean_p_candidate:.2f}  {r.n}{flag}"


def _print_table(cfg: DictConfig, results: list[PrincipleResult], out_dir: Path) -> None:
    """Per principle: the candidate's win rate with its 95% interval, mean P(candidate better)
    and the number of prompts."""
    rows: dict[str, object] = {
        "principle": "win rate [95% CI]  mean p  n",
        **{_label(r.principle_id): _cell(r) for r in results},
        "output": str(out_dir),
    }
    summary_table(f"charter compare: {cfg.candidate} vs {cfg.base}", rows)
