"""The figures of a critique -> revision run (``experiment=cai_sl``) for its page.

A revise run writes ``revisions.jsonl`` (one chain per prompt: the initial response and each
round's critique and revision), the judge's check of each revision in ``judgments.jsonl``, the
kept chains as ``pairs.jsonl`` and ``sft.jsonl``, and every dropped chain with its reason in
``rejects.jsonl`` (degenerate revisions, and revisions the judge did not prefer). The page shows
the chains with their fate; the headline figures are summary.json's ``revise`` section.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charter import run_files, run_state
from charter.records import Chat
from charter.report.run_facts import Drop, Figure, StageCost, read_rows
from charter.report.table_rows import Note, judge_notes


@dataclass(frozen=True)
class ChainRow:
    """One prompt's chain and what became of it.

    ``status`` is ``kept`` (published as SFT row and pair) or ``dropped``; ``p_revision`` is the
    judge's P(revision better than the initial response), None when it was not judged.
    """

    prompt_id: str
    conversation: Chat
    initial: str
    rounds: list[dict[str, Any]]
    final: str
    principles: list[str]
    status: str
    reason: str
    p_revision: float | None
    swap_consistent: bool | None
    p_first_order: float | None = None
    p_swapped: float | None = None
    notes: list[Note] = field(default_factory=list)

    @property
    def principle(self) -> str:
        return "+".join(self.principles) or "(no rounds)"

    @property
    def kept(self) -> bool:
        return self.status == "kept"

    @property
    def margin(self) -> float | None:
        return None if self.p_revision is None else 2 * self.p_revision - 1


@dataclass(frozen=True)
class PrincipleChains:
    """How the chains that drew one principle fared."""

    principle: str
    chains: int
    judged: int
    kept: int
    mean_margin: float | None


@dataclass(frozen=True)
class ReviseFacts:
    headline: list[Figure]
    costs: list[StageCost]
    drops: list[Drop]
    principles: list[PrincipleChains]
    rows: list[ChainRow]
    openings: list[tuple[str, int]]
    repeated_sentences: list[tuple[str, int]]
    missing: list[str]


def _headline(rev: dict[str, Any], summary: dict[str, Any]) -> list[Figure]:
    ver = rev.get("verification") or {}
    return [
        Figure("prompts", "prompts read", rev.get("prompts_read")),
        Figure("chains", "chains", rev.get("chains")),
        Figure("judged", "revisions judged", ver.get("judged")),
        Figure("kept", "revisions kept", ver.get("kept")),
        Figure("fraction_kept", "share kept", ver.get("fraction_kept")),
        Figure("pairs", "pairs published", rev.get("pairs")),
        Figure("sft_rows", "SFT rows published", rev.get("sft_rows")),
        Figure("swap_consistency", "swap consistency", ver.get("swap_consistency")),
        Figure("mean_margin", "mean margin of pairs", rev.get("mean_margin")),
        Figure("seconds", "total seconds", (summary.get("run") or {}).get("seconds")),
    ]


def _costs(rev: dict[str, Any], summary: dict[str, Any]) -> list[StageCost]:
    cache = rev.get("cache") or {}
    ver = rev.get("verification") or {}
    costs = [
        StageCost(
            "revise (initial, critiques, revisions)",
            rev.get("seconds"),
            None,
            cache.get("hits"),
            cache.get("misses"),
            "tokens not recorded" + ("" if rev.get("cache") else "; call cache off"),
        ),
        StageCost(
            "verify (judge)",
            ver.get("seconds"),
            None,
            None,
            None,
            "tokens and cache reuse not recorded" if ver.get("enabled") else "verification off",
        ),
    ]
    if "run" in summary:
        costs.append(StageCost("whole run", summary["run"].get("seconds"), None, None, None, ""))
    return costs


def _drops(rev: dict[str, Any], rejects: list[dict[str, Any]]) -> list[Drop]:
    drops = [Drop("degenerate", reason, n) for reason, n in (rev.get("degenerate") or {}).items()]
    ver = (rev.get("verification") or {}).get("dropped") or {}
    drops += [Drop("verify", reason, n) for reason, n in ver.items()]
    if not drops:  # no summary: count the rejects themselves
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for r in rejects:
            counts[(r.get("stage", "?"), str(r.get("reason", "")).split(" (")[0])] += 1
        drops = [Drop(stage, reason, n) for (stage, reason), n in sorted(counts.items())]
    return drops


def _rows(
    chains: list[dict[str, Any]],
    judgments: list[dict[str, Any]],
    pairs: list[dict[str, Any]],
    rejects: list[dict[str, Any]],
) -> list[ChainRow]:
    kept = {p["prompt_id"] for p in pairs}
    judged = {j["prompt_id"]: j for j in judgments}
    reasons = {
        (r.get("row") or {}).get("prompt_id"): r["reason"]
        for r in rejects
        if r.get("stage") == "revise"
    }
    rows = []
    for c in chains:
        rounds = c.get("rounds") or []
        final = rounds[-1]["revision"] if rounds else c["initial"]
        j = judged.get(c["prompt_id"])
        p = None
        if j is not None:  # the verify stage judges the revision as candidate a
            p = j["p_a"] if "/revision" in j["candidate_a"] else 1 - j["p_a"]
        status = "kept" if c["prompt_id"] in kept else "dropped"
        reason = "" if status == "kept" else reasons.get(c["prompt_id"], "not published")
        rows.append(
            ChainRow(
                prompt_id=c["prompt_id"],
                conversation=c.get("messages") or [],
                initial=c["initial"],
                rounds=rounds,
                final=final,
                principles=list(dict.fromkeys(r["principle_id"] for r in rounds)),
                status=status,
                reason=reason,
                p_revision=p,
                swap_consistent=j["swap_consistent"] if j else None,
                p_first_order=j["p_first_order"] if j else None,
                p_swapped=j["p_swapped"] if j else None,
                notes=judge_notes(j.get("raw") or {}) if j else [],
            )
        )
    return rows


def _principles(rows: list[ChainRow]) -> list[PrincipleChains]:
    grouped: dict[str, list[ChainRow]] = defaultdict(list)
    for row in rows:
        for pid in row.principles or ["(no rounds)"]:
            grouped[pid].append(row)
    out = []
    for pid, members in sorted(grouped.items()):
        margins = [r.margin for r in members if r.margin is not None]
        out.append(
            PrincipleChains(
                principle=pid,
                chains=len(members),
                judged=len(margins),
                kept=sum(r.kept for r in members),
                mean_margin=round(sum(margins) / len(margins), 4) if margins else None,
            )
        )
    return out


def gather_revise(run_dir: Path) -> ReviseFacts:
    """Read a revise run directory into :class:`ReviseFacts`."""
    summary = run_state.read_summary(run_dir)
    rev = summary.get("revise") or {}
    chains = read_rows(run_dir, "revisions.jsonl")
    rejects = read_rows(run_dir, run_files.REJECTS) or []
    missing = []
    if chains is None:
        missing.append("revisions.jsonl: the revise run has not written its chains")
    if not rev:
        missing.append("summary.json has no revise section: the run did not finish")
    rows = _rows(
        chains or [],
        read_rows(run_dir, run_files.JUDGMENTS) or [],
        read_rows(run_dir, run_files.PAIRS) or [],
        rejects,
    )
    return ReviseFacts(
        headline=_headline(rev, summary),
        costs=_costs(rev, summary),
        drops=_drops(rev, rejects),
        principles=_principles(rows),
        rows=rows,
        openings=[tuple(x) for x in rev.get("openings") or []],  # type: ignore[misc]
        repeated_sentences=[tuple(x) for x in rev.get("repeated_sentences") or []],  # type: ignore[misc]
        missing=missing,
    )
