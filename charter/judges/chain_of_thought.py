"""Pairwise chain-of-thought judge: a short critique first, then the verdict's probability.

The judge writes a critique of both responses under the principle (greedy by default), and the
label is the renormalised probability of "A" vs "B" read right after the critique. Both orders
are scored and combined as in :mod:`charter.judges.debias`. Following the Constitutional AI
paper, each order's probability is clamped to a band (0.4-0.6 by default): after a written
argument, models are overconfident, and a clamped soft label trains better reward models.
Critiques are kept in ``raw``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from charter.generators.engine import Engine, SamplingSettings
from charter.judges.context import ContextNeed, chat_needs
from charter.judges.debias import OrderCombine, combine_orders
from charter.judges.pairwise import SYSTEM_PROMPT, PairwiseLogprobJudge
from charter.judges.protocol import Comparison
from charter.records import Chat, Judgment

CRITIQUE_PREFIX = "Let's compare the two responses step by step."
VERDICT_PREFIX = "\nTherefore, the better response is ("


def _clamped_logodds(logprobs: dict[str, float], first: str, low: float, high: float) -> float:
    """Log-odds that ``first`` wins, with its probability clamped to [low, high]."""
    other = "B" if first == "A" else "A"
    p = math.exp(logprobs[first]) / (math.exp(logprobs[first]) + math.exp(logprobs[other]))
    p = min(max(p, low), high)
    return math.log(p / (1 - p))


class PairwiseCoTJudge:
    """Critique, then read P("A") vs P("B"); both orders; clamped soft labels.

    Args:
        engine: the model that judges (it both writes the critique and scores the verdict).
        critique_tokens: budget for the critique.
        temperature: critique sampling temperature (0: greedy).
        clamp: ``(low, high)`` band for each order's probability; ``(0, 1)`` turns it off.
        combine: how the two orders are combined.
        template: the pairwise template name (shared with the plain pairwise judge).
        seed: critique sampling seed (used only when temperature > 0).
    """

    method = "pairwise_chain_of_thought"

    def __init__(
        self,
        engine: Engine,
        *,
        critique_tokens: int = 96,
        temperature: float = 0.0,
        clamp: tuple[float, float] = (0.4, 0.6),
        combine: OrderCombine = "log_odds",
        template: str = "pairwise",
        seed: int = 0,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        low, high = clamp
        if not 0.0 <= low < 0.5 < high <= 1.0:
            raise ValueError(f"clamp must satisfy 0 <= low < 0.5 < high <= 1, got {clamp}")
        self.engine = engine
        self.model_id = engine.model_id
        self.clamp = (max(low, 1e-6), min(high, 1 - 1e-6))
        self.combine = combine
        self.sampling = SamplingSettings(
            max_new_tokens=critique_tokens, temperature=temperature, seed=seed
        )
        # the plain pairwise judge renders the same comparison prompt; reuse it
        self._prompt = PairwiseLogprobJudge(engine, template=template, system_prompt=system_prompt)
        self.template = self._prompt.template

    def _critique_chat(self, comparison: Comparison, *, swapped: bool) -> Chat:
        chat = self._prompt.chat(comparison, swapped=swapped)
        return [*chat[:-1], {"role": "assistant", "content": CRITIQUE_PREFIX}]

    def context_needs(self, comparisons: Sequence[Comparison]) -> list[ContextNeed]:
        """Per comparison, its longer verdict chat: both prefixes, a critique of the full
        ``critique_tokens`` budget, and the answer token."""
        prefixes = {"role": "assistant", "content": f"{CRITIQUE_PREFIX} {VERDICT_PREFIX}"}
        chats = [
            [[*self._critique_chat(c, swapped=s)[:-1], prefixes] for s in (False, True)]
            for c in comparisons
        ]
        return chat_needs(self.engine, chats, room=self.sampling.max_new_tokens + 1)

    def judge(self, comparisons: Sequence[Comparison]) -> list[Judgment]:
        """Two batched calls: critiques for every order, then verdicts after them."""
        chats = [self._critique_chat(c, swapped=s) for c in comparisons for s in (False, True)]
        critiques = [out[0].text for out in self.engine.generate(chats, self.sampling, n=1)]
        verdict_chats = [
            [
                *chat[:-1],
                {
                    "role": "assistant",
                    "content": f"{CRITIQUE_PREFIX} {critique.strip()}{VERDICT_PREFIX}",
                },
            ]
            for chat, critique in zip(chats, critiques, strict=True)
        ]
        scores = self.engine.choice_logprobs(verdict_chats, ["A", "B"])
        low, high = self.clamp
        judgments = []
        for i, c in enumerate(comparisons):
            first, swapped = scores[2 * i], scores[2 * i + 1]
            combined = combine_orders(
                _clamped_logodds(first, "A", low, high),
                _clamped_logodds(swapped, "B", low, high),
                self.combine,
            )
            judgments.append(
                Judgment(
                    prompt_id=c.prompt_id,
                    candidate_a=c.candidate_a,
                    candidate_b=c.candidate_b,
                    principle_id=c.principle.id,
                    p_first_order=combined.p_first_order,
                    p_swapped=combined.p_swapped,
                    p_a=combined.p_a,
                    swap_consistent=combined.swap_consistent,
                    judge_model=self.model_id,
                    judge_method=self.method,
                    raw={
                        "critique_a_first": critiques[2 * i],
                        "critique_b_first": critiques[2 * i + 1],
                        "logprobs_a_first": first,
                        "logprobs_b_first": swapped,
                        "template_sha256": self.template.sha256,
                    },
                )
            )
        return judgments
