"""The figures of a diff page: what an edit to the constitution did to a run's data.

The changes themselves come from :func:`charter.run_diff.diff_runs` (pairs and judgments matched
by prompt and candidate ids, sorted into flipped, changed, appeared and disappeared); this module
adds what a reader needs to judge them: the constitution diff, counts per principle, and for each
change the conversation and both responses, read from the run that holds them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter import run_files
from charter.records import Chat
from charter.report.constitution_text import ConstitutionDiff, constitution_of, diff_constitutions
from charter.report.run_facts import read_rows
from charter.report.table_rows import Note, Response, judge_notes
from charter.run_diff import Change, RunDiff, Side, diff_runs

WHATS = ("flipped", "changed", "appeared", "disappeared")


@dataclass(frozen=True)
class ChangeRow:
    """One changed pair or judgment, with the texts to read it by.

    ``p_before``/``p_after`` are P(``first`` better) in each run, ``first`` being the lower of
    the two candidate ids (as in :class:`~charter.run_diff.Side`), so the two numbers compare;
    ``chosen_before``/``chosen_after`` name a pair's chosen side and ``p_chosen_before``/
    ``p_chosen_after`` give its ``p_chosen`` (None for a judgment or a missing side).
    """

    level: str  # "pair" or "judgment"
    what: str
    prompt_id: str
    principle: str
    first: Response
    second: Response
    p_before: float | None
    p_after: float | None
    chosen_before: str | None
    chosen_after: str | None
    p_chosen_before: float | None
    p_chosen_after: float | None
    conversation: Chat
    notes_before: list[Note]
    notes_after: list[Note]

    @property
    def margin(self) -> float:
        """How far P(first better) moved, for sorting (an appearance counts from 0.5)."""
        before = 0.5 if self.p_before is None else self.p_before
        after = 0.5 if self.p_after is None else self.p_after
        return after - before


@dataclass(frozen=True)
class PrincipleChanges:
    principle: str
    pairs: dict[str, int]
    judgments: dict[str, int]


@dataclass(frozen=True)
class DiffFacts:
    run_a: str
    run_b: str
    counts: dict[str, Any]
    constitution: ConstitutionDiff
    principles: list[PrincipleChanges]
    rows: list[ChangeRow]


def _p_first(side: Side | None, first: str, level: str) -> float | None:
    """P(first better) of a side: a judgment's ``p`` already is; a pair's is p_chosen oriented."""
    if side is None:
        return None
    if level == "judgment" or side.chosen is None:
        return side.p
    return side.p if side.chosen == first else 1 - side.p


def _texts(run_dir: Path) -> tuple[dict[str, str], dict[str, Chat]]:
    texts: dict[str, str] = {}
    chats: dict[str, Chat] = {}
    for row in read_rows(run_dir, run_files.CANDIDATES) or []:
        chats[row["prompt_id"]] = row["messages"]
        for c in row["candidates"]:
            texts[c["candidate_id"]] = c["text"]
    for p in read_rows(run_dir, run_files.PAIRS) or []:  # revise runs have no candidates file
        texts.setdefault(p["chosen_id"], p["chosen"][-1]["content"])
        texts.setdefault(p["rejected_id"], p["rejected"][-1]["content"])
        chats.setdefault(p["prompt_id"], p["prompt"])
    return texts, chats


def _notes(side: Side | None) -> list[Note]:
    return judge_notes(side.critique) if side and side.critique else []


def _row(change: Change, level: str, sources: list[tuple[dict, dict]]) -> ChangeRow:
    # read texts from the newer run first: a disappeared change exists only in the older one
    def text(cid: str) -> str:
        return next((t[cid] for t, _ in sources if cid in t), "")

    chat = next((c[change.prompt_id] for _, c in sources if change.prompt_id in c), [])
    return ChangeRow(
        level=level,
        what=change.what,
        prompt_id=change.prompt_id,
        principle=change.principle,
        first=Response(change.first, text(change.first)),
        second=Response(change.second, text(change.second)),
        p_before=_p_first(change.before, change.first, level),
        p_after=_p_first(change.after, change.first, level),
        chosen_before=change.before.chosen if change.before else None,
        chosen_after=change.after.chosen if change.after else None,
        p_chosen_before=change.before.p if change.before and change.before.chosen else None,
        p_chosen_after=change.after.p if change.after and change.after.chosen else None,
        conversation=chat,
        notes_before=_notes(change.before),
        notes_after=_notes(change.after),
    )


def _per_principle(diff: RunDiff) -> list[PrincipleChanges]:
    return [
        PrincipleChanges(
            principle=pid,
            pairs=dict(Counter(c.what for c in kinds["pairs"])),
            judgments=dict(Counter(c.what for c in kinds["judgments"])),
        )
        for pid, kinds in diff.by_principle().items()
    ]


def gather_diff(run_dir: Path, against: Path) -> DiffFacts:
    """``against`` is the run before (A), ``run_dir`` the run after (B)."""
    diff = diff_runs(against, run_dir)
    sources = [_texts(run_dir), _texts(against)]
    rows = [_row(c, "pair", sources) for c in diff.pairs]
    rows += [_row(c, "judgment", sources) for c in diff.judgments]
    return DiffFacts(
        run_a=str(against),
        run_b=str(run_dir),
        counts=diff.counts,
        constitution=diff_constitutions(constitution_of(against), constitution_of(run_dir)),
        principles=_per_principle(diff),
        rows=rows,
    )
