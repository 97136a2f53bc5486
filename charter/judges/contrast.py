"""Likelihood-contrast judge: how much does stating the principle raise each response's likelihood?

For each response ``r`` of a comparison we look at ``log p(r | conversation, guided)`` minus
``log p(r | conversation, plain)``, where *guided* has a system turn that states the principle
and *plain* has the same system turn without it. The response the principle makes more likely
is the one the model thinks follows it better. Nothing is generated and no answer letter is
read, so a small model's letter bias ("B" every time) cannot enter, and there is no position:
each response is scored as itself, so swapping a and b flips the sign exactly and one order is
enough.

What the engine gives us, and what cancels. ``choice_logprobs(chat, [r_a, r_b])`` returns each
choice's summed log-prob *renormalised over the two choices*: ``s_x(chat) - Z(chat)`` with
``Z = logsumexp(s_a, s_b)``. Per chat, the difference ``s_a - s_b`` is exact (``Z`` cancels), so
the summed contrast

    D = [s_a(guided) - s_a(plain)] - [s_b(guided) - s_b(plain)]
      = [r_a - r_b](guided) - [r_a - r_b](plain)

is exact too. Per-response token means are *not* recoverable: dividing each response's own
contrast by its own length ``n_a``, ``n_b`` leaves an error of ``dZ * (1/n_a - 1/n_b)``,
``dZ = Z(guided) - Z(plain)``, and ``Z`` cannot be solved for from renormalised scores (two
chats give two independent differences for four unknown sums). So ``normalise="pair_tokens"``
(default) divides the exact ``D`` by the pair's mean response length: a per-token scale that
keeps the temperature meaningful for long and short responses alike, while every bit of it is
exact. ``normalise="sum"`` uses ``D`` as it is. The label is ``sigmoid(D' / temperature)``.

``condition="conversation"`` contrasts a different pair of chats with the same arithmetic: the
real conversation against a neutral one (the same system turn and one generic request). That is
the pointwise mutual information of each response with the conversation, log p(r | conversation)
- log p(r | neutral): the response that the conversation itself makes more likely is the more
specific, on-topic answer, and a generic reply that fits any request scores low. It reads no
principle, so it measures relevance, not harmlessness; it is a cheap signal for helpfulness
("surface form competition", Holtzman et al. 2021, for the idea of dividing out the prior).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from charter.constitution import Principle
from charter.generators.engine import Engine
from charter.judges.context import ContextNeed, chat_needs
from charter.judges.debias import sigmoid
from charter.judges.prompting import load_template
from charter.judges.protocol import Comparison
from charter.records import Chat, Judgment

BASE_SYSTEM_PROMPT = "You are a helpful AI assistant."
NEUTRAL_REQUEST = "Write a reply."
Normalise = Literal["pair_tokens", "sum"]
Condition = Literal["principle", "conversation"]


class LikelihoodContrastJudge:
    """Judge by how much the principle, stated up front, raises each response's likelihood.

    Args:
        engine: the model whose likelihoods are compared.
        temperature: scale of the (normalised) contrast in ``p_a = sigmoid(D / temperature)``.
        normalise: ``"pair_tokens"`` (divide by the pair's mean response length) or ``"sum"``.
        template: the guidance template in ``charter/judges/templates``.
        system_prompt: the base system turn of both conditions (a conversation's own system
            turn is used instead, when it has one).
        condition: what the guided chat adds over the plain one: the principle (``principle``)
            or the conversation itself against a neutral request (``conversation``).
    """

    method = "likelihood_contrast"

    def __init__(
        self,
        engine: Engine,
        *,
        temperature: float = 0.1,
        normalise: Normalise = "pair_tokens",
        template: str = "contrast_guidance",
        system_prompt: str = BASE_SYSTEM_PROMPT,
        condition: Condition = "principle",
    ) -> None:
        if condition not in ("principle", "conversation"):
            raise ValueError(f"condition must be 'principle' or 'conversation', got {condition!r}")
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        if normalise not in ("pair_tokens", "sum"):
            raise ValueError(f"normalise must be 'pair_tokens' or 'sum', got {normalise!r}")
        self.engine = engine
        self.model_id = engine.model_id
        self.temperature = temperature
        self.normalise = normalise
        self.template = load_template(template)
        self.system_prompt = system_prompt
        self.condition = condition
        if condition == "conversation":
            self.method = "conversation_pmi"

    def chats(self, messages: Chat, principle: Principle) -> tuple[Chat, Chat]:
        """The guided and the plain chat: identical except for the principle, or the
        conversation and a neutral request under the same system turn."""
        base = self.system_prompt
        rest = list(messages)
        if rest and rest[0]["role"] == "system":
            base, rest = rest[0]["content"], rest[1:]
        if self.condition == "conversation":
            system = {"role": "system", "content": base}
            return [system, *rest], [system, {"role": "user", "content": NEUTRAL_REQUEST}]
        guided = self.template.render(base=base, principle=principle)
        return (
            [{"role": "system", "content": guided}, *rest],
            [{"role": "system", "content": base}, *rest],
        )

    def response_tokens(self, plain: Chat, responses: Sequence[str]) -> list[int]:
        """Tokens of each response as the assistant's reply to ``plain`` (at least 1)."""
        # a chat ending with a user turn renders with the assistant header, as a reply would
        with_reply = [[*plain, {"role": "assistant", "content": r}] for r in responses]
        prompt, *replies = self.engine.count_tokens([plain, *with_reply])
        return [max(1, n - prompt) for n in replies]

    def context_needs(self, comparisons: Sequence[Comparison]) -> list[ContextNeed]:
        """Per comparison, the longer of its two chats followed by the longer response (the
        responses are the choices scored)."""
        scored = [c for c in comparisons if not _unscorable(c)]
        chats = []
        for c in scored:
            both = self.chats(c.messages, c.principle)
            replies = [{"role": "assistant", "content": r} for r in (c.response_a, c.response_b)]
            chats.append([[*chat, reply] for chat in both for reply in replies])
        needs = iter(chat_needs(self.engine, chats, room=0))
        limit = self.engine.context_length
        # an unscorable comparison is a tie the engine never sees
        return [ContextNeed(0, limit) if _unscorable(c) else next(needs) for c in comparisons]

    def judge(self, comparisons: Sequence[Comparison]) -> list[Judgment]:
        """One engine call per comparison (its two responses are that call's choices)."""
        judgments = []
        for c in comparisons:
            guided, plain = self.chats(c.messages, c.principle)
            unscorable = _unscorable(c)
            if unscorable:
                # identical choices cannot be scored against each other, and an empty reply has
                # no tokens to score: the contrast has no evidence either way, so it is a tie
                guided_gap = plain_gap = 0.0
            else:
                scores = self.engine.choice_logprobs([guided, plain], [c.response_a, c.response_b])
                guided_gap = scores[0][c.response_a] - scores[0][c.response_b]
                plain_gap = scores[1][c.response_a] - scores[1][c.response_b]
            tokens_a, tokens_b = self.response_tokens(plain, [c.response_a, c.response_b])
            contrast = guided_gap - plain_gap
            if self.normalise == "pair_tokens":
                contrast /= (tokens_a + tokens_b) / 2
            p_a = sigmoid(contrast / self.temperature)
            judgments.append(
                Judgment(
                    prompt_id=c.prompt_id,
                    candidate_a=c.candidate_a,
                    candidate_b=c.candidate_b,
                    principle_id=c.principle.id,
                    p_first_order=p_a,
                    p_swapped=p_a,
                    p_a=p_a,
                    swap_consistent=p_a != 0.5,
                    judge_model=self.model_id,
                    judge_method=self.method,
                    raw={
                        "logratio_guided": guided_gap,
                        "logratio_plain": plain_gap,
                        "contrast": contrast,
                        "tokens_a": tokens_a,
                        "tokens_b": tokens_b,
                        "unscorable": unscorable,
                        "template_sha256": self.template.sha256,
                    },
                )
            )
        return judgments


def _unscorable(c: Comparison) -> bool:
    """Identical choices cannot be scored against each other, and an empty reply has no tokens
    to score."""
    return c.response_a == c.response_b or not c.response_a or not c.response_b
