"""The records of a critique/revision chain and the chats that ask for each step.

Each round starts from the prompt and the current response alone (not the whole chain so far):
the constitution's requests speak of "the assistant's last response", small models lose the
thread in long contexts, and a fresh context keeps every round's cost flat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from charter.constitution import FewShotExample, Principle
from charter.records import Chat

NO_EXPLANATION = "This response could follow the principle better."
"""The critique shown for a few-shot example that has no ``explanation`` of its own."""


@dataclass(frozen=True)
class RevisionRound:
    """One round: the principle drawn, the critique it asked for and the revision that followed.

    ``critique_request`` and ``revision_request`` are the exact user turns the model saw.
    """

    round: int
    principle_id: str
    critique_request: str
    critique: str
    revision_request: str
    revision: str
    critique_finish_reason: str
    revision_finish_reason: str


@dataclass(frozen=True)
class RevisionChain:
    """One row of revisions.jsonl: a prompt, its initial response and every round after it."""

    prompt_id: str
    messages: Chat
    source: str
    initial: str
    initial_finish_reason: str
    rounds: list[RevisionRound] = field(default_factory=list)
    generator_model: str = ""
    sampling: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> str:
        """The last revision (the SFT target and the chosen side of the pair)."""
        return self.rounds[-1].revision if self.rounds else self.initial

    @property
    def principle_ids(self) -> list[str]:
        """The distinct principles of the chain, in the order they were first drawn."""
        return list(dict.fromkeys(r.principle_id for r in self.rounds))


def _example_turns(example: FewShotExample, principle: Principle, revision_request: str) -> Chat:
    """A worked chain from a few-shot comparison: the worse reply, why, and the better one."""
    worse, better = (
        (example.response_b, example.response_a)
        if example.better == "A"
        else (example.response_a, example.response_b)
    )
    return [
        {"role": "user", "content": example.prompt},
        {"role": "assistant", "content": worse},
        {"role": "user", "content": principle.critique_request},
        {"role": "assistant", "content": example.explanation or NO_EXPLANATION},
        {"role": "user", "content": revision_request},
        {"role": "assistant", "content": better},
    ]


def _with_examples(
    messages: Chat, principle: Principle, revision_request: str, use_examples: bool
) -> Chat:
    """The conversation with the principle's few-shot chains after any leading system turns."""
    if not use_examples or not principle.examples:
        return list(messages)
    cut = 0
    while cut < len(messages) and messages[cut]["role"] == "system":
        cut += 1
    shots = [
        t for ex in principle.examples for t in _example_turns(ex, principle, revision_request)
    ]
    return [*messages[:cut], *shots, *messages[cut:]]


def revision_request(principle: Principle, instruction: str) -> str:
    """The principle's revision request plus our instruction to reply with the rewrite only."""
    return f"{principle.revision_request} {instruction}".strip()


def critique_chat(
    messages: Chat, response: str, principle: Principle, instruction: str, use_examples: bool
) -> Chat:
    """Ask for a critique of ``response`` under ``principle``."""
    return [
        *_with_examples(
            messages, principle, revision_request(principle, instruction), use_examples
        ),
        {"role": "assistant", "content": response},
        {"role": "user", "content": principle.critique_request},
    ]


def revision_chat(
    messages: Chat,
    response: str,
    critique: str,
    principle: Principle,
    instruction: str,
    use_examples: bool,
) -> Chat:
    """Ask for a rewrite of ``response`` given its critique."""
    request = revision_request(principle, instruction)
    return [
        *critique_chat(messages, response, principle, instruction, use_examples),
        {"role": "assistant", "content": critique},
        {"role": "user", "content": request},
    ]
