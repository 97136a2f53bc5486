"""``charter eval-judge``: a judge's agreement with human-labelled pairs.

Like every command module, this is where the config becomes objects; the measuring itself lives
in :mod:`charter.judge_eval`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from charter.building import EngineCache, open_call_cache, resolve_path
from charter.commands.shared import stage_chunk_size
from charter.constitution import load_constitution
from charter.errors import InputError
from charter.generators.counting import TokenCountingEngine
from charter.human_prefs import load_human_pairs
from charter.jsonl import write_jsonl_atomic, write_text_atomic
from charter.judge_building import build_judge, judge_name
from charter.judge_eval.evaluate import evaluate_judge
from charter.judge_eval.injection import ATTACKS
from charter.judge_eval.reliability import plot_reliability, reliability
from charter.judges.cascade import CascadeJudge, prompt_tokens_of
from charter.progress import stage_progress
from charter.records import to_row


def _judge_engine(cfg: DictConfig, engines: EngineCache) -> Any:
    """A token-counting engine for a judge that has one (None for tiers or a reward model)."""
    node = cfg.judge.get("engine")
    if node is None or cfg.judge.get("tiers") is not None:
        return None
    return TokenCountingEngine(engines.get(node, "judge.engine"))


def _prompt_tokens(judge: Any, engine: Any) -> int | None:
    if engine is not None:
        return engine.prompt_tokens
    if isinstance(judge, CascadeJudge):
        counts = [s.prompt_tokens for s in judge.tier_stats.values() if s.prompt_tokens]
        return sum(counts) if counts else None
    return prompt_tokens_of(judge)


def eval_judge(cfg: DictConfig, run_dir: Path) -> None:
    """``charter eval-judge``: agreement, biases, calibration and cost against human labels."""
    path = resolve_path(cfg.data)
    pairs, rejects = load_human_pairs(path, limit=cfg.limit)
    if not pairs:
        raise InputError("no usable human-labelled pairs", file=str(path))
    constitution = load_constitution(resolve_path(cfg.constitution.path))
    engines = EngineCache(open_call_cache(cfg))
    engine = _judge_engine(cfg, engines)
    judge = build_judge(
        cfg.judge, "judge", engines, constitution_sha256=constitution.sha256, engine=engine
    )
    attacked_n = min(cfg.injection_pairs, len(pairs)) * len(ATTACKS)
    with stage_progress("eval-judge (comparisons)", len(pairs) + attacked_n) as advance:
        report, judgments, attacked = evaluate_judge(
            pairs,
            judge,
            constitution,
            seed=cfg.seed,
            principle=cfg.principle,
            chunk_size=stage_chunk_size(cfg, engine),
            injection_pairs=cfg.injection_pairs,
            on_progress=advance,
        )
    tokens = _prompt_tokens(judge, engine)
    report = replace(
        report,
        tokens_per_comparison=tokens / (len(judgments) + len(attacked))
        if tokens is not None
        else None,
    )
    rows = [{**to_row(j), "human_choice": "chosen"} for j in judgments]
    write_jsonl_atomic(run_dir / "verdicts.jsonl", rows)
    if attacked:
        write_jsonl_atomic(run_dir / "injection_verdicts.jsonl", [to_row(j) for j in attacked])
    if rejects:
        write_jsonl_atomic(run_dir / "rejects.jsonl", [asdict(r) for r in rejects])
    result = {
        "judge": judge_label(cfg),
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(report).items()},
    }
    if isinstance(judge, CascadeJudge):
        result["cascade"] = judge.summary()
    bins = reliability([j.p_a for j in judgments])
    reliability_rows = [asdict(b) for b in bins]
    write_text_atomic(run_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(run_dir / "reliability.json", json.dumps(reliability_rows, indent=2) + "\n")
    plot_reliability({result["judge"]: bins}, run_dir / "reliability.png", title=result["judge"])
    print(json.dumps(result), flush=True)


def judge_label(cfg: DictConfig) -> str:
    """A short name for a judge configuration: method, model and the options that differ."""
    label = judge_name(cfg.judge)
    if cfg.judge.get("condition", "principle") != "principle":  # judge=pmi vs judge=contrast
        name, _, model = label.partition("(")
        label = f"{name}[{cfg.judge.condition}]({model}"
    if cfg.judge.get("calibration"):
        label += " calibrated"
    return label


# --- charter calibrate ---------------------------------------------------------------------
