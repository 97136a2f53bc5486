"""Online DPO: labels that track the policy, round by round.

Each round samples from the *current* policy with the generate stage, judges the samples under
the constitution with the judge stage, selects pairs with the pairs stage, and takes a DPO step
on them; the next round samples from the updated model. These are the pipeline's own stage
functions, so online and offline data are made the same way and differ only in whose samples
are judged. Every round's candidates, judgments and pairs are kept under ``round_N/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from charter import run_files
from charter.constitution import Constitution
from charter.errors import InputError
from charter.generators.engine import Engine, SamplingSettings
from charter.generators.stage import generate_candidates
from charter.judges.protocol import Judge
from charter.judges.stage import judge_candidates
from charter.pairs import PairSettings, make_pairs
from charter.records import PromptRecord, to_row
from charter.trainers.common import TrainResult
from charter.trainers.data import Provenance
from charter.trainers.dpo import DPOSettings, train_dpo


@dataclass(frozen=True)
class OnlineDPOSettings:
    """Online DPO.

    Args:
        rounds: sample -> judge -> pairs -> DPO cycles.
        prompts_per_round: prompts sampled each round (the prompt list is walked in order and
            wraps around, so rounds see different prompts while there are enough).
        num_samples: responses per prompt per round (2 is the minimum for a pair).
        dpo: the DPO step of every round; its ``policy`` is the starting model.
        pairs: how each round's pairs are selected.
    """

    rounds: int = 2
    prompts_per_round: int = 8
    num_samples: int = 2
    dpo: DPOSettings = field(default_factory=DPOSettings)
    pairs: PairSettings = field(default_factory=PairSettings)


def _round_prompts(prompts: Sequence[PromptRecord], n: int, r: int) -> list[PromptRecord]:
    return [prompts[(r * n + i) % len(prompts)] for i in range(min(n, len(prompts)))]


def train_online_dpo(
    settings: OnlineDPOSettings,
    prompts: Sequence[PromptRecord],
    policy_engine: Callable[[str], Engine],
    sampling: SamplingSettings,
    judge: Judge,
    constitution: Constitution,
    out_dir: Path,
    *,
    seed: int = 0,
) -> TrainResult:
    """Run the rounds; the last round's model is the result.

    Args:
        policy_engine: loads a sampling engine for a model folder (the current policy).
        sampling: how the policy samples (its seed is offset by the round).
        judge: any charter judge (on its own, frozen engine).

    Returns:
        the final model, every round's DPO losses in order, and per-round counts in ``metrics``.
    """
    from datasets import Dataset

    if settings.num_samples < 2:
        raise InputError("online DPO needs num_samples >= 2 to form pairs", field="num_samples")
    policy = settings.dpo.policy
    losses: list[float] = []
    per_round: list[dict[str, Any]] = []
    result: TrainResult | None = None
    for r in range(settings.rounds):
        round_dir = out_dir / f"round_{r}"
        engine = policy_engine(policy)
        sets, _ = generate_candidates(
            _round_prompts(prompts, settings.prompts_per_round, r),
            engine,
            replace(sampling, seed=sampling.seed + r),
            settings.num_samples,
        )
        del engine
        judgments, rankings, _ = judge_candidates(sets, judge, constitution, seed=seed + r)
        made = make_pairs(
            sets, judgments, rankings, settings.pairs, constitution_sha256=constitution.sha256
        )
        rows = [to_row(p) for p in made.pairs]
        run_files.write_rows(round_dir, run_files.CANDIDATES, sets)
        run_files.write_rows(round_dir, run_files.JUDGMENTS, judgments)
        run_files.write_rows(round_dir, run_files.PAIRS, rows)
        if not rows:  # every pair dropped (identical samples, low margins): nothing to learn
            per_round.append({"round": r, "pairs": 0, "skipped": "no pairs"})
            continue
        pairs = Dataset.from_list(rows)
        step = replace(settings.dpo, policy=str(policy))
        result, _ = train_dpo(step, pairs, Provenance.of(pairs, round_dir), round_dir)
        losses += result.losses
        policy = str(result.model_dir)
        per_round.append({"round": r, "pairs": len(rows), **result.metrics})
    if result is None:
        raise InputError("no round produced a pair to train on", field="trainer.rounds")
    return TrainResult(model_dir=Path(policy), losses=losses, metrics={"rounds": per_round})
