"""A cascade of judges, cheap first: a stronger (dearer) judge sees only what a cheaper one is
unsure of.

Every comparison goes to the first tier. A verdict is *unsure* when its confidence,
``max(p_a, 1 - p_a)``, is below ``escalate_below`` (calibrated where the tier has
``calibration=FILE``, raw otherwise), or when the two orders disagreed on the winner
(``escalate_swap_inconsistent``). Unsure comparisons go to the next tier, and so on; what the last
tier still finds unsure is marked ``needs_human`` (``charter review export`` takes those first).

Each judgment is the verdict of the tier that decided it, with ``raw["cascade"]`` recording that
tier and what every tier it passed through said. Tiers are built on first use, so a tier that no
comparison reaches never loads its model. Per tier, the cascade counts comparisons, seconds
(model load apart), prompt tokens and escalations (:attr:`CascadeJudge.tier_stats`), which the
judge stage writes to ``summary.json`` with an estimate of what the last tier alone would have
cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from charter.judges.context import ContextNeed, needs_of
from charter.judges.protocol import Comparison, Judge
from charter.records import Judgment


@dataclass
class TierStats:
    """What one tier did over the whole stage (the cascade is called once per chunk)."""

    comparisons: int = 0
    escalated: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0
    prompt_tokens: int | None = None
    loaded: bool = False


class CascadeJudge:
    """Judge with the first tier; escalate unsure verdicts to the next.

    Args:
        tiers: name -> a no-argument callable building that tier's judge, cheapest first.
        escalate_below: a verdict whose confidence max(p, 1 - p) is below this goes up a tier.
        escalate_swap_inconsistent: a verdict whose two orders disagree goes up a tier too.
    """

    method = "cascade"

    def __init__(
        self,
        tiers: Mapping[str, Callable[[], Judge]],
        *,
        escalate_below: float = 0.75,
        escalate_swap_inconsistent: bool = True,
    ) -> None:
        if not tiers:
            raise ValueError("a cascade needs at least one tier")
        if not 0.5 <= escalate_below <= 1.0:
            raise ValueError(f"escalate_below must be in [0.5, 1], got {escalate_below}")
        self._builders = dict(tiers)
        self._judges: dict[str, Judge] = {}
        self.escalate_below = escalate_below
        self.escalate_swap_inconsistent = escalate_swap_inconsistent
        self.tier_stats = {name: TierStats() for name in self._builders}
        self.model_id = "cascade(" + ",".join(self._builders) + ")"

    def _tier(self, name: str) -> Judge:
        if name not in self._judges:
            start = time.perf_counter()
            self._judges[name] = self._builders[name]()
            self.tier_stats[name].load_seconds += time.perf_counter() - start
            self.tier_stats[name].loaded = True
        return self._judges[name]

    def unsure(self, j: Judgment) -> bool:
        """The escalation rule."""
        if self.escalate_swap_inconsistent and not j.swap_consistent:
            return True
        return max(j.p_a, 1.0 - j.p_a) < self.escalate_below

    def context_needs(self, comparisons: Sequence[Comparison]) -> list[ContextNeed]:
        """What the first tier needs: every comparison goes to it. A later tier that cannot
        read an escalated comparison leaves it to a human (see :meth:`judge`)."""
        first = self._tier(next(iter(self._builders)))
        needs = needs_of(first)
        return needs(comparisons) if needs else [ContextNeed(0, 0) for _ in comparisons]

    def judge(self, comparisons: Sequence[Comparison]) -> list[Judgment]:
        decided: list[Judgment | None] = [None] * len(comparisons)
        trail: list[list[dict[str, Any]]] = [[] for _ in comparisons]
        pending = list(range(len(comparisons)))
        unread: list[int] = []  # escalated, but too long for the next tier's context
        names = list(self._builders)
        for depth, name in enumerate(names):
            if not pending:
                break
            judge = self._tier(name)
            needs = needs_of(judge) if depth else None
            if needs:
                fits = [n.fits for n in needs([comparisons[i] for i in pending])]
                unread += [i for i, ok in zip(pending, fits, strict=True) if not ok]
                pending = [i for i, ok in zip(pending, fits, strict=True) if ok]
                if not pending:
                    break
            stats = self.tier_stats[name]
            tokens_before = prompt_tokens_of(judge)
            start = time.perf_counter()
            verdicts = judge.judge([comparisons[i] for i in pending])
            stats.seconds += time.perf_counter() - start
            stats.comparisons += len(pending)
            tokens_after = prompt_tokens_of(judge)
            if tokens_after is not None:
                spent = tokens_after - (tokens_before or 0)
                stats.prompt_tokens = (stats.prompt_tokens or 0) + spent
            unsure = []
            for i, j in zip(pending, verdicts, strict=True):
                flagged = self.unsure(j)
                trail[i].append(
                    {
                        "tier": name,
                        "judge_model": j.judge_model,
                        "judge_method": j.judge_method,
                        "p_a": j.p_a,
                        "p_first_order": j.p_first_order,
                        "p_swapped": j.p_swapped,
                        "swap_consistent": j.swap_consistent,
                        "unsure": flagged,
                    }
                )
                decided[i] = j
                if flagged:
                    unsure.append(i)
            if depth < len(names) - 1:
                stats.escalated += len(unsure)
            pending = unsure
        needs_human = {*pending, *unread}
        out = []
        for i, j in enumerate(decided):
            assert j is not None
            raw = {
                **j.raw,
                "cascade": {
                    "decided_by": trail[i][-1]["tier"],
                    "needs_human": i in needs_human,
                    "tiers": trail[i],
                },
            }
            out.append(replace(j, judge_method=f"cascade:{j.judge_method}", raw=raw))
        return out

    def summary(self) -> dict[str, Any]:
        """Per-tier figures and what running only the last tier on everything would cost."""
        names = list(self._builders)
        total = self.tier_stats[names[0]].comparisons
        tiers = {}
        for name in names:
            s = self.tier_stats[name]
            tiers[name] = {
                **asdict(s),
                "seconds": round(s.seconds, 2),
                "load_seconds": round(s.load_seconds, 2),
                "escalation_rate": round(s.escalated / s.comparisons, 4) if s.comparisons else None,
            }
        last = self.tier_stats[names[-1]]
        if last.comparisons:
            per = last.seconds / last.comparisons
            tokens = (
                round(last.prompt_tokens / last.comparisons * total)
                if last.prompt_tokens is not None
                else None
            )
            estimate = {
                "comparisons": total,
                "seconds": round(per * total, 2),
                "prompt_tokens": tokens,
                "basis": f"the last tier's measured cost per comparison × {total} comparisons",
            }
        else:
            estimate = {
                "comparisons": total,
                "seconds": None,
                "prompt_tokens": None,
                "basis": "the last tier judged nothing, so its cost was not measured",
            }
        spent = sum(s.seconds for s in self.tier_stats.values())
        return {
            "escalate_below": self.escalate_below,
            "escalate_swap_inconsistent": self.escalate_swap_inconsistent,
            "comparisons": total,
            "seconds": round(spent, 2),
            "tiers": tiers,
            "last_tier_only_estimate": estimate,
        }


def prompt_tokens_of(judge: Judge) -> int | None:
    """Prompt tokens a judge has sent so far: its token-counting engine's, or its own count (a
    reward model's), looking through a calibration wrapper; None where nothing counts them."""
    engine = getattr(judge, "engine", None)
    tokens = getattr(engine, "prompt_tokens", None)
    if tokens is None:
        tokens = getattr(judge, "prompt_tokens", None)
    inner = getattr(judge, "inner", None)
    if tokens is None and inner is not None:
        return prompt_tokens_of(inner)
    return tokens if isinstance(tokens, int) else None
