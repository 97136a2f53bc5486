"""``charter calibrate``: fit the judge's probabilities to human labels, cross-validated.

The labels come from a human-labelled file (``data=``) judged now, or from a reviewed run
(``run_dir=``) whose verdicts and people's labels already exist; the fit lives in
:mod:`charter.judge_eval.calibration`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from charter import run_files
from charter.building import EngineCache, build, open_call_cache, resolve_path
from charter.commands.shared import stage_chunk_size
from charter.constitution import load_constitution
from charter.errors import InputError
from charter.human_prefs import HumanPair, load_human_pairs
from charter.jsonl import read_jsonl, write_jsonl_atomic, write_text_atomic
from charter.judge_building import build_judge, judge_fingerprint, judge_name
from charter.judge_eval.calibration import (
    FitSettings,
    JudgeSignals,
    LabelledSignals,
    fit_calibration,
)
from charter.judge_eval.evaluate import comparisons_for
from charter.judge_eval.reliability import plot_reliability, reliability
from charter.judges.stage import judge_in_chunks
from charter.progress import stage_progress, summary_table
from charter.records import Judgment, from_row, to_row


def _signals(pairs: list[HumanPair], judgments: list[Judgment]) -> list[LabelledSignals]:
    """Judgments made with a = the human choice, as labelled signals (label 1)."""
    return [
        LabelledSignals(j.principle_id, JudgeSignals.of(j, p.chosen, p.rejected), 1)
        for p, j in zip(pairs, judgments, strict=True)
    ]


def labelled_from_run(run_dir: Path) -> tuple[list[LabelledSignals], DictConfig, str]:
    """The human-labelled pairs of a reviewed run with the run's own judgments of them.

    Returns:
        the labelled signals, the run's judge config and its constitution's sha256.
    """
    reviewed = run_dir / "reviewed" / run_files.PAIRS
    if not reviewed.exists():
        raise InputError(
            f"no reviewed pairs; label a queue and run `charter review import {run_dir} FILE`",
            file=str(reviewed),
        )
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.exists():
        raise InputError("the run has no saved config (.hydra/config.yaml)", file=str(run_dir))
    config = OmegaConf.load(config_path)
    judgments = {
        frozenset((row["candidate_a"], row["candidate_b"])): row
        for _, row in read_jsonl(run_dir / run_files.JUDGMENTS)
    }
    rows, sha = [], ""
    for _, pair in read_jsonl(reviewed):
        if pair.get("label_source") != "human":
            continue
        sha = pair["constitution_sha256"]
        found = judgments.get(frozenset((pair["chosen_id"], pair["rejected_id"])))
        if found is None:
            continue
        j = from_row(Judgment, found)
        texts = {
            pair["chosen_id"]: pair["chosen"][-1]["content"],
            pair["rejected_id"]: pair["rejected"][-1]["content"],
        }
        signals = JudgeSignals.of(j, texts[j.candidate_a], texts[j.candidate_b])
        label = int(pair["chosen_id"] == j.candidate_a)
        rows.append(LabelledSignals(j.principle_id, signals, label))
    return rows, config.judge, sha


def calibrate(cfg: DictConfig, run_dir: Path) -> None:
    """``charter calibrate``: fit a calibration of the judge on human labels, cross-validated.

    With ``data=FILE`` the judge judges the labelled pairs (both orders, served from the call
    cache when it has judged them before); with ``run_dir=RUN`` the reviewed run's own judgments
    and human labels are used, and the calibration is for that run's judge.
    """
    settings: FitSettings = build(cfg.calibration, "calibration")
    if (cfg.get("data") is None) == (cfg.get("run_dir") is None):
        raise InputError("give one of data=FILE (human-labelled pairs) or run_dir=RUN (reviewed)")
    if cfg.get("run_dir") is not None:
        source = str(cfg.run_dir)
        rows, judge_node, constitution_sha = labelled_from_run(resolve_path(source))
        verdicts: list[dict[str, Any]] = []
        judge_seconds = None
    else:
        if cfg.judge.get("tiers") is not None:
            raise InputError(
                "a cascade is calibrated tier by tier: run calibrate with each tier's judge config",
                field="judge",
            )
        if cfg.judge.get("calibration"):
            raise InputError(
                "calibrate fits a new calibration from the raw judge; drop judge.calibration",
                field="judge.calibration",
            )
        path = resolve_path(cfg.data)
        source = str(path)
        pairs, _ = load_human_pairs(path, limit=cfg.limit)
        constitution = load_constitution(resolve_path(cfg.constitution.path))
        constitution_sha, judge_node = constitution.sha256, cfg.judge
        engines = EngineCache(open_call_cache(cfg))
        judge = build_judge(cfg.judge, "judge", engines, constitution_sha256=constitution_sha)
        comparisons = comparisons_for(pairs, constitution, seed=cfg.seed, principle=cfg.principle)
        start = time.perf_counter()
        with stage_progress("calibrate (comparisons)", len(comparisons)) as advance:
            chunk = stage_chunk_size(cfg, getattr(judge, "engine", None))
            judgments = judge_in_chunks(comparisons, judge, chunk, advance)
        judge_seconds = round(time.perf_counter() - start, 2)
        rows = _signals(pairs, judgments)
        verdicts = [{**to_row(j), "human_choice": "chosen"} for j in judgments]
    calibration, held_out = fit_calibration(
        rows,
        settings,
        judge_fingerprint=judge_fingerprint(judge_node),
        judge=judge_name(judge_node),
        constitution_sha256=constitution_sha,
        source=source,
    )
    write_text_atomic(run_dir / "calibration.json", calibration.to_json())
    if verdicts:
        write_jsonl_atomic(run_dir / "verdicts.jsonl", verdicts)
    metrics = {
        "judge": calibration.judge,
        "data": source,
        "n": calibration.n,
        "judge_seconds": judge_seconds,
        "features": calibration.features,
        "coefficients": calibration.pooled,
        "per_principle": sorted(calibration.per_principle),
        **calibration.cv,
    }
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_reliability(
        {
            "raw": reliability(held_out.on_label(held_out.raw)),
            "calibrated (CV)": reliability(held_out.on_label(held_out.calibrated)),
        },
        run_dir / "reliability.png",
        title=f"{calibration.judge}: raw vs calibrated",
    )
    before, after = calibration.cv["before"], calibration.cv["after"]

    def cell(block: dict[str, Any], key: str) -> str:
        m = block[key]
        return f"{m['value']:.3f} [{m['low']:.2f}, {m['high']:.2f}]"

    summary_table(
        f"charter calibrate: {calibration.judge}, {calibration.n} labelled pairs, "
        f"{calibration.cv['folds']}-fold CV, raw -> calibrated [95% interval]",
        {
            **{
                name: f"{cell(before, key)} -> {cell(after, key)}"
                for name, key in (
                    ("agreement", "agreement"),
                    ("length-ctrl agreement", "length_controlled_agreement"),
                    ("log-loss", "log_loss"),
                    ("Brier", "brier"),
                    ("ECE", "ece"),
                )
            },
            "fitted per principle": ", ".join(sorted(calibration.per_principle)) or "none (pooled)",
            "calibration": str(run_dir / "calibration.json"),
            "use it with": f"judge.calibration={run_dir / 'calibration.json'}",
        },
    )
    print(json.dumps(metrics), flush=True)
