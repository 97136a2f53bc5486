"""Check that the judge really prefers each revision to the response it replaced.

Each (final revision, initial response) pair is judged by the configured judge, in both orders
as every judge must, under each principle the chain was revised under. The log-odds that the
revision is better are averaged over those principles; a pair is kept only when the margin
(2 * P(revision better) - 1) is positive and at least ``min_margin``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from charter.constitution import Constitution
from charter.judges.debias import sigmoid
from charter.judges.protocol import Comparison, Judge
from charter.records import Judgment, Reject
from charter.revisions.chain import RevisionChain

JUDGE_PREFERS_INITIAL = "judge does not prefer the revision"
BELOW_MARGIN = "judge margin below min_margin"
_EPS = 1e-12


def revision_id(chain: RevisionChain) -> str:
    return f"{chain.prompt_id}/revision-{len(chain.rounds)}"


def initial_id(chain: RevisionChain) -> str:
    return f"{chain.prompt_id}/initial"


@dataclass(frozen=True)
class Verdict:
    """The judge's view of one chain: P(revision better), combined over its principles."""

    p_revision: float
    principle_ids: list[str]
    swap_consistent: bool
    judge_model: str

    @property
    def margin(self) -> float:
        return 2 * self.p_revision - 1


@dataclass
class VerifyResult:
    kept: list[tuple[RevisionChain, Verdict]]
    judgments: list[Judgment] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)

    def fraction_kept(self, judged: int) -> float | None:
        return len(self.kept) / judged if judged else None


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def comparisons(chain: RevisionChain, constitution: Constitution) -> list[Comparison]:
    """The revision (as a) against the initial response (as b), once per distinct principle."""
    return [
        Comparison(
            prompt_id=chain.prompt_id,
            messages=chain.messages,
            candidate_a=revision_id(chain),
            response_a=chain.final,
            candidate_b=initial_id(chain),
            response_b=chain.initial,
            principle=constitution.principle(pid),
        )
        for pid in chain.principle_ids
    ]


def verify_revisions(
    chains: Sequence[RevisionChain],
    judge: Judge,
    constitution: Constitution,
    *,
    min_margin: float = 0.0,
    chunk_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Judge every chain's revision against its initial response; keep those the judge prefers.

    Returns:
        the kept chains with their verdicts, every judgment (for judgments.jsonl), and a reject
        with the margin for each dropped chain.
    """
    todo = [(chain, c) for chain in chains for c in comparisons(chain, constitution)]
    judgments: list[Judgment] = []
    for start in range(0, len(todo), chunk_size):
        chunk = [c for _, c in todo[start : start + chunk_size]]
        judgments.extend(judge.judge(chunk))
        if on_progress:
            on_progress(len(chunk))
    by_prompt: dict[str, list[Judgment]] = {}
    for j in judgments:
        by_prompt.setdefault(j.prompt_id, []).append(j)

    result = VerifyResult(kept=[], judgments=judgments)
    for chain in chains:
        own = by_prompt[chain.prompt_id]
        verdict = Verdict(
            p_revision=sigmoid(sum(_logit(j.p_a) for j in own) / len(own)),
            principle_ids=[j.principle_id for j in own],
            swap_consistent=all(j.swap_consistent for j in own),
            judge_model=own[0].judge_model,
        )
        reason = None
        if verdict.margin <= 0:
            reason = JUDGE_PREFERS_INITIAL
        elif verdict.margin < min_margin:
            reason = BELOW_MARGIN
        if reason is None:
            result.kept.append((chain, verdict))
            continue
        result.dropped[reason] += 1
        result.rejects.append(
            Reject(
                stage="revise",
                source=chain.source,
                field="revision",
                reason=f"{reason} (margin {verdict.margin:.3f}, min_margin {min_margin})",
                row={
                    "prompt_id": chain.prompt_id,
                    "p_revision": verdict.p_revision,
                    "principle_ids": verdict.principle_ids,
                    "swap_consistent": verdict.swap_consistent,
                },
            )
        )
    return result
