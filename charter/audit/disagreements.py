"""The judge's verdict on every labelled pair, the held-in/held-out split, the disagreements.

Pairs are judged as ``charter eval-judge`` judges them (both orders, the human choice as
candidate a, so ``p_a`` is the judge's probability that people's choice is better), under the
principle drawn for the pair from the seed, or under ``principle=ID``.

The split is a hash of the seed and the pair id, salted so it is independent of the principle
draw (which hashes the same two things): a pair is held out or not whatever else is in the file,
on every run, and the held-out pairs are not biased towards any principle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from charter.constitution import Constitution, Principle
from charter.human_prefs import HumanPair
from charter.judge_eval.evaluate import comparisons_for
from charter.judges.protocol import Comparison, Judge
from charter.judges.stage import judge_in_chunks
from charter.records import Judgment

_SPLIT_SALT = "charter-audit-split"


def hard_agreement(p_human: float) -> float:
    """1 when the judge prefers people's choice, 0.5 for an exact tie, 0 when it prefers the other
    (the per-row agreement ``charter eval-judge`` averages)."""
    return 1.0 if p_human > 0.5 else 0.5 if p_human == 0.5 else 0.0


def is_held_out(pair_id: str, seed: int, fraction: float) -> bool:
    """Whether a pair is in the held-out split: a uniform hash of (seed, id) below ``fraction``."""
    material = "\x1f".join((_SPLIT_SALT, str(seed), pair_id)).encode()
    u = int.from_bytes(hashlib.sha256(material).digest()[:8], "big") / 2**64
    return u < fraction


@dataclass(frozen=True)
class LabelledVerdict:
    """One labelled pair, the judge's verdict on it under its principle, and its split."""

    pair: HumanPair
    judgment: Judgment
    held_out: bool

    @property
    def principle_id(self) -> str:
        return self.judgment.principle_id

    @property
    def agreement(self) -> float:
        return hard_agreement(self.judgment.p_a)

    @property
    def disagrees(self) -> bool:
        """The judge prefers the response people rejected (an exact tie is not a disagreement)."""
        return self.judgment.p_a < 0.5


def judge_labelled(
    pairs: Sequence[HumanPair],
    judge: Judge,
    constitution: Constitution,
    *,
    seed: int,
    principle: str | None,
    held_out_fraction: float,
    chunk_size: int,
    on_progress: Callable[[int], None] | None = None,
) -> list[LabelledVerdict]:
    """Judge every pair under its drawn (or the fixed) principle and place it in its split."""
    comparisons = comparisons_for(pairs, constitution, seed=seed, principle=principle)
    judgments = judge_in_chunks(comparisons, judge, chunk_size, on_progress)
    return [
        LabelledVerdict(pair, j, is_held_out(pair.id, seed, held_out_fraction))
        for pair, j in zip(pairs, judgments, strict=True)
    ]


def agreement_under(
    rows: Sequence[LabelledVerdict],
    principles: Sequence[Principle],
    judge: Judge,
    *,
    chunk_size: int,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Per principle id, the judge's agreement with people on each row when judged under it.

    All (principle, row) comparisons go to the judge in one stream of chunks, principle by
    principle, so the rows of one principle share the judge template's principle prefix.
    """
    comparisons = [
        Comparison(
            prompt_id=r.pair.id,
            messages=r.pair.messages,
            candidate_a="chosen",
            response_a=r.pair.chosen,
            candidate_b="rejected",
            response_b=r.pair.rejected,
            principle=p,
        )
        for p in principles
        for r in rows
    ]
    judgments = judge_in_chunks(comparisons, judge, chunk_size, on_progress)
    n = len(rows)
    return {
        p.id: [hard_agreement(j.p_a) for j in judgments[k * n : (k + 1) * n]]
        for k, p in enumerate(principles)
    }
