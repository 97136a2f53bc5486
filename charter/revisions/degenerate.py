"""Catch revisions that teach nothing: empty, unchanged, a restated critique, or boilerplate.

The plain recipe trusts every revision. A small (or over-cautious) model often answers the
revision request with nothing, with its original words, with its own critique ("The response
could be more ..."), or with one stock refusal for every prompt; trained on, each of these
teaches the wrong thing. Every drop is kept with its reason, and the most repeated sentences and
openings are reported so a user sees boilerplate even below the drop threshold.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from charter.records import Reject
from charter.revisions.chain import RevisionChain

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
MIN_SENTENCE_WORDS = 4
"""Shorter sentences ("Sure.", "Here it is:") repeat naturally and are not counted."""
OPENING_WORDS = 4
_EDGE_PUNCTUATION = "\"'“”‘’*_,.:;!?()[]"

EMPTY = "empty revision"
IDENTICAL = "identical to the initial response"
RESTATES = "restates the critique"
BOILERPLATE = "repeated boilerplate"


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _bigrams(tokens: list[str]) -> set[tuple[str, ...]]:
    if len(tokens) < 2:
        return {tuple(tokens)} if tokens else set()
    return set(zip(tokens, tokens[1:], strict=False))


def restatement_share(revision: str, critique: str, initial: str) -> float:
    """Share of the revision's word pairs that come from the critique and not the original.

    Pairs the critique merely quotes from the original response do not count: a revision that
    keeps the original's wording is not restating the critique.
    """
    rev = _bigrams(words(revision))
    if not rev:
        return 0.0
    from_critique = _bigrams(words(critique)) - _bigrams(words(initial))
    return len(rev & from_critique) / len(rev)


def sentences(text: str) -> list[str]:
    """Normalised sentences (lower case, single spaces) of at least MIN_SENTENCE_WORDS words."""
    out = []
    for raw in _SENTENCE_END.split(text):
        tokens = words(raw)
        if len(tokens) >= MIN_SENTENCE_WORDS:
            out.append(" ".join(tokens))
    return out


def opening(text: str) -> str:
    """The first OPENING_WORDS words, lower case, without the punctuation around them."""
    return " ".join(w.strip(_EDGE_PUNCTUATION) for w in text.casefold().split()[:OPENING_WORDS])


@dataclass
class DegenerateReport:
    """What the filter kept and dropped, and the repetition figures for summary.json and card."""

    kept: list[RevisionChain]
    rejects: list[Reject] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    repeated_sentences: list[tuple[str, int]] = field(default_factory=list)
    openings: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class DegenerateFilter:
    """Thresholds for the degenerate-revision checks (``revise.degenerate`` in the config).

    Args:
        enabled: false reports the figures but drops nothing.
        restatement_overlap: drop a revision when at least this share of its word pairs comes
            from the last critique (and not from the initial response).
        boilerplate_min_prompts: a sentence is boilerplate once it appears in the final
            revisions of at least this many prompts ...
        boilerplate_fraction: ... and in at least this fraction of all chains.
        boilerplate_share: drop a revision when at least this share of its words sits in
            boilerplate sentences.
        report_top: how many repeated sentences and openings to report.
    """

    enabled: bool = True
    restatement_overlap: float = 0.6
    boilerplate_min_prompts: int = 3
    boilerplate_fraction: float = 0.1
    boilerplate_share: float = 0.5
    report_top: int = 10

    def check(self, chains: Sequence[RevisionChain]) -> DegenerateReport:
        """Split chains into kept and dropped; drops are checked in the order of the reasons."""
        report = DegenerateReport(kept=[])
        sentence_prompts: Counter[str] = Counter()
        for chain in chains:
            sentence_prompts.update(set(sentences(chain.final)))
        openings = Counter(opening(c.final) for c in chains if c.final.strip())
        report.repeated_sentences = [
            (s, n) for s, n in sentence_prompts.most_common(self.report_top) if n > 1
        ]
        report.openings = openings.most_common(self.report_top)
        floor = max(
            self.boilerplate_min_prompts, math.ceil(self.boilerplate_fraction * len(chains))
        )
        boilerplate = {s for s, n in sentence_prompts.items() if n >= floor}

        for chain in chains:
            reason = self._reason(chain, boilerplate, sentence_prompts)
            if reason is None or not self.enabled:
                report.kept.append(chain)
                continue
            key, detail = reason
            report.dropped[key] += 1
            report.rejects.append(
                Reject(
                    stage="revise",
                    source=chain.source,
                    field="revision",
                    reason=f"{key}: {detail}" if detail else key,
                    row={"prompt_id": chain.prompt_id, "revision": chain.final},
                )
            )
        return report

    def _reason(
        self, chain: RevisionChain, boilerplate: set[str], counts: Counter[str]
    ) -> tuple[str, str] | None:
        final = chain.final
        if not final.strip():
            return EMPTY, ""
        if words(final) == words(chain.initial):
            return IDENTICAL, ""
        if chain.rounds:
            share = restatement_share(final, chain.rounds[-1].critique, chain.initial)
            if share >= self.restatement_overlap:
                return RESTATES, f"{share:.0%} of its word pairs come from the critique"
        if boilerplate:
            found = [s for s in sentences(final) if s in boilerplate]
            covered = sum(len(s.split()) for s in found)
            total = len(words(final))
            if found and total and covered / total >= self.boilerplate_share:
                top = max(found, key=lambda s: counts[s])
                return BOILERPLATE, f"{top!r} appears in {counts[top]} prompts' revisions"
        return None
