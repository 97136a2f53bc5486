"""Cutting a run into windows of prompts, so each stage holds one window, not the run.

The generate, judge and pairs stages read their input lazily and write each window's rows as
they finish (:func:`charter.run_files.appending`), so memory is flat in the prompt count. Each
cut is placed where it changes nothing in the outputs:

- judging (``all_pairs``) is cut only where a whole-run judge stage would start a new engine
  call, so the engine sees the very same calls, and a window's judgments, rankings and rejects
  are the whole run's rows for those prompts, in the same order;
- a tournament's rounds are batched across the prompts of one window (a small run is one
  window, as before);
- the pairs stage reads candidates, judgments and rankings in step, prompt by prompt, since the
  judge stage writes all three in prompt order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from charter.judges.stage import Ranking, same_text
from charter.records import CandidateSet, Judgment


def comparisons_of(cs: CandidateSet, per_pair: int = 1) -> int:
    """How many comparisons the judge stage makes of one set under ``all_pairs``: pairs with
    different texts, times ``per_pair`` (the principle count under ``principle_per=all``)."""
    pairs = itertools.combinations(cs.candidates, 2)
    return per_pair * sum(not same_text(a, b) for a, b in pairs)


def judge_windows(
    sets: Iterable[CandidateSet],
    *,
    window: int,
    chunk_size: int,
    per_pair: int = 1,
    at_call_boundaries: bool = True,
) -> Iterator[list[CandidateSet]]:
    """Consecutive sets, at least ``window`` per window (the last may be shorter).

    With ``at_call_boundaries`` a window ends only where the judge stage over the whole run
    would end an engine call (it cuts after a prompt once ``chunk_size`` comparisons have
    gathered, see :func:`charter.judges.stage._whole_prompt_chunks`).
    """
    group: list[CandidateSet] = []
    gathered = 0
    for cs in sets:
        group.append(cs)
        if at_call_boundaries:
            count = comparisons_of(cs, per_pair)
            gathered += count
            if not count or gathered < chunk_size:
                continue
            gathered = 0
        if len(group) >= window:
            yield group
            group = []
    if group:
        yield group


@dataclass
class PromptRows:
    """One prompt's rows across the stage files: its candidates, judgments and ranking."""

    candidates: CandidateSet
    judgments: list[Judgment]
    ranking: Ranking | None


def in_step(
    sets: Iterable[CandidateSet], judgments: Iterable[Judgment], rankings: Iterable[Ranking]
) -> Iterator[PromptRows]:
    """The three files read together, one prompt at a time.

    Raises:
        ValueError: the files are not in the same prompt order (one was edited or replaced by
            hand): a judgment or ranking of a prompt that is not the next one.
    """
    js = iter(judgments)
    rs = iter(rankings)
    pending_j = next(js, None)
    pending_r = next(rs, None)
    for cs in sets:
        mine: list[Judgment] = []
        while pending_j is not None and pending_j.prompt_id == cs.prompt_id:
            mine.append(pending_j)
            pending_j = next(js, None)
        ranking = None
        if pending_r is not None and pending_r.prompt_id == cs.prompt_id:
            ranking, pending_r = pending_r, next(rs, None)
        yield PromptRows(cs, mine, ranking)
    left = pending_j or pending_r
    if left is not None:
        raise ValueError(
            f"prompt {left.prompt_id!r} is in judgments.jsonl or rankings.jsonl out of the "
            "order of candidates.jsonl (or not in it)"
        )


def windows_of(rows: Iterable[PromptRows], size: int) -> Iterator[list[PromptRows]]:
    """``size`` prompts' rows at a time."""
    it = iter(rows)
    while batch := list(itertools.islice(it, size)):
        yield batch
