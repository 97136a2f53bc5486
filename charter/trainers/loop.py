"""The closed loop's measuring end: trained policy vs base policy, judged in both orders.

Both policies answer the same held-out prompts (never used for the training pairs) once each;
the judge compares the two answers under the constitution with each shown first once, so the
judge's position bias cancels. The win rate comes with a Wilson 95% interval, because with a
few dozen prompts the interval, not the point, says whether anything changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from charter.constitution import Constitution
from charter.generators.engine import Engine, SamplingSettings
from charter.generators.stage import generate_candidates
from charter.judges.protocol import Judge
from charter.judges.stage import judge_candidates
from charter.records import Candidate, CandidateSet, Judgment, PromptRecord
from charter.trainers.dpo import DPOSettings
from charter.trainers.reward import RewardSettings

if TYPE_CHECKING:
    from charter.trainers.independent_eval import HumanRewardEvaluator


@dataclass(frozen=True)
class LoopSettings:
    """``charter train experiment=loop_cpu``: data -> reward model -> DPO -> head-to-head.

    Args:
        heldout_prompts: the last N prompts are kept out of the training data and used for
            the trained-vs-base comparison.
        reward: the reward model step (trained on the loop's pairs).
        dpo: the DPO step; its ``policy`` should be the generator's model (the base).
        ppo: also train with PPO (``charter.trainers.ppo``) on the reward model and compare.
        evaluator: a second referee that never saw the loop's labels (a reward model trained
            on human pairs, :mod:`charter.trainers.independent_eval`); null: the judge only.
    """

    heldout_prompts: int = 8
    reward: RewardSettings = field(default_factory=RewardSettings)
    dpo: DPOSettings = field(default_factory=DPOSettings)
    ppo: bool = False
    evaluator: HumanRewardEvaluator | None = None


def wilson_interval(wins: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (ties may count half a win)."""
    if n == 0:
        return 0.0, 1.0
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class HeadToHead:
    """Trained vs base on held-out prompts. A tie (identical answers, p = 0.5) counts half."""

    prompts: int
    wins: float
    win_rate: float
    ci95: tuple[float, float]
    mean_p_trained: float
    swap_consistency: float | None
    sets: list[CandidateSet]
    judgments: list[Judgment]

    def summary(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "win_rate": round(self.win_rate, 4),
            "ci95": [round(x, 4) for x in self.ci95],
            "mean_p_trained": round(self.mean_p_trained, 4),
            "swap_consistency": self.swap_consistency,
            **self.policy_moved(),
        }

    def policy_moved(self) -> dict[str, Any]:
        """Did training change the answers at all? Identical answers and lengths, side by side."""
        n = len(self.sets) or 1
        same = sum(s.candidates[0].text == s.candidates[1].text for s in self.sets)

        def tokens(i: int) -> float:
            return round(sum(s.candidates[i].num_tokens or 0 for s in self.sets) / n, 1)

        return {
            "identical_answers": same,
            "mean_tokens_trained": tokens(0),
            "mean_tokens_base": tokens(1),
        }


def pair_up(trained: Sequence[CandidateSet], base: Sequence[CandidateSet]) -> list[CandidateSet]:
    """One set per prompt holding the trained answer (first) and the base answer."""
    by_id = {s.prompt_id: s for s in base}
    sets = []
    for t in trained:
        b = by_id.get(t.prompt_id)
        if b is None:
            continue
        ct, cb = t.candidates[0], b.candidates[0]
        sets.append(
            CandidateSet(
                prompt_id=t.prompt_id,
                messages=t.messages,
                candidates=[
                    Candidate(f"{t.prompt_id}/trained", ct.text, ct.finish_reason, ct.num_tokens),
                    Candidate(f"{t.prompt_id}/base", cb.text, cb.finish_reason, cb.num_tokens),
                ],
                generator_model=f"{t.generator_model} vs {b.generator_model}",
                sampling=t.sampling,
            )
        )
    return sets


def head_to_head(
    prompts: Sequence[PromptRecord],
    trained: Engine,
    base: Engine,
    sampling: SamplingSettings,
    judge: Judge,
    constitution: Constitution,
    *,
    seed: int = 0,
) -> HeadToHead:
    """Sample one answer per prompt from each policy and judge trained vs base, both orders."""
    trained_sets, _ = generate_candidates(prompts, trained, sampling, 1)
    base_sets, _ = generate_candidates(prompts, base, sampling, 1)
    sets = pair_up(trained_sets, base_sets)
    judgments, _, _ = judge_candidates(sets, judge, constitution, seed=seed)
    p_by_prompt = {j.prompt_id: j.p_a for j in judgments}  # a is the trained answer
    # identical answers are not judged (the stage skips them): a tie, p = 0.5
    ps = [p_by_prompt.get(s.prompt_id, 0.5) for s in sets]
    wins = sum(1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in ps)
    n = len(ps)
    return HeadToHead(
        prompts=n,
        wins=wins,
        win_rate=wins / n if n else 0.0,
        ci95=wilson_interval(wins, n),
        mean_p_trained=sum(ps) / n if n else 0.5,
        swap_consistency=round(sum(j.swap_consistent for j in judgments) / len(judgments), 4)
        if judgments
        else None,
        sets=sets,
        judgments=judgments,
    )


def reward_model_preference(scorer: Any, sets: Sequence[CandidateSet]) -> float | None:
    """Share of head-to-head prompts where the reward model scores the trained answer higher."""
    if not sets:
        return None
    prompts = [s.messages for s in sets]
    trained = scorer.score(prompts, [s.candidates[0].text for s in sets])
    base = scorer.score(prompts, [s.candidates[1].text for s in sets])
    wins = sum(1.0 if t > b else 0.5 if t == b else 0.0 for t, b in zip(trained, base, strict=True))
    return round(wins / len(sets), 4)
