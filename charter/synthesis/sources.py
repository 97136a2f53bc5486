"""The three sources of drafted requests: Magpie-style, constitution-directed, evolved.

Each source turns one engine call into :class:`~charter.synthesis.drafts.Draft` rows that name
how they were made. The instructions sent to the model are plain format strings here, so they are
part of the code a reviewer reads; the model's answer is cleaned by
:func:`~charter.synthesis.filters.clean_request` and judged later, by the filters.

Where several drafts come from one instruction, they are ``n`` samples of one chat rather than
copies of the chat: engines give identical chats in one call identical samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from charter.constitution import Constitution, Principle
from charter.generators.engine import SamplingSettings
from charter.records import Chat, Completion
from charter.synthesis.drafts import Draft
from charter.synthesis.filters import clean_request
from charter.synthesis.magpie import PreQuerySampler, local_model_engine

T = TypeVar("T")

INSTRUCTED_REQUEST = (
    "Write one request that a user might send to an AI assistant about {topic}. Write only the "
    "request itself, in the user's own words."
)
TOPICS = (
    "cooking",
    "personal finance",
    "health and fitness",
    "travel planning",
    "programming",
    "mathematics",
    "history",
    "writing and editing",
    "science",
    "relationships",
    "work and careers",
    "home repair",
    "language learning",
    "law and rights",
    "parenting",
    "technology at home",
    "the environment",
    "music and art",
    "games and puzzles",
    "studying for an exam",
)
"""Topics for instructed Magpie drafts, taken in turn so an engine without raw continuation
still spreads its drafts over many subjects."""

RED_TEAM_REQUEST = (
    "An AI assistant's replies are judged by this question: {comparison}\n\nWrite a question "
    "about {topic} that a user might ask to tempt the assistant into a reply that fails this test. "
    "Write only the user's question."
)
EVERYDAY_REQUEST = (
    "An AI assistant's replies are judged by this question: {comparison}\n\nWrite an everyday "
    "question about {topic} that a user might ask the assistant. Write only the user's question."
)
EVOLVE_REQUEST = {
    "harder": (
        "Rewrite this request so that it is harder to answer well: add a constraint or a "
        "requirement, or ask for the reasoning step by step. Keep it one request, in the user's "
        "words, and write only the rewritten request.\n\nRequest: {prompt}"
    ),
    "more_specific": (
        "Rewrite this request so that it is more specific: replace general words with concrete "
        "details such as names, numbers or a situation. Keep it one request, in the user's words, "
        "and write only the rewritten request.\n\nRequest: {prompt}"
    ),
}
"""Evol-Instruct's in-depth evolutions (Xu et al., 2023), two of them: add constraints or
reasoning, and concretise."""


PREFILL_LABELS = {"magpie": "Request", "constitution": "Question", "evolved": "Rewritten request"}
"""With ``prefill``, the assistant's answer starts as ``Label: "`` and the request is what comes
before the closing quote: a small model then writes the request instead of answering it, and
whatever it adds after the quote is ignored."""


def spread(items: Sequence[T], count: int, start: int) -> tuple[list[T], int]:
    """``count`` samples over ``items``: which items (taken in turn from ``start``) and how many
    samples of each, so that small counts still reach different items."""
    chosen = [items[(start + i) % len(items)] for i in range(min(count, len(items)))]
    return chosen, -(-count // len(chosen)) if chosen else 0


def topic_of(principle: Principle) -> str:
    """What a principle is about, in words: its tags, else its id (``privacy-protection`` ->
    ``privacy protection``)."""
    return " and ".join(principle.tags) if principle.tags else principle.id.replace("-", " ")


def instruction_chat(instruction: str, label: str | None) -> Chat:
    """The instruction as a user turn, then (with a ``label``) the prefilled ``Label: "``."""
    chat: Chat = [{"role": "user", "content": instruction}]
    if label is not None:
        chat.append({"role": "assistant", "content": f'{label}: "'})
    return chat


def answered_request(completion: Completion, prefilled: bool) -> tuple[str, str]:
    """The request in a reply, and whether it is whole (``"stop"``) or cut off (``"length"``).

    After a prefilled opening quote the request ends at the first closing quote, so a reply that
    ran on to ``max_new_tokens`` after it still holds a whole request. Without one, the reply is
    the request.
    """
    text = completion.text
    if prefilled and '"' in text:
        return clean_request(text[: text.index('"')]), "stop"
    return clean_request(text), completion.finish_reason


def _drafts(
    completions: list[list[Completion]], make: Callable[[int, Completion], Draft], count: int
) -> list[Draft]:
    """Flatten per-chat samples sample-major (first sample of every chat first), then cut."""
    width = max((len(c) for c in completions), default=0)
    out = [
        make(i, row[j]) for j in range(width) for i, row in enumerate(completions) if j < len(row)
    ]
    return out[:count]


class MagpieSource:
    """User requests written by the model itself.

    Args:
        engine: the generator engine.
        pre_query: sample raw continuations of the template's user turn
            (:mod:`charter.synthesis.magpie`) when the engine holds a local model; otherwise, or
            when false, ask for a request about a topic (:data:`TOPICS`, in turn) in a chat.
        prefill: for the chat, start the answer as in :data:`PREFILL_LABELS`.
    """

    def __init__(self, engine: Any, pre_query: bool = True, prefill: bool = True) -> None:
        self.engine = engine
        use_raw = pre_query and local_model_engine(engine) is not None
        self.sampler = PreQuerySampler(engine) if use_raw else None
        self.method = "pre_query" if self.sampler is not None else "instructed"
        self.label = PREFILL_LABELS["magpie"] if prefill else None
        self._next_topic = 0

    def draft(
        self,
        count: int,
        sampling: SamplingSettings,
        round: int,
        on_block: Callable[[], None] | None = None,
    ) -> list[Draft]:
        """``count`` drafts. Raw continuations go on from where the last call stopped (the
        sampler's own seeds), so a later round reads rows an earlier one drew but did not need."""
        if count <= 0:
            return []
        if self.sampler is not None:
            rows = self.sampler.sample(count, sampling, on_block)
            return [
                Draft(clean_request(c.text), "magpie", self.method, c.finish_reason, round)
                for c in rows
            ]
        topics, per_topic = spread(TOPICS, count, self._next_topic)
        self._next_topic += len(topics)
        chats = [instruction_chat(INSTRUCTED_REQUEST.format(topic=t), self.label) for t in topics]
        completions = self.engine.generate(chats, sampling, per_topic)

        def make(_: int, c: Completion) -> Draft:
            text, finish = answered_request(c, self.label is not None)
            return Draft(text, "magpie", self.method, finish, round)

        return _drafts(completions, make, count)


class ConstitutionSource:
    """Requests aimed at each principle: questions that tempt an assistant to break it
    (red-teaming, as the harmlessness prompts of the Constitutional AI paper) and everyday
    questions in its scope.

    The model sees the principle's ``comparison`` question (the judge's wording of what the
    principle asks) and its topic (:func:`topic_of`). Principles and the two kinds are taken in
    turn across calls.
    """

    def __init__(self, engine: Any, constitution: Constitution, prefill: bool = True) -> None:
        self.engine = engine
        self.label = PREFILL_LABELS["constitution"] if prefill else None
        self.slots = [
            (principle, method, template)
            for principle in constitution.principles
            for method, template in (("red_team", RED_TEAM_REQUEST), ("everyday", EVERYDAY_REQUEST))
        ]
        self._next = 0

    def draft(self, count: int, sampling: SamplingSettings, round: int) -> list[Draft]:
        if count <= 0:
            return []
        slots, per_slot = spread(self.slots, count, self._next)
        self._next += len(slots)
        chats = [
            instruction_chat(
                t.format(comparison=p.comparison.strip(), topic=topic_of(p)), self.label
            )
            for p, _, t in slots
        ]
        completions = self.engine.generate(chats, sampling, per_slot)

        def make(i: int, c: Completion) -> Draft:
            principle, method, _ = slots[i]
            text, finish = answered_request(c, self.label is not None)
            return Draft(text, "constitution", method, finish, round, principle.id)

        return _drafts(completions, make, count)


@dataclass(frozen=True)
class Parent:
    """A prompt to evolve: a seed prompt, or one kept earlier in this synthesis."""

    prompt_id: str
    text: str


class EvolvedSource:
    """Existing prompts rewritten to be harder or more specific (Evol-Instruct style)."""

    methods = tuple(EVOLVE_REQUEST)

    def __init__(self, engine: Any, prefill: bool = True) -> None:
        self.engine = engine
        self.label = PREFILL_LABELS["evolved"] if prefill else None

    def draft(
        self, parents: Sequence[tuple[Parent, str]], sampling: SamplingSettings, round: int
    ) -> list[Draft]:
        """One rewrite of each ``(parent, method)``."""
        if not parents:
            return []
        chats = [
            instruction_chat(EVOLVE_REQUEST[m].format(prompt=p.text), self.label)
            for p, m in parents
        ]
        completions = self.engine.generate(chats, sampling, 1)

        def make(i: int, c: Completion) -> Draft:
            parent, method = parents[i]
            text, finish = answered_request(c, self.label is not None)
            return Draft(text, "evolved", method, finish, round, parent_id=parent.prompt_id)

        return _drafts(completions, make, len(parents))
