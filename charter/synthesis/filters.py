"""Which drafted requests to keep: text checks, then held-out overlap, then duplicates.

Every check returns ``None`` (keep) or a :class:`Drop` with a reason code and a detail, in the
order below; the first that fails decides. Codes, as counted in ``summary.json``:

- ``chat_template_debris``: the text holds template markup (``<|im_start|>``, ``[INST]``, a bare
  ``assistant`` header line): the model wrote past its turn.
- ``truncated``: cut off at ``max_new_tokens`` (half a request is not a request).
- ``too_short`` / ``too_long``: outside ``[min_words, max_words]`` whitespace words.
- ``refusal``: opens as an assistant's refusal ("I'm sorry, but ...", "As an AI ...").
- ``not_a_request``: a simple heuristic, documented on :func:`request_problem`.
- ``excluded_exact`` / ``excluded_near_duplicate``: matches a prompt of ``exclude=FILE``.
- ``exact_duplicate`` / ``near_duplicate``: matches a prompt kept earlier, or a seed prompt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from charter.errors import InputError
from charter.records import Reject
from charter.synthesis.dedup import DedupSettings, DuplicateIndex
from charter.synthesis.drafts import Draft


@dataclass(frozen=True)
class FilterSettings:
    """Limits of the text checks.

    Args:
        min_words: fewer whitespace-separated words is ``too_short``.
        max_words: more is ``too_long``.
        keep_truncated: keep drafts cut off at ``max_new_tokens`` (off: they end mid-sentence).
    """

    min_words: int = 4
    max_words: int = 120
    keep_truncated: bool = False

    def __post_init__(self) -> None:
        if self.min_words < 1:
            raise InputError("must be at least 1", field="filters.min_words")
        if self.max_words < self.min_words:
            raise InputError("must be at least filters.min_words", field="filters.max_words")


@dataclass(frozen=True)
class Drop:
    """A draft that is not kept: ``code`` groups drops in the summary, ``detail`` says why this
    one went."""

    draft: Draft
    code: str
    detail: str

    def reject(self, generator_model: str) -> Reject:
        """The ``rejects.jsonl`` row: the draft's would-be prompts row, and the reason."""
        reason = f"{self.code}: {self.detail}" if self.detail else self.code
        return Reject(
            "synthesize",
            self.draft.prompt_id,
            reason,
            field="prompt",
            row=self.draft.row(generator_model),
        )


_LABEL = re.compile(
    r"^(?:\*\*)?(?:user(?:'s)? (?:request|message)|rewritten request|request|user|prompt|"
    r"question|message)\s*:\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
_QUOTES = {'"': '"', "“": "”", "'": "'", "«": "»"}


def clean_request(text: str) -> str:
    """Strip what models wrap a request in: whitespace, a leading ``Request:``-style label, and
    one pair of quotes around the whole text. Nothing else is rewritten."""
    text = _LABEL.sub("", text.strip()).strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


_DEBRIS = re.compile(
    r"<\||\|>|\[/?INST\]|</?s>|<(?:start|end)_of_turn>|^(?:user|assistant|system)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_REFUSAL = re.compile(
    r"^(?:i'?m sorry|i am sorry|sorry,|i apologi[sz]e|as an ai\b|"
    r"(?:i can(?:no|')?t|i cannot|i won'?t|i will not|i'?m unable to|i am unable to|"
    r"i'?m not able to|i am not able to) (?:help|assist|provide|comply|fulfil|create|write|"
    r"generate|answer|do that|share))",
    re.IGNORECASE,
)
_ANSWER_VOICE = re.compile(
    r"^(?:sure|certainly|of course|absolutely|great question|here is|here's|here are)\b",
    re.IGNORECASE,
)
REQUEST_OPENERS = frozenset(
    re.findall(
        r"\w+",
        """
    write explain describe give list tell help create make suggest summarize summarise
    translate compare recommend show find plan draft design generate provide outline rewrite
    edit compose calculate solve convert analyze analyse classify identify name teach walk
    guide build develop prepare propose brainstorm share define evaluate review fix correct
    imagine pretend act assume consider choose pick rank sort format proofread improve debug
    implement predict estimate play role respond answer check how what why when where who
    whom whose which can could would should will is are do does did may might shall
    """,
    )
)
"""Words a request may open with: an imperative verb, a question word or a modal."""
_POLITE = frozenset(re.findall(r"\w+", "please hi hello hey ok okay so now also dear"))
_NEED = re.compile(
    r"^(?:i need|i want|i'd like|i would like|i'?m looking for|i am looking for|i wonder|"
    r"i was wondering|let'?s|let us)\b",
    re.IGNORECASE,
)


def request_problem(text: str) -> str | None:
    """Why ``text`` does not read as a user's request, or None if it does.

    The heuristic: it must not open in an assistant's voice ("Sure, ...", "Here is ..."); then it
    is a request if it has a question mark, opens with a request word (:data:`REQUEST_OPENERS`,
    after greetings and "please"), or opens with a stated need ("I need", "I'd like", "Let's").
    A statement ("The Great Lakes hold a fifth of the world's fresh water.") fails.
    """
    text = text.replace("’", "'")
    if _ANSWER_VOICE.match(text):
        return "reads as an assistant's answer"
    if "?" in text or _NEED.match(text):
        return None
    words = [w.strip(",.!:;-").casefold() for w in text.split()]
    words = [w for w in words if w]
    while words and words[0] in _POLITE:
        words = words[1:]
    if words and words[0] in REQUEST_OPENERS:
        return None
    return "no question mark, and it does not open with a request verb or question word"


def text_problem(draft: Draft, settings: FilterSettings) -> tuple[str, str] | None:
    """The first text check ``draft`` fails, as ``(code, detail)``, or None."""
    text = draft.text
    debris = _DEBRIS.search(text)
    if debris:
        return "chat_template_debris", f"contains {debris.group(0)!r}"
    if draft.finish_reason == "length" and not settings.keep_truncated:
        return "truncated", "cut off at max_new_tokens"
    words = len(text.split())
    if words < settings.min_words:
        return "too_short", f"{words} words, under min_words={settings.min_words}"
    if words > settings.max_words:
        return "too_long", f"{words} words, over max_words={settings.max_words}"
    if _REFUSAL.match(text.replace("’", "'")):
        return "refusal", "opens as a refusal"
    problem = request_problem(text)
    if problem is not None:
        return "not_a_request", problem
    return None


class Screen:
    """Decides each draft in turn, remembering what it kept so later drafts are compared with it.

    Args:
        filters: text-check limits.
        dedup: duplicate threshold and shingling.
        excluded: ``(id, text)`` of the held-out prompts no kept prompt may match.
        seen: ``(id, text)`` of prompts the user already has (the seed prompts): a draft that
            duplicates one adds nothing.
    """

    def __init__(
        self,
        filters: FilterSettings,
        dedup: DedupSettings,
        excluded: Sequence[tuple[str, str]] = (),
        seen: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.filters = filters
        self.excluded = DuplicateIndex(dedup)
        for key, text in excluded:
            self.excluded.add(key, text)
        self.kept = DuplicateIndex(dedup)
        for key, text in seen:
            self.kept.add(f"seed {key}", text)

    def decide(self, draft: Draft) -> Drop | None:
        """None and remember the draft if it is kept; else the :class:`Drop` saying why not."""
        problem = text_problem(draft, self.filters)
        if problem is not None:
            return Drop(draft, *problem)
        held_out = self.excluded.match(draft.text)
        if held_out is not None:
            if held_out.kind == "exact":
                return Drop(draft, "excluded_exact", f"same text as held-out {held_out.key}")
            detail = f"Jaccard ~{held_out.similarity:.2f} with held-out {held_out.key}"
            return Drop(draft, "excluded_near_duplicate", detail)
        earlier = self.kept.match(draft.text)
        if earlier is not None:
            if earlier.kind == "exact":
                return Drop(draft, "exact_duplicate", f"same text as {earlier.key}")
            detail = f"Jaccard ~{earlier.similarity:.2f} with {earlier.key}"
            return Drop(draft, "near_duplicate", detail)
        self.kept.add(draft.prompt_id, draft.text)
        return None
