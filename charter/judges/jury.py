"""A jury: several judges score every comparison, and their soft labels are pooled.

Different judging methods fail differently (a letter-biased multiple-choice judge, a pointwise
scorer with flat scores, a likelihood contrast that follows length), so a weighted pool can be
steadier than any one of them. Each member judges the whole batch with the shared engine; the
jury's ``p_first_order``, ``p_swapped`` and ``p_a`` are the weighted means of the members' (as
probabilities, or as log-odds with ``pool="log_odds"``), and every member's own label and raw
output stay in ``raw["members"]``, so agreement between members can be measured
(:mod:`charter.judge_eval.agreement`) and any member's labels recovered without rerunning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from charter.generators.engine import Engine
from charter.judges.context import ContextNeed, needs_of
from charter.judges.debias import sigmoid
from charter.judges.protocol import Comparison, Judge
from charter.records import Judgment

Pool = Literal["probability", "log_odds"]
_EPS = 1e-6


def pool_labels(ps: Sequence[float], weights: Sequence[float], how: Pool) -> float:
    """Weighted mean of probabilities, or of their log-odds (then mapped back)."""
    total = sum(weights)
    if how == "probability":
        return sum(w * p for w, p in zip(weights, ps, strict=True)) / total
    if how == "log_odds":
        logits = [math.log(max(p, _EPS) / max(1 - p, _EPS)) for p in ps]
        return sigmoid(sum(w * x for w, x in zip(weights, logits, strict=True)) / total)
    raise ValueError(f"unknown pool {how!r}; use 'probability' or 'log_odds'")


def _built(member: Callable[..., Judge] | Judge, engine: Engine) -> Judge:
    """A member as a judge: built judges pass through, builders get the shared engine."""
    if hasattr(member, "judge") and not isinstance(member, type):
        return member  # type: ignore[return-value]
    return member(engine=engine)  # type: ignore[operator]


class JuryJudge:
    """Pool the soft labels of several member judges that share one engine.

    Args:
        engine: the shared model, handed to every member.
        members: name -> a callable that builds the member from the engine (in configs, a judge
            config with ``_partial_: true``), or an already built judge.
        weights: name -> weight (missing names weigh 1); weights must be positive.
        pool: ``"probability"`` (weighted mean of probabilities) or ``"log_odds"``.
    """

    method = "jury"

    def __init__(
        self,
        engine: Engine,
        *,
        members: Mapping[str, Callable[..., Judge] | Judge],
        weights: Mapping[str, float] | None = None,
        pool: Pool = "probability",
    ) -> None:
        if not members:
            raise ValueError("a jury needs at least one member")
        weights = dict(weights or {})
        unknown = set(weights) - set(members)
        if unknown:
            raise ValueError(f"weights name judges that are not members: {sorted(unknown)}")
        if any(w <= 0 for w in weights.values()):
            raise ValueError(f"weights must be positive, got {weights}")
        if pool not in ("probability", "log_odds"):
            raise ValueError(f"unknown pool {pool!r}; use 'probability' or 'log_odds'")
        self.engine = engine
        self.model_id = engine.model_id
        self.pool = pool
        self.members: dict[str, Judge] = {
            name: _built(member, engine) for name, member in members.items()
        }
        self.weights = {name: float(weights.get(name, 1.0)) for name in self.members}

    def context_needs(self, comparisons: Sequence[Comparison]) -> list[ContextNeed]:
        """Per comparison, the most any member needs (every member reads every comparison)."""
        measured = [m(comparisons) for m in map(needs_of, self.members.values()) if m]
        if not measured:
            return [ContextNeed(0, self.engine.context_length) for _ in comparisons]
        return [max(n, key=lambda x: x.tokens - x.limit) for n in zip(*measured, strict=True)]

    def judge(self, comparisons: Sequence[Comparison]) -> list[Judgment]:
        """Every member judges the batch; labels are pooled per comparison."""
        verdicts = {name: judge.judge(comparisons) for name, judge in self.members.items()}
        names = list(self.members)
        weights = [self.weights[n] for n in names]
        judgments = []
        for i, c in enumerate(comparisons):
            mine = [verdicts[n][i] for n in names]
            p_first = pool_labels([j.p_first_order for j in mine], weights, self.pool)
            p_swapped = pool_labels([j.p_swapped for j in mine], weights, self.pool)
            p_a = pool_labels([j.p_a for j in mine], weights, self.pool)
            judgments.append(
                Judgment(
                    prompt_id=c.prompt_id,
                    candidate_a=c.candidate_a,
                    candidate_b=c.candidate_b,
                    principle_id=c.principle.id,
                    p_first_order=p_first,
                    p_swapped=p_swapped,
                    p_a=p_a,
                    swap_consistent=(p_first > 0.5) == (p_swapped > 0.5) and p_first != 0.5,
                    judge_model=self.model_id,
                    judge_method=self.method,
                    raw={
                        "pool": self.pool,
                        "members": {
                            n: {
                                "judge_method": j.judge_method,
                                "weight": self.weights[n],
                                "p_first_order": j.p_first_order,
                                "p_swapped": j.p_swapped,
                                "p_a": j.p_a,
                                "swap_consistent": j.swap_consistent,
                                "raw": j.raw,
                            }
                            for n, j in zip(names, mine, strict=True)
                        },
                    },
                )
            )
        return judgments
