"""Structured-verdict judge: the judge writes its verdict as JSON that a schema validates.

For each order of a comparison the judge generates one JSON object (schema in
``charter/schemas/verdict.schema.json``): a short critique, the letter of the better response
and a confidence from 0 (a guess) to 1 (certain). The order's probability that the response
shown as A wins is ``0.5 + confidence / 2`` if it says "A", ``0.5 - confidence / 2`` if "B",
clamped to a band (a written verdict's "1.0" is rarely earned), and the two orders are combined
as in :mod:`charter.judges.debias`.

On engines that can constrain decoding to a JSON schema (``engine.supports_json_schema``, e.g.
vLLM's structured outputs) generation is constrained. Otherwise the reply is prefilled with the
object's opening and parsed afterwards. A reply that does not parse or validate is retried once,
with the problem shown to the judge; if the retry fails too, that order is recorded as an
abstention: probability 0.5, ``abstained: true`` and every raw reply kept. Never a crash, never
a silent default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from charter.generators.engine import Engine, SamplingSettings
from charter.judges.context import ContextNeed, chat_needs
from charter.judges.debias import OrderCombine, combine_orders
from charter.judges.pairwise import SYSTEM_PROMPT
from charter.judges.prompting import load_template, render_pairwise
from charter.judges.protocol import Comparison
from charter.records import Chat, Judgment

PREFILL = '{"critique": "'
RETRY_REQUEST = (
    "Your reply could not be used: {problem}. Reply again with only the JSON object, with the "
    'keys "critique", "better" ("A" or "B") and "confidence" (0 to 1).'
)


@cache
def verdict_schema(name: str = "verdict") -> dict[str, Any]:
    """The JSON schema ``charter/schemas/{name}.schema.json``."""
    path = resources.files("charter") / "schemas" / f"{name}.schema.json"
    return json.loads(path.read_text(encoding="utf-8"))


def parse_verdict(text: str, validator: Draft202012Validator) -> tuple[dict[str, Any] | None, str]:
    """The first JSON object in ``text`` if it validates, else None and what is wrong with it."""
    start = text.find("{")
    if start < 0:
        return None, "no JSON object in the reply"
    try:
        verdict, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at character {start + exc.pos})"
    errors = sorted(validator.iter_errors(verdict), key=lambda e: [str(p) for p in e.path])
    if errors:
        # every problem at once, so the retry can fix them all
        found = [f"{'.'.join(map(str, e.path)) or 'verdict'}: {e.message}" for e in errors]
        return None, "; ".join(found)[:400]
    return verdict, ""


@dataclass
class _Order:
    """One order's attempts: every reply, the problem with each, the verdict if one validated."""

    chat: Chat
    replies: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    verdict: dict[str, Any] | None = None
    out_of_room: bool = False  # a retry that would not fit the context: abstain instead

    def row(self) -> dict[str, Any]:
        return {
            "replies": self.replies,
            "problems": self.problems,
            "verdict": self.verdict,
            "abstained": self.verdict is None,
        }


class StructuredVerdictJudge:
    """Generate a JSON verdict per order, validate it, retry once, abstain rather than guess.

    Args:
        engine: the model that judges.
        max_new_tokens: budget for one JSON reply (critique included).
        temperature: sampling temperature (0: greedy).
        clamp: ``(low, high)`` band for each order's probability.
        combine: how the two orders are combined.
        retries: how many times a failed reply is retried before abstaining.
        template: the judge prompt in ``charter/judges/templates``.
        schema: the verdict schema in ``charter/schemas`` (``{schema}.schema.json``).
        use_examples: include the principle's few-shot examples, if it has any.
        seed: sampling seed (used only when temperature > 0).
        system_prompt: the judge's system turn.
    """

    method = "structured_verdict"

    def __init__(
        self,
        engine: Engine,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        clamp: tuple[float, float] = (0.05, 0.95),
        combine: OrderCombine = "log_odds",
        retries: int = 1,
        template: str = "structured",
        schema: str = "verdict",
        use_examples: bool = False,
        seed: int = 0,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        low, high = clamp
        if not 0.0 < low < 0.5 < high < 1.0:
            raise ValueError(f"clamp must satisfy 0 < low < 0.5 < high < 1, got {clamp}")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.engine = engine
        self.model_id = engine.model_id
        self.clamp = (low, high)
        self.combine = combine
        self.retries = retries
        self.template = load_template(template)
        self.schema = verdict_schema(schema)
        self.validator = Draft202012Validator(self.schema)
        self.use_examples = use_examples
        self.system_prompt = system_prompt
        self.sampling = SamplingSettings(
            max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
        )
        self.constrained = bool(getattr(engine, "supports_json_schema", False))

    def chat(self, comparison: Comparison, *, swapped: bool) -> Chat:
        """The judge conversation for one order (``swapped``: b is shown as response A)."""
        first, second = comparison.response_a, comparison.response_b
        if swapped:
            first, second = second, first
        user = render_pairwise(
            self.template,
            comparison.messages,
            comparison.principle,
            first,
            second,
            use_examples=self.use_examples,
        )
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": user},
        ]

    def _sent(self, chats: Sequence[Chat]) -> list[Chat]:
        """The chats as :meth:`_generate` sends them."""
        if self.constrained:
            return list(chats)
        return [[*chat, {"role": "assistant", "content": PREFILL}] for chat in chats]

    def context_needs(self, comparisons: Sequence[Comparison]) -> list[ContextNeed]:
        """Per comparison, its longer order's first chat plus a full reply; a retry that would
        not fit after that abstains (see :meth:`_attempt`)."""
        chats = [self._sent([self.chat(c, swapped=s) for s in (False, True)]) for c in comparisons]
        return chat_needs(self.engine, chats, room=self.sampling.max_new_tokens)

    def _generate(self, chats: Sequence[Chat]) -> list[str]:
        """One reply per chat: constrained where the engine can, else prefilled with ``{``."""
        if self.constrained:
            outs = self.engine.generate(chats, self.sampling, n=1, json_schema=self.schema)  # type: ignore[call-arg]
            return [out[0].text for out in outs]
        outs = self.engine.generate(self._sent(chats), self.sampling, n=1)
        return [PREFILL + out[0].text for out in outs]

    def _attempt(self, orders: Sequence[_Order]) -> None:
        """Generate for every order still without a verdict (one batched call)."""
        pending = [o for o in orders if o.verdict is None and not o.out_of_room]
        chats = []
        for order in pending:
            chat = list(order.chat)
            for reply, problem in zip(order.replies, order.problems, strict=True):
                retry = RETRY_REQUEST.format(problem=problem)
                chat += [
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": retry},
                ]
            chats.append(chat)
        if any(order.replies for order in pending):
            # a retry carries the failed reply: one that leaves no room to answer is not sent
            sizes = self.engine.count_tokens(self._sent(chats))
            roomy = [n < self.engine.context_length for n in sizes]
            for order, fits in zip(pending, roomy, strict=True):
                order.out_of_room = not fits
            pending = [o for o, fits in zip(pending, roomy, strict=True) if fits]
            chats = [c for c, fits in zip(chats, roomy, strict=True) if fits]
        for order, reply in zip(pending, self._generate(chats) if chats else [], strict=True):
            order.replies.append(reply)
            order.verdict, problem = parse_verdict(reply, self.validator)
            if order.verdict is None:
                order.problems.append(problem)

    def _first_logodds(self, order: _Order) -> float:
        """Log-odds that the response shown as A wins; 0 for an abstention."""
        if order.verdict is None:
            return 0.0
        half = float(order.verdict["confidence"]) / 2
        p = 0.5 + half if order.verdict["better"] == "A" else 0.5 - half
        low, high = self.clamp
        p = min(max(p, low), high)
        return math.log(p / (1 - p))

    def judge(self, comparisons: Sequence[Comparison]) -> list[Judgment]:
        """Both orders of every comparison, batched; failed replies retried together."""
        orders = [_Order(self.chat(c, swapped=s)) for c in comparisons for s in (False, True)]
        for _ in range(1 + self.retries):
            self._attempt(orders)
        judgments = []
        for i, c in enumerate(comparisons):
            first, swapped = orders[2 * i], orders[2 * i + 1]
            combined = combine_orders(
                self._first_logodds(first), -self._first_logodds(swapped), self.combine
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
                        "a_first": first.row(),
                        "b_first": swapped.row(),
                        "abstained": first.verdict is None and swapped.verdict is None,
                        "constrained": self.constrained,
                        "template_sha256": self.template.sha256,
                    },
                )
            )
        return judgments
