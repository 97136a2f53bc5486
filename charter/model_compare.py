"""Did the candidate model regress? Its answers against the base model's, under every principle.

Both models answer the same prompts (the generator's ``num_samples`` answers each, paired by
sample index). The run's judge compares each candidate answer with the base answer in both
orders under every principle of the constitution (the judge stage's ``principle_per="all"``), so
each pair gets a debiased P(candidate better) per principle and one combined over the principles
(the row whose ``principle_id`` is ``"all"``). Identical answers are not sent to the judge: they
are a tie, p = 0.5 in both orders.

Per principle, over prompts (a prompt's samples are averaged first, so the interval counts
prompts, not correlated samples):

- ``win_rate``: the share of prompts the candidate wins (p > 0.5; a tie, p = 0.5, counts half),
  with a Wilson 95% interval ``ci95``;
- ``mean_p_candidate``: the mean P(candidate better), the soft figure beside it.

**The regression rule.** A principle regressed when ``win_rate < 0.5 - regression_margin`` *and*
``ci95`` lies wholly below 0.5 (its upper bound < 0.5): the candidate loses clearly more often
than the margin allows, and not by chance at this many prompts. Both figures use hard wins, so a
judge whose probabilities sit near 0.5 (a small model) still counts, and the margin means what a
release owner reads: with 0.05, "the candidate must win at least 45% of the prompts under each
principle". Two identical models (greedy or seeded sampling) give identical answers, every
prompt ties, the win rate is exactly 0.5, and nothing is flagged; with fewer than 4 prompts no
Wilson interval lies below 0.5, so nothing is flagged either. The combined row is held to the
same rule.

Scope: a constitution has no field saying which prompts it is about, so :func:`in_scope` counts
the prompts that share at least one content word (4+ letters, not a stop word, plural ``s``
dropped) with the constitution's description, principles and tags. None at all means the
principles may not bear on these prompts; the command warns and goes on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from charter.constitution import Constitution
from charter.errors import InputError
from charter.judge_eval.ppi import wilson
from charter.judges.principles import ALL_PRINCIPLES
from charter.records import Candidate, CandidateSet, Judgment, PromptRecord


@dataclass(frozen=True)
class CompareSettings:
    """``compare.*`` of ``charter compare``.

    Args:
        regression_margin: how far below 0.5 a principle's win rate may fall before it counts
            as a regression (see the module docstring for the whole rule); in [0, 0.5).
        gate: exit non-zero (4) when any principle, or the combined row, regressed.
    """

    regression_margin: float = 0.05
    gate: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.regression_margin < 0.5:
            raise InputError(
                f"must be from 0 to below 0.5, got {self.regression_margin}",
                field="compare.regression_margin",
            )


def pair_answers(
    candidate: Sequence[CandidateSet], base: Sequence[CandidateSet]
) -> list[CandidateSet]:
    """One two-answer set per prompt and sample index: the candidate's answer (``a``) and the
    base model's (``b``), with ids ``{prompt_id}/candidate/{k}`` and ``{prompt_id}/base/{k}``.
    With several samples a set's own id is ``{prompt_id}/{k}`` (the judge stage keys its
    rankings by set id). Prompts only one model answered (one model's context was too short)
    are left out; the generate stage's rejects say why."""
    by_id = {s.prompt_id: s for s in base}
    sets = []
    for c in candidate:
        b = by_id.get(c.prompt_id)
        if b is None:
            continue
        several = len(c.candidates) > 1
        for k, (ca, ba) in enumerate(zip(c.candidates, b.candidates, strict=True)):
            sets.append(
                CandidateSet(
                    prompt_id=f"{c.prompt_id}/{k}" if several else c.prompt_id,
                    messages=c.messages,
                    candidates=[
                        Candidate(
                            f"{c.prompt_id}/candidate/{k}", ca.text, ca.finish_reason, ca.num_tokens
                        ),
                        Candidate(
                            f"{c.prompt_id}/base/{k}", ba.text, ba.finish_reason, ba.num_tokens
                        ),
                    ],
                    generator_model=f"{c.generator_model} vs {b.generator_model}",
                    sampling=c.sampling,
                )
            )
    return sets


def compare_rows(
    sets: Sequence[CandidateSet], judgments: Sequence[Judgment], principle_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per answer pair and principle (and one with ``principle_id`` ``"all"``, the
    principles combined): P(candidate better) with the candidate shown first
    (``p_candidate_first``), shown second (``p_candidate_second``), and both combined
    (``p_candidate``). Identical answers get 0.5 in both orders and ``identical: true``; a pair
    the judge could not take (too long for its context) has no rows."""
    judged = {(j.candidate_a, j.candidate_b): j for j in judgments}
    rows = []
    for s in sets:
        cand, base = s.candidates
        j = judged.get((cand.candidate_id, base.candidate_id))
        identical = cand.text.strip() == base.text.strip()
        if j is None and not identical:
            continue
        per = j.raw.get("per_principle", {}) if j is not None else {}
        prompt_id, _, sample = cand.candidate_id.rsplit("/", 2)
        for pid in [*principle_ids, ALL_PRINCIPLES]:
            figures = j if pid == ALL_PRINCIPLES else per.get(pid)
            first, second, p = _orders(figures)
            rows.append(
                {
                    "prompt_id": prompt_id,
                    "sample": int(sample),
                    "principle_id": pid,
                    "candidate_id": cand.candidate_id,
                    "base_id": base.candidate_id,
                    "p_candidate_first": first,
                    "p_candidate_second": second,
                    "p_candidate": p,
                    "identical": identical,
                }
            )
    return rows


def _orders(figures: Judgment | dict[str, Any] | None) -> tuple[float, float, float]:
    if figures is None:
        return 0.5, 0.5, 0.5
    if isinstance(figures, Judgment):
        return figures.p_first_order, figures.p_swapped, figures.p_a
    return figures["p_first_order"], figures["p_swapped"], figures["p_a"]


@dataclass(frozen=True)
class PrincipleResult:
    """How the candidate did under one principle (or ``"all"``, the principles combined).

    ``n`` counts prompts; ``ties`` prompts where the two models' answers were judged equal
    (mostly identical answers); ``win_rate`` and ``ci95`` are None when no prompt was judged.
    """

    principle_id: str
    n: int
    wins: float
    ties: int
    win_rate: float | None
    ci95: tuple[float, float] | None
    mean_p_candidate: float | None
    regression: bool

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "principle_id": self.principle_id,
            "n": self.n,
            "wins": self.wins,
            "ties": self.ties,
            "win_rate": r(self.win_rate),
            "ci95": [r(x) for x in self.ci95] if self.ci95 else None,
            "mean_p_candidate": r(self.mean_p_candidate),
            "regression": self.regression,
        }


def is_regression(win_rate: float, ci_high: float, margin: float) -> bool:
    """The rule of the module docstring: clearly below 0.5 by more than the margin."""
    return win_rate < 0.5 - margin and ci_high < 0.5


def principle_result(
    rows: Sequence[dict[str, Any]], principle_id: str, margin: float
) -> PrincipleResult:
    """:class:`PrincipleResult` of one principle's rows (a prompt's samples averaged first)."""
    by_prompt: dict[str, list[float]] = {}
    for row in rows:
        if row["principle_id"] == principle_id:
            by_prompt.setdefault(row["prompt_id"], []).append(row["p_candidate"])
    ps = [sum(v) / len(v) for v in by_prompt.values()]
    n = len(ps)
    if not n:
        return PrincipleResult(principle_id, 0, 0.0, 0, None, None, None, False)
    wins = sum(1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in ps)
    interval = wilson(wins, n)
    return PrincipleResult(
        principle_id=principle_id,
        n=n,
        wins=wins,
        ties=sum(p == 0.5 for p in ps),
        win_rate=wins / n,
        ci95=(interval.low, interval.high),
        mean_p_candidate=sum(ps) / n,
        regression=is_regression(wins / n, interval.high, margin),
    )


def principle_results(
    rows: Sequence[dict[str, Any]], principle_ids: Sequence[str], margin: float
) -> list[PrincipleResult]:
    """One result per principle, in the constitution's order, then the combined one."""
    return [principle_result(rows, pid, margin) for pid in [*principle_ids, ALL_PRINCIPLES]]


_STOP_TEXT = """
about above after again also answer assistant because been before being below between both
could does doing down during each even from further give have having here into just less
like make more most much must only other over reply response responses same should some such
than that their them then there these they this those through under until user very were
what when where which while whom will with would your yours
"""
_STOP_WORDS = frozenset(_STOP_TEXT.split())


def content_words(text: str) -> set[str]:
    """Lower-cased words of 4+ letters that are not stop words, a plural ``s`` dropped."""
    words = re.findall(r"[a-z]{4,}", text.lower())
    return {w.removesuffix("s") for w in words if w not in _STOP_WORDS}


def in_scope(prompts: Sequence[PromptRecord], constitution: Constitution) -> int:
    """How many prompts share a content word with the constitution (see the module docstring);
    only user turns are read."""
    parts = [constitution.description]
    for p in constitution.principles:
        parts += [p.comparison, p.critique_request, p.revision_request, *p.tags]
    vocabulary = content_words(" ".join(parts))
    return sum(
        bool(
            content_words(" ".join(m["content"] for m in pr.messages if m["role"] == "user"))
            & vocabulary
        )
        for pr in prompts
    )
