"""``charter pairs``: select and filter a run's preference pairs prompt by prompt, publish the
dataset folder and Parquet file, and write the dataset card."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from charter import run_files, run_state
from charter.building import EngineCache, build
from charter.commands.shared import publish_dataset_from, run_constitution
from charter.commands.stage_settings import stage_fingerprint, stream_window
from charter.dataset_card import (
    CardFacts,
    judge_section,
    principle_section,
    render_card,
    vector_counts,
)
from charter.errors import InputError
from charter.exports import with_score_columns
from charter.jsonl import read_jsonl, write_text_atomic
from charter.pairs import make_pairs
from charter.records import CandidateSet, Judgment, Reject, to_row
from charter.streaming import in_step, windows_of


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
