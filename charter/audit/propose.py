"""Candidate principles from the judge's own model, shown pairs where it disagreed with people.

Each proposer call shows a few held-in disagreements (the conversation, the reply people
preferred, the reply the judge preferred) and the constitution's current questions, and asks for
one new principle in the constitution's YAML form. The assistant turn is prefilled (by default
with the opening of a YAML block and ``id: ``), which small models need to answer in form.

Model text is parsed leniently (a fenced block, bare YAML, JSON inside prose, a one-item list, a
``principles:`` mapping; trailing prose is cut off) and validated strictly: a candidate that the
constitution schema refuses is dropped with the schema's reason, as is one that repeats an
existing principle's question or another candidate's. A repeated id is renamed, not dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import yaml

from charter.constitution import Constitution, Principle
from charter.errors import InputError
from charter.generators.engine import Engine, SamplingSettings
from charter.human_prefs import HumanPair
from charter.records import Chat, Reject
from charter.schema_check import field_errors

STAGE = "audit.propose"
PRINCIPLE_FIELDS = ("id", "comparison", "critique_request", "revision_request")
_ALLOWED_KEYS = frozenset({*PRINCIPLE_FIELDS, "weight", "tags", "examples"})

SYSTEM_PROMPT = (
    "You help write constitutions for AI judges. A principle is a question a judge asks when it "
    "compares two replies, with a request to critique a reply and a request to revise it."
)
INSTRUCTIONS = (
    "In each example below, people preferred one reply, but a judge using the principles above "
    "picked the other one. Write ONE new principle that would lead the judge to the reply people "
    "preferred, and that would hold for other conversations too (do not mention these examples)."
)
ANSWER_FORM = (
    "Answer with YAML only: one new principle with the four keys id, comparison, "
    "critique_request and revision_request, in the form of this existing one:"
)
PROMPT_SHA256 = hashlib.sha256(
    "\x1f".join((SYSTEM_PROMPT, INSTRUCTIONS, ANSWER_FORM)).encode()
).hexdigest()
"""Hash of the proposer's fixed text, recorded in ``audit.json`` beside the figures."""


@dataclass(frozen=True)
class ProposalSettings:
    """How candidates are asked for (the ``proposal`` node of ``conf/audit.yaml``).

    Args:
        candidates: proposer samples in all, asked for in ``ceil(candidates / per_call)`` calls.
        per_call: samples per call (one chat, ``n`` samples).
        examples_per_prompt: held-in disagreements shown in each call.
        example_chars: each conversation turn and reply shown is cut to this many characters.
        prefill: the start of the proposer's answer ("" for none).
        sampling: the proposer's sampling; call k uses ``seed + k``.
    """

    candidates: int = 8
    per_call: int = 2
    examples_per_prompt: int = 3
    example_chars: int = 400
    prefill: str = "```yaml\nid: "
    sampling: SamplingSettings = SamplingSettings(max_new_tokens=160)

    def __post_init__(self) -> None:
        for name in ("candidates", "per_call", "examples_per_prompt"):
            if getattr(self, name) < 1:
                raise InputError(
                    f"must be at least 1, got {getattr(self, name)}", field=f"proposal.{name}"
                )
        if self.example_chars < 20:
            raise InputError(
                f"must be at least 20, got {self.example_chars}", field="proposal.example_chars"
            )

    @property
    def calls(self) -> int:
        return -(-self.candidates // self.per_call)


@dataclass(frozen=True)
class Proposal:
    """One proposer sample: the text (prefill included) and which call and sample it was."""

    call: int
    sample: int
    text: str
    example_ids: tuple[str, ...]

    @property
    def source(self) -> str:
        return f"call {self.call} sample {self.sample}"


@dataclass(frozen=True)
class Candidate:
    """A valid, distinct candidate principle and the proposal it came from."""

    principle: Principle
    proposal: Proposal

    def as_dict(self) -> dict[str, Any]:
        """The principle in the constitution's YAML form (weight left out when it is 1)."""
        p = self.principle
        out: dict[str, Any] = {k: getattr(p, k) for k in PRINCIPLE_FIELDS}
        if p.weight != 1.0:
            out["weight"] = p.weight
        return out


def _clip(text: str, chars: int) -> str:
    text = text.strip()
    return text if len(text) <= chars else text[:chars].rstrip() + " [...]"


def proposer_chat(
    examples: Sequence[HumanPair], constitution: Constitution, *, example_chars: int, prefill: str
) -> Chat:
    """The chat for one proposer call: current principles, disagreements, the answer form.

    Args:
        examples: held-in pairs on which the judge preferred ``rejected``.
        constitution: whose questions are listed, so the proposal adds something new.
        example_chars: each conversation and reply is cut to this many characters.
        prefill: the start of the assistant's answer ("" for none).
    """
    principles = "\n".join(f"- {p.id}: {_clip(p.comparison, 160)}" for p in constitution.principles)
    shown = []
    for k, pair in enumerate(examples, 1):
        conversation = "\n".join(
            f"{m['role'].upper()}: {_clip(m['content'], example_chars)}" for m in pair.messages
        )
        shown.append(
            f"Example {k}\nConversation:\n{_clip(conversation, 2 * example_chars)}\n\n"
            f"Reply people preferred:\n{_clip(pair.chosen, example_chars)}\n\n"
            f"Reply the judge picked instead:\n{_clip(pair.rejected, example_chars)}"
        )
    # a real principle shows the form: small models copy placeholders ("Which response ...?")
    # verbatim, while a copied real principle is caught as a repeat
    form = yaml.safe_dump(
        {k: getattr(constitution.principles[0], k) for k in PRINCIPLE_FIELDS},
        sort_keys=False,
        allow_unicode=True,
        width=1000,
    )
    user = (
        f"The judge's principles:\n{principles}\n\n{INSTRUCTIONS}\n\n"
        + "\n\n".join(shown)
        + f"\n\n{ANSWER_FORM}\n```yaml\n{form}```"
    )
    chat: Chat = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
    if prefill:
        chat.append({"role": "assistant", "content": prefill})
    return chat


def example_groups(
    disagreements: Sequence[HumanPair], calls: int, per_prompt: int, seed: int
) -> list[list[HumanPair]]:
    """``calls`` groups of ``per_prompt`` disagreements, in a seeded, stable order.

    The pairs are ordered by a hash of (seed, id) and dealt out in turn, wrapping around when
    there are fewer than ``calls * per_prompt``; a group never holds a pair twice.
    """
    if not disagreements or calls < 1:
        return []
    order = sorted(
        disagreements, key=lambda p: hashlib.sha256(f"{seed}\x1f{p.id}".encode()).hexdigest()
    )
    size = min(per_prompt, len(order))
    return [[order[(c * size + j) % len(order)] for j in range(size)] for c in range(calls)]


def propose(
    engine: Engine,
    groups: Sequence[Sequence[HumanPair]],
    constitution: Constitution,
    settings: ProposalSettings,
    on_progress: Callable[[int], None] | None = None,
) -> list[Proposal]:
    """Ask the engine for ``settings.per_call`` principles per group of examples.

    One ``generate`` call per group: each group's chat gets its own sampling seed
    (``sampling.seed + call``), so groups that repeat pairs (few disagreements) still give
    different samples. The last call asks only for what is left of ``settings.candidates``.
    """
    proposals: list[Proposal] = []
    for call, group in enumerate(groups):
        chat = proposer_chat(
            group, constitution, example_chars=settings.example_chars, prefill=settings.prefill
        )
        sampling = replace(settings.sampling, seed=settings.sampling.seed + call)
        n = min(settings.per_call, settings.candidates - len(proposals))
        [completions] = engine.generate([chat], sampling, n=n)
        ids = tuple(p.id for p in group)
        proposals += [
            Proposal(call, k, settings.prefill + c.text, ids) for k, c in enumerate(completions)
        ]
        if on_progress:
            on_progress(1)
    return proposals


_FENCE = re.compile(r"```[ \t]*([A-Za-z]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_ID_LINE = re.compile(r"^[ \t]*(?:-[ \t]+)?[\"']?id[\"']?[ \t]*:", re.MULTILINE)


def _principle_dicts(value: Any) -> list[dict[str, Any]]:
    """Principle-shaped mappings in a parsed value: one mapping with an id, a list of them, or
    a constitution-like mapping with ``principles``."""
    if isinstance(value, dict):
        if isinstance(value.get("principles"), list):
            return _principle_dicts(value["principles"])
        return [value] if "id" in value else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict) and "id" in v]
    return []


def _clean(found: list[dict[str, Any]]) -> bool:
    """Every mapping has the required fields and no key a principle cannot have."""
    return all(set(PRINCIPLE_FIELDS) <= d.keys() and d.keys() <= _ALLOWED_KEYS for d in found)


def _load_prefix(snippet: str) -> list[dict[str, Any]]:
    """Parse ``snippet`` as YAML (JSON is YAML), dropping trailing lines (a model's closing
    prose, which can look like ``key: value``) until it parses to complete principles; failing
    that, the longest parse that holds a principle at all (its faults go to the rejects)."""
    lines = textwrap.dedent(snippet).strip("\n").splitlines()
    fallback: list[dict[str, Any]] = []
    for end in range(len(lines), 0, -1):
        try:
            found = _principle_dicts(yaml.safe_load("\n".join(lines[:end])))
        except yaml.YAMLError:
            continue
        if found and _clean(found):
            return found
        fallback = fallback or found
    return fallback


def parse_principles(text: str) -> list[dict[str, Any]]:
    """Every principle-shaped mapping found in a model's text (empty when there is none).

    Tries, in order: fenced blocks, JSON objects inside prose, and YAML from the first
    ``id:`` line; the first that yields a mapping with an ``id`` wins.
    """
    snippets = [m.group(2) for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        snippets.append(text[start : end + 1])
    first_id = _ID_LINE.search(text)
    if first_id:
        snippets.append(text[first_id.start() :].split("```")[0])
    for snippet in snippets:
        try:
            found = _principle_dicts(json.loads(snippet))
        except (json.JSONDecodeError, ValueError):
            found = _load_prefix(snippet)
        if found:
            return found
    return []


def principle_problems(data: dict[str, Any]) -> list[str]:
    """Why ``data`` is not a valid principle of a constitution (empty if it is one)."""
    wrapper = {"name": "audit", "version": "0", "description": "", "principles": [data]}
    problems = []
    for error in field_errors("constitution", wrapper):
        field = error.field.removeprefix("principles[0]").lstrip(".")
        problems.append(f"{field}: {error.message}" if field else error.message)
    return problems


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def _strip_strings(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}


def candidates_from(
    proposals: Sequence[Proposal], constitution: Constitution, *, weight: float
) -> tuple[list[Candidate], list[Reject]]:
    """Valid, distinct candidates from the proposals, and a reject (with reason) for the rest.

    Args:
        proposals: the proposer's samples.
        constitution: a candidate that repeats one of its questions is dropped; one that reuses
            one of its ids is renamed ``ID-2`` (``-3``, ...).
        weight: every candidate's weight, so candidates compete on content, not on a weight the
            model picked (a weight in the text is validated, then replaced).
    """
    seen_questions = {
        _norm(p.comparison): f"existing principle {p.id!r}" for p in constitution.principles
    }
    taken_ids = {p.id for p in constitution.principles}
    candidates: list[Candidate] = []
    rejects: list[Reject] = []

    def reject(proposal: Proposal, reason: str, parsed: dict[str, Any] | None = None) -> None:
        row: dict[str, Any] = {"text": proposal.text[:2000]}
        if parsed is not None:  # YAML can hold dates and other values JSON cannot
            row["parsed"] = json.loads(json.dumps(parsed, default=str))
        rejects.append(Reject(STAGE, proposal.source, reason, row=row))

    for proposal in proposals:
        found = parse_principles(proposal.text)
        if not found:
            start = " ".join(proposal.text.split())[:80]
            reject(proposal, f"no principle in YAML or JSON form found (text starts: {start!r})")
            continue
        for data in found:
            data = _strip_strings(data)
            problems = principle_problems(data)
            if problems:
                reject(proposal, "not a valid principle: " + "; ".join(problems), data)
                continue
            question = _norm(data["comparison"])
            if question in seen_questions:
                reject(proposal, f"same question as {seen_questions[question]}", data)
                continue
            pid, k = data["id"], 2
            while pid in taken_ids:
                pid, k = f"{data['id']}-{k}", k + 1
            seen_questions[question] = f"candidate {pid!r}"
            taken_ids.add(pid)
            principle = Principle(
                id=pid,
                comparison=data["comparison"],
                critique_request=data["critique_request"],
                revision_request=data["revision_request"],
                weight=weight,
            )
            candidates.append(Candidate(principle, proposal))
    return candidates, rejects
