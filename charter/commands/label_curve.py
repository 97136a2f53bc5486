"""``charter train experiment=label_curve``: reward models on 25..400 human or judge labels.

Like every command module, this is where the config becomes objects; the measuring lives in
:mod:`charter.trainers.label_curve`. Everything that can refuse the input (settings, files, the
counts against the data) is checked before the judge or any model is loaded, so a typo costs a
second, not a model load. ``charter train`` then writes ``report.html`` as for any training run
(``report=false`` skips it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from charter import run_files
from charter.building import EngineCache, build, open_call_cache, resolve_path
from charter.commands.eval_judge import judge_label
from charter.commands.shared import stage_chunk_size
from charter.constitution import load_constitution
from charter.human_prefs import load_human_pairs
from charter.jsonl import write_jsonl_atomic, write_text_atomic
from charter.judge_building import build_judge
from charter.progress import console, stage_progress, summary_table
from charter.records import Reject, to_row
from charter.trainers.common import model_path
from charter.trainers.label_curve import (
    CurvePoint,
    CurveSplit,
    JudgeLabel,
    LabelCurveSettings,
    PooledPair,
    TrainAndScore,
    judge_labels,
    longer_response_baseline,
    measure_curve,
    split_pool,
    token_lengths,
    train_and_score,
)
from charter.trainers.label_curve_plot import CURVE_PLOT, write_curve_plot

RESULT = "label_curve.json"
HELDOUT = "heldout.jsonl"
VERDICTS = "verdicts.jsonl"
STAGE = "label_curve"


def _load_pool(files: list[Path]) -> tuple[list[PooledPair], list[Reject], list[dict[str, Any]]]:
    """Every file's usable pairs, the rows refused, and each file's name, hash and counts.

    An id already seen in an earlier file is refused too: held-out and training sets are told
    apart by id.
    """
    pool: list[PooledPair] = []
    rejects: list[Reject] = []
    facts: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for path in files:
        pairs, refused = load_human_pairs(path)
        rejects += refused
        kept = 0
        for pair in pairs:
            if pair.id in seen:
                reason = f"id {pair.id!r} is also in {seen[pair.id]}"
                rejects.append(Reject(STAGE, f"{path}:{pair.id}", reason, field="id"))
                continue
            seen[pair.id] = str(path)
            pool.append(PooledPair(str(path), pair))
            kept += 1
        facts.append(
            {
                "file": str(path),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "pairs": kept,
                "rejected_rows": len(refused),
            }
        )
    return pool, rejects, facts


def _fitting(
    pool: list[PooledPair], settings: LabelCurveSettings
) -> tuple[list[PooledPair], list[Reject]]:
    """The pairs whose two conversations fit ``reward.optim.max_length`` tokens.

    TRL's reward trainer drops longer pairs without a word, which would make "400 labels" fewer;
    they leave the pool (held-out included, so models are scored on pairs like those they can
    train on) and go to rejects.jsonl instead.
    """
    from transformers import AutoTokenizer

    limit = settings.reward.optim.max_length
    tokenizer = AutoTokenizer.from_pretrained(model_path(settings.reward.base_model))
    kept, rejects = [], []
    for item in pool:
        chosen, rejected = token_lengths(tokenizer, item.pair)
        if max(chosen, rejected) <= limit:
            kept.append(item)
            continue
        reason = (
            f"longer than label_curve.reward.optim.max_length={limit} tokens (chosen {chosen}, "
            f"rejected {rejected}): the reward trainer would drop it, so it could not count"
        )
        rejects.append(
            Reject(
                STAGE,
                f"{item.file}:{item.pair.id}",
                reason,
                field="label_curve.reward.optim.max_length",
            )
        )
    return kept, rejects


def _write_result(out_dir: Path, result: dict[str, Any], points: list[CurvePoint]) -> None:
    result["rows"] = [asdict(p) for p in points]
    write_text_atomic(out_dir / RESULT, json.dumps(result, indent=2) + "\n")


def _train_fn(settings: LabelCurveSettings) -> TrainAndScore:
    """The train-and-score step ``label_curve.method`` names."""
    if settings.method == "full":
        return train_and_score
    from charter.trainers.reward_probe import FrozenFeatureProbe

    optim = settings.reward.optim
    return FrozenFeatureProbe(
        settings.reward.base_model,
        max_length=optim.max_length,
        device="cuda" if optim.on_gpu() else "cpu",
    )


def run_label_curve(
    cfg: DictConfig, out_dir: Path, *, train_fn: TrainAndScore | None = None
) -> None:
    """Train a reward model per (label count, label source) and score each on held-out pairs.

    Writes ``label_curve.json`` (rewritten after every model, so a stopped run keeps its points),
    ``heldout.jsonl``, ``verdicts.jsonl`` (the judge's verdicts on the training pairs, p_a =
    P(human choice better)), ``rejects.jsonl``, ``label_curve.png`` and each model's training log
    under ``models/{source}_{count}/``.

    Args:
        cfg: the composed ``charter train`` config with a ``label_curve`` node.
        out_dir: the run directory.
        train_fn: the train-and-score step (tests pass a fake).

    Raises:
        InputError: bad settings, an unreadable file, or more training pairs asked for than the
            data holds beside the held-out pairs; raised before any model or judge is loaded.
    """
    settings: LabelCurveSettings = build(cfg.label_curve, "label_curve")
    files = [resolve_path(f) for f in settings.data]
    pool, rejects, data_facts = _load_pool(files)
    split_pool(pool, settings)  # the cheap check first: a too-large count needs no tokenizer
    # a head reads truncated conversations; only full fine-tuning (TRL) drops long pairs
    pool, too_long = _fitting(pool, settings) if settings.method == "full" else (pool, [])
    split: CurveSplit = split_pool(pool, settings)
    rejects += too_long
    for facts in data_facts:
        facts["too_long"] = sum(r.source.startswith(f"{facts['file']}:") for r in too_long)
        facts["usable"] = facts["pairs"] - facts["too_long"]
    heldout = [p.pair for p in split.heldout]
    write_jsonl_atomic(
        out_dir / HELDOUT,
        [{"id": p.pair.id, "file": p.file, "dimension": p.pair.dimension} for p in split.heldout],
    )
    if rejects:
        write_jsonl_atomic(out_dir / run_files.REJECTS, [asdict(r) for r in rejects])
    baseline = longer_response_baseline(heldout)
    result: dict[str, Any] = {
        "settings": asdict(settings),
        "data": data_facts,
        "usable_pairs": len(pool),
        "heldout": {
            "pairs": len(heldout),
            "ids": [p.id for p in heldout],
            "by_file": {
                f["file"]: sum(p.file == f["file"] for p in split.heldout) for f in data_facts
            },
        },
        "longer_response_baseline": baseline,
        "judge": None,
    }
    _write_result(out_dir, result, [])

    labels = None
    if "judge" in settings.labels:
        labels, result["judge"] = _judge_labels(cfg, settings, split, out_dir)
        _write_result(out_dir, result, [])

    points: list[CurvePoint] = []

    def finished(point: CurvePoint) -> None:
        points.append(point)
        _write_result(out_dir, result, points)
        console.print(
            f"[bold]label curve[/] {point.source} x {point.count}: held-out accuracy "
            f"{point.accuracy:.3f} [{point.ci95[0]:.3f}, {point.ci95[1]:.3f}] "
            f"({point.seconds:.0f} s)",
            soft_wrap=True,
        )

    measure_curve(
        settings,
        split,
        labels,
        out_dir,
        source_name=", ".join(str(f) for f in files),
        judge_model=result["judge"]["judge"] if result["judge"] else None,
        train_fn=train_fn or _train_fn(settings),
        on_point=finished,
    )
    write_curve_plot(
        out_dir / CURVE_PLOT,
        points,
        baseline["accuracy"],
        title=f"{len(heldout)} held-out human pairs",
    )
    summary_table(f"charter train: {cfg.experiment_name}", _summary(result, points, out_dir))


def _judge_labels(
    cfg: DictConfig, settings: LabelCurveSettings, split: CurveSplit, out_dir: Path
) -> tuple[list[JudgeLabel], dict[str, Any]]:
    """The configured judge's labels for the training pairs (the largest count's; the smaller
    counts reuse them), its verdicts in ``verdicts.jsonl``, and its figures for the result."""
    constitution = load_constitution(resolve_path(cfg.constitution.path))
    engines = EngineCache(open_call_cache(cfg))
    has_engine = cfg.judge.get("engine") is not None and cfg.judge.get("tiers") is None
    engine = engines.get(cfg.judge.engine, "judge.engine") if has_engine else None
    judge = build_judge(
        cfg.judge, "judge", engines, constitution_sha256=constitution.sha256, engine=engine
    )
    pairs = [p.pair for p in split.train]
    with stage_progress("label-curve (judging the training pairs)", len(pairs)) as advance:
        labels, judgments, report = judge_labels(
            pairs,
            judge,
            constitution,
            seed=settings.seed,
            chunk_size=stage_chunk_size(cfg, engine),
            on_progress=advance,
        )
    write_jsonl_atomic(
        out_dir / VERDICTS,
        [
            {**to_row(j), "human_choice": "chosen", "judge_label_agrees": x.agrees, "coin": x.coin}
            for j, x in zip(judgments, labels, strict=True)
        ],
    )
    figures = ("agreement", "swap_consistency", "length_baseline_agreement", "seconds")
    return labels, {
        "judge": judge_label(cfg),
        "constitution": constitution.name,
        "constitution_sha256": constitution.sha256,
        "pairs": len(labels),
        "label_agreement": round(sum(x.agrees for x in labels) / len(labels), 4),
        "coin_labels": sum(x.coin for x in labels),
        **{k: round(getattr(report, k), 4) for k in figures},
    }


def _summary(result: dict[str, Any], points: list[CurvePoint], out_dir: Path) -> dict[str, Any]:
    rows: dict[str, Any] = {"held-out pairs": result["heldout"]["pairs"]}
    for p in points:
        agrees = f"; labels agree {p.label_agreement:.2f}" if p.label_agreement is not None else ""
        rows[f"{p.source} labels x {p.count}"] = (
            f"{p.accuracy:.3f} [{p.ci95[0]:.3f}, {p.ci95[1]:.3f}]{agrees}"
        )
    rows["longer-response baseline"] = result["longer_response_baseline"]["accuracy"]
    if result["judge"]:
        rows["judge agreement on the training pairs"] = result["judge"]["label_agreement"]
    rows["output"] = str(out_dir)
    return rows
