"""An evaluator for the loop that never saw the loop's labels: a reward model trained on people.

A win rate read by the judge that labelled the training pairs can rise because the policy learnt
that judge's tastes (length, phrasing) rather than anything people want. So the loop also asks a
second referee: a reward model trained only on human-labelled pairs. Its own agreement with
people is measured on human pairs it did not train on and reported beside its verdict, because a
referee is only worth its agreement.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from charter.errors import InputError
from charter.human_prefs import HumanPair, load_human_pairs
from charter.records import CandidateSet
from charter.trainers.data import Provenance
from charter.trainers.loop import wilson_interval
from charter.trainers.reward import RewardModelScorer, RewardSettings, train_reward
from charter.trainers.reward_probe import FrozenFeatureProbe


@dataclass(frozen=True)
class HumanRewardEvaluator:
    """``loop.evaluator``: train a reward model on human pairs, then referee trained vs base.

    Args:
        human_pairs: a human-labelled JSONL file (``shared/data/human_prefs`` format) on the
            dimension the constitution is about (PandaLM for ``helpful``).
        heldout: this many pairs (seeded draw) are kept out of its training and measure its
            agreement with people.
        seed: the draw.
        method: ``head``, a linear head on the frozen base model's features
            (:mod:`charter.trainers.reward_probe`, minutes on a CPU), or ``full``, every weight
            fine-tuned with TRL (about 35 s per step of 8 PandaLM pairs on 2 CPU cores).
        reward: how it is trained (``eval_fraction`` and ``human_pairs`` are ignored: the
            held-out human pairs play that part; ``head`` uses its base model, max_length and
            seed only).
    """

    human_pairs: str = "../shared/data/human_prefs/pandalm_dev.jsonl"
    heldout: int = 100
    seed: int = 0
    method: Literal["head", "full"] = "head"
    reward: RewardSettings = field(default_factory=RewardSettings)


@dataclass(frozen=True)
class Verdict:
    """A share with its Wilson 95% interval and the mean soft probability behind it."""

    n: int
    rate: float
    ci95: tuple[float, float]
    mean_p: float

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "rate": round(self.rate, 4),
            "ci95": [round(x, 4) for x in self.ci95],
            "mean_p": round(self.mean_p, 4),
        }


def verdict(margins: Sequence[float]) -> Verdict:
    """How often the first side wins (margin > 0, ties half), and the mean of sigmoid(margin)."""
    wins = sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins)
    n = len(margins)
    soft = [1.0 / (1.0 + math.exp(-m)) for m in margins]
    return Verdict(n, wins / n if n else 0.0, wilson_interval(wins, n), sum(soft) / n if n else 0.5)


def human_pairs_dataset(pairs: Sequence[HumanPair]) -> Any:
    """Human pairs as TRL-shaped preference rows (chat prompt, assistant turns)."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": p.messages,
                "chosen": [{"role": "assistant", "content": p.chosen}],
                "rejected": [{"role": "assistant", "content": p.rejected}],
            }
            for p in pairs
        ]
    )


def split_human_pairs(
    path: Path, heldout: int, seed: int
) -> tuple[list[HumanPair], list[HumanPair]]:
    """A seeded (train, held-out) split of a human-pairs file, refusing one too small to split."""
    pairs, _ = load_human_pairs(path)
    if heldout < 1 or heldout >= len(pairs):
        raise InputError(
            f"loop.evaluator.heldout={heldout}, but the file has {len(pairs)} usable pairs: "
            "it must be at least 1 and leave some to train on",
            file=str(path),
            field="loop.evaluator.heldout",
        )
    order = list(pairs)
    random.Random(seed).shuffle(order)
    return order[heldout:], order[:heldout]


Margins = Callable[[Sequence[HumanPair]], list[float]]
"""r(chosen) − r(rejected) for each pair, under a trained reward model."""


@dataclass(frozen=True)
class Referee:
    """The trained evaluator, and how often it agrees with people on pairs it never saw."""

    margins: Margins
    model_dir: Path
    train_pairs: int
    agreement: Verdict
    longer_response_baseline: float

    def judge(self, sets: Sequence[CandidateSet]) -> Verdict:
        """Trained (candidate 0) vs base (candidate 1) on each head-to-head set."""
        pairs = [
            HumanPair(s.prompt_id, s.messages, s.candidates[0].text, s.candidates[1].text, "-")
            for s in sets
        ]
        return verdict(self.margins(pairs))


def _scorer_margins(scorer: RewardModelScorer) -> Margins:
    def margins(pairs: Sequence[HumanPair]) -> list[float]:
        prompts = [p.messages for p in pairs]
        chosen = scorer.score(prompts, [p.chosen for p in pairs])
        rejected = scorer.score(prompts, [p.rejected for p in pairs])
        return [c - r for c, r in zip(chosen, rejected, strict=True)]

    return margins


def train_referee(settings: HumanRewardEvaluator, path: Path, out_dir: Path) -> Referee:
    """Train the evaluator on the file's training split and measure it on the held-out split."""
    train, heldout = split_human_pairs(path, settings.heldout, settings.seed)
    data = human_pairs_dataset(train)
    reward = replace(settings.reward, eval_fraction=0.0, human_pairs=None)
    if settings.method == "head":
        probe = FrozenFeatureProbe(reward.base_model, max_length=reward.optim.max_length)
        weights, c = probe.fit(data, reward.optim.seed)
        model_dir = probe.write_head(out_dir, weights, c, len(train), str(path))
        margins: Margins = lambda pairs: probe.margins(weights, pairs)  # noqa: E731
    else:
        result = train_reward(reward, data, Provenance.of(data, path), out_dir)
        model_dir = result.model_dir
        margins = _scorer_margins(RewardModelScorer(result.model_dir))
    longer = sum(
        1.0 if len(p.chosen) > len(p.rejected) else 0.5 if len(p.chosen) == len(p.rejected) else 0
        for p in heldout
    )
    agreement = verdict(margins(heldout))
    return Referee(margins, model_dir, len(train), agreement, longer / len(heldout))
