"""The figures of a ``charter run`` directory, gathered into typed records for the page.

The headline figures are the ones ``charter run`` itself wrote to ``summary.json``, shown as
written, so the page and the terminal table never disagree. What summary.json does not hold
(per-principle figures, the length bias, each comparison's fate) is computed here from
``judgments.jsonl``, ``pairs.jsonl``, ``candidates.jsonl`` and ``rejects.jsonl``. A run that
stopped early gets a page of what exists and a list of what is missing; one stopped by a budget
gets a note saying how to resume instead, since its later files are not due yet. The run's own
plan (``plan.json``) is set beside its actual figures (:mod:`charter.report.plan_facts`).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from charter import run_files, run_state
from charter.jsonl import read_jsonl
from charter.judges.principles import principle_scores
from charter.records import CandidateSet, Judgment, from_row
from charter.report.plan_facts import BudgetStop, PlanCheck, gather_budget_stop, gather_plan
from charter.report.principle_facts import PrincipleVectors, gather_vectors, per_principle_inputs
from charter.report.table_rows import Response, TableRow, judge_notes


@dataclass(frozen=True)
class Figure:
    """One headline number: ``key`` is its stable id on the page, ``value`` as recorded."""

    key: str
    label: str
    value: Any
    note: str = ""


@dataclass(frozen=True)
class StageCost:
    """Time, tokens and call-cache reuse of one stage (None where the run did not record it)."""

    stage: str
    seconds: float | None
    tokens: int | None
    cache_hits: int | None
    cache_misses: int | None
    note: str = ""


@dataclass(frozen=True)
class PrincipleStats:
    """One principle's comparisons and the pairs it decided.

    ``mean_margin`` is the mean of ``|2 p_a - 1|`` over its comparisons (how sure the judge was);
    ``longer_won`` the share of its comparisons, among those with responses of different length
    and a verdict either way, that the longer response won.
    """

    principle: str
    comparisons: int
    mean_margin: float | None
    swap_consistency: float | None
    first_position_rate: float | None
    longer_won: float | None
    pairs: int
    mean_pair_margin: float | None


@dataclass(frozen=True)
class Drop:
    """A count of rows some stage dropped or rejected, for one reason."""

    stage: str
    reason: str
    count: int


@dataclass(frozen=True)
class RunFacts:
    """Everything a pipeline run's page shows."""

    headline: list[Figure]
    costs: list[StageCost]
    drops: list[Drop]
    principles: list[PrincipleStats]
    rows: list[TableRow]
    judgments: list[Judgment]
    missing: list[str]
    settings: dict[str, Any]
    plan: PlanCheck | None = None
    budget_stop: BudgetStop | None = None
    not_due: list[str] = field(default_factory=list)
    """What a run stopped by its budget has not written yet: expected, not a warning."""
    vectors: PrincipleVectors | None = None
    """How the principles relate, for a run that judged under every principle."""


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The run's composed config (``.hydra/config.yaml``) as plain data, {} if absent."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    node = OmegaConf.load(path)
    data = OmegaConf.to_container(node, resolve=False)
    return data if isinstance(data, dict) else {}


def read_rows(run_dir: Path, name: str) -> list[dict[str, Any]] | None:
    path = run_dir / name
    return [row for _, row in read_jsonl(path)] if path.is_file() else None


def first_position_rate(judgments: list[Judgment]) -> float | None:
    """Share of single-order verdicts that picked the response shown first (as the judge stage
    computes it for summary.json)."""
    n = len(judgments)
    hits = sum((j.p_first_order > 0.5) + (j.p_swapped < 0.5) for j in judgments)
    return round(hits / (2 * n), 4) if n else None


def principle_stats(
    judgments: list[Judgment], pairs: list[dict[str, Any]], lengths: dict[str, int]
) -> list[PrincipleStats]:
    """Per-principle figures from the judgments and the published pairs, sorted by id."""
    by_principle: dict[str, list[Judgment]] = defaultdict(list)
    for j in judgments:
        by_principle[j.principle_id].append(j)
    pair_margins: dict[str, list[float]] = defaultdict(list)
    for p in pairs:
        for pid in p["principle_ids"]:
            pair_margins[pid].append(p["margin"])
    out = []
    for pid in sorted(by_principle.keys() | pair_margins.keys()):
        js = by_principle.get(pid, [])
        decided = [
            (lengths[j.candidate_a] > lengths[j.candidate_b]) == (j.p_a > 0.5)
            for j in js
            if j.p_a != 0.5
            and j.candidate_a in lengths
            and j.candidate_b in lengths
            and lengths[j.candidate_a] != lengths[j.candidate_b]
        ]
        out.append(
            PrincipleStats(
                principle=pid,
                comparisons=len(js),
                mean_margin=_mean([abs(2 * j.p_a - 1) for j in js]),
                swap_consistency=_mean([float(j.swap_consistent) for j in js]),
                first_position_rate=first_position_rate(js),
                longer_won=_mean([float(d) for d in decided]),
                pairs=len(pair_margins.get(pid, [])),
                mean_pair_margin=_mean(pair_margins.get(pid, [])),
            )
        )
    return out


def _drops(summary: dict[str, Any], rejects: list[dict[str, Any]]) -> list[Drop]:
    """Pairs-stage drops as the stage counted them; other stages' rejects grouped by reason
    with numbers blanked (``... 812 tokens ...`` and ``... 640 tokens ...`` are one reason)."""
    dropped = (summary.get("pairs") or {}).get("dropped") or {}
    drops = [Drop("pairs", reason, n) for reason, n in dropped.items()]
    counts = Counter(
        (r.get("stage", "?"), re.sub(r"[0-9.]+", "N", str(r.get("reason", ""))))
        for r in rejects
        if r.get("stage") != "pairs"
    )
    drops += [Drop(stage, reason, n) for (stage, reason), n in sorted(counts.items())]
    return drops


def _cost(
    stage: str, section: dict[str, Any] | None, tokens: int | None, tokens_note: str
) -> StageCost:
    if section is None:  # a plan's tokens are not spent until the stage runs
        planned = f"plan.json expects {tokens} prompt tokens" if tokens is not None else ""
        return StageCost(
            stage, None, None, None, None, "; ".join(x for x in ("not run", planned) if x)
        )
    cache = section.get("cache") or {}
    note = "" if section.get("cache") else "call cache off"
    return StageCost(
        stage=stage,
        seconds=section.get("seconds"),
        tokens=tokens,
        cache_hits=cache.get("hits"),
        cache_misses=cache.get("misses"),
        note="; ".join(x for x in (note, tokens_note) if x),
    )


def _judge_tokens(plan: PlanCheck | None) -> tuple[int | None, str]:
    """The judge's prompt tokens and how the page labels them: the pipeline does not count
    them, but the run's plan did, with the judge's own tokenizer, for every chat."""
    if plan is None or plan.judge_prompt_tokens is None:
        return None, "tokens not recorded for this stage (no plan.json)"
    note = "tokens: prompt tokens, from plan.json (every chat, cached or not)"
    if plan.judge_tokens_estimated:
        note += (
            "; an estimate: responses not generated yet when the run planned were counted as "
            "placeholders of max_new_tokens tokens"
        )
    return plan.judge_prompt_tokens, note


def _headline(
    summary: dict[str, Any], judgments: list[Judgment], pairs: list[dict[str, Any]] | None
) -> list[Figure]:
    gen, jud, par = (summary.get(k) or {} for k in ("generate", "judge", "pairs"))
    n = len(judgments)
    figures = [
        Figure("prompts", "prompts read", gen.get("prompts_read")),
        Figure("candidates", "candidates", gen.get("candidates")),
        Figure("comparisons", "comparisons (each in 2 orders)", jud.get("comparisons", n or None)),
        Figure("pairs", "pairs published", par.get("pairs", None if pairs is None else len(pairs))),
        Figure(
            "dropped", "pairs dropped", sum((par.get("dropped") or {}).values()) if par else None
        ),
        Figure(
            "swap_consistency",
            "swap consistency",
            jud.get("swap_consistency", _mean([float(j.swap_consistent) for j in judgments])),
            "share of comparisons where both orders picked the same winner",
        ),
        Figure(
            "first_position_rate",
            "first-position rate",
            jud.get("first_position_rate", first_position_rate(judgments)),
            "share of single-order verdicts for the response shown first (0.5 is unbiased)",
        ),
        Figure(
            "mean_margin",
            "mean margin of pairs",
            par.get("mean_margin", _mean([p["margin"] for p in pairs or []])),
            "2 * p_chosen - 1, averaged over published pairs",
        ),
        Figure("seconds", "total seconds", (summary.get("run") or {}).get("seconds")),
    ]
    return figures


def _row(
    j: Judgment,
    texts: dict[str, str],
    chats: dict[str, Any],
    status: str,
    reason: str,
    pair: dict[str, Any] | None,
) -> TableRow:
    if pair is not None:
        first, second, p = pair["chosen_id"], pair["rejected_id"], pair["p_chosen"]
    elif j.p_a >= 0.5:
        first, second, p = j.candidate_a, j.candidate_b, j.p_a
    else:
        first, second, p = j.candidate_b, j.candidate_a, 1 - j.p_a
    scores = principle_scores(j) or {}
    return TableRow(
        prompt_id=j.prompt_id,
        principle=j.principle_id,
        status=status,
        reason=reason,
        first=Response(first, texts.get(first, "")),
        second=Response(second, texts.get(second, "")),
        p_first=p,
        conversation=chats.get(j.prompt_id, []),
        p_first_order=j.p_first_order,
        p_swapped=j.p_swapped,
        a_id=j.candidate_a,
        swap_consistent=j.swap_consistent,
        notes=judge_notes(j.raw),
        principle_scores={k: v if first == j.candidate_a else 1 - v for k, v in scores.items()},
    )


def _not_selected_reason(settings: dict[str, Any]) -> str:
    strategy = (settings.get("pairs") or {}).get("strategy")
    if strategy == "best_vs_worst":
        return "best_vs_worst publishes one pair per prompt (top vs bottom ranked)"
    return f"the pair strategy ({strategy or 'unknown'}) chose other pairs"


def comparison_rows(
    judgments: list[Judgment],
    sets: list[CandidateSet],
    pairs: list[dict[str, Any]] | None,
    rejects: list[dict[str, Any]],
    settings: dict[str, Any],
) -> list[TableRow]:
    """One row per judged comparison, marked kept, dropped (with the pairs stage's reason),
    not selected, or pending (no pairs stage yet)."""
    texts = {c.candidate_id: c.text for s in sets for c in s.candidates}
    chats: dict[str, Any] = {s.prompt_id: s.messages for s in sets}
    by_key: dict[frozenset[str], dict[str, Any]] = {}
    for p in pairs or []:
        by_key[frozenset((p["chosen_id"], p["rejected_id"]))] = p
        texts.setdefault(p["chosen_id"], p["chosen"][-1]["content"])
        texts.setdefault(p["rejected_id"], p["rejected"][-1]["content"])
        chats.setdefault(p["prompt_id"], p["prompt"])
    reasons = {r["source"]: r["reason"] for r in rejects if r.get("stage") == "pairs"}
    rows = []
    for j in judgments:
        pair = by_key.get(frozenset((j.candidate_a, j.candidate_b)))
        reason = reasons.get(f"{j.candidate_a} vs {j.candidate_b}")
        if pair is not None:
            status, reason = "kept", ""
        elif pairs is None:
            status, reason = "pending", "the pairs stage has not run"
        elif reason is not None:
            status = "dropped"
        else:
            status, reason = "not selected", _not_selected_reason(settings)
        rows.append(_row(j, texts, chats, status, reason, pair))
    return rows


STEPS = (
    (run_files.CANDIDATES, "generate"),
    (run_files.JUDGMENTS, "judge"),
    (run_files.PAIRS, "pairs"),
)


def finished(summary: dict[str, Any]) -> bool:
    """Whether every stage has its completion mark."""
    return all(stage in summary.get(run_state.STAGES_KEY, {}) for _, stage in STEPS)


def _not_due(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    """A budget-stopped run's unwritten files and unfinished stages, as the note lists them."""
    done = summary.get(run_state.STAGES_KEY, {})
    return [
        f"{name}: the {stage} stage has not finished"
        for name, stage in STEPS
        if stage not in done or not (run_dir / name).is_file()
    ]


def _missing(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    missing = [
        f"{name}: the {stage} stage has not written it (charter {stage} run_dir={run_dir})"
        for name, stage in STEPS
        if not (run_dir / name).is_file()
    ]
    if not summary:
        missing.append("summary.json: no stage figures (times, cache reuse) were recorded")
    done = summary.get(run_state.STAGES_KEY, {})
    for name, stage in STEPS:
        if summary and (run_dir / name).is_file() and stage not in done:
            missing.append(f"the {stage} stage has no completion mark: it may have been cut short")
    return missing


def gather_run(run_dir: Path) -> RunFacts:
    """Read a pipeline run directory into :class:`RunFacts` (whatever stages it has)."""
    summary = run_state.read_summary(run_dir)
    settings = saved_config(run_dir)
    sets_rows = read_rows(run_dir, run_files.CANDIDATES) or []
    sets = [CandidateSet.from_dict(r) for r in sets_rows]
    judgments = [from_row(Judgment, r) for r in read_rows(run_dir, run_files.JUDGMENTS) or []]
    pairs = read_rows(run_dir, run_files.PAIRS)
    rejects = read_rows(run_dir, run_files.REJECTS) or []
    lengths = {c.candidate_id: len(c.text) for s in sets for c in s.candidates}
    plan = gather_plan(run_dir, summary)
    stop = gather_budget_stop(run_dir, summary, finished(summary))
    generated = (summary.get("generate") or {}).get("generated_tokens")
    costs = [
        _cost("generate", summary.get("generate"), generated, "tokens: generated tokens"),
        _cost("judge", summary.get("judge"), *_judge_tokens(plan)),
    ]
    if "pairs" in summary:
        costs.append(StageCost("pairs", None, None, None, None, "seconds not recorded"))
    if "run" in summary:
        seconds = summary["run"].get("seconds")
        costs.append(StageCost("whole run", seconds, None, None, None, "wall clock, all stages"))
    return RunFacts(
        headline=_headline(summary, judgments, pairs),
        costs=costs,
        drops=_drops(summary, rejects),
        principles=principle_stats(*per_principle_inputs(judgments, pairs or []), lengths),
        rows=comparison_rows(judgments, sets, pairs, rejects, settings),
        judgments=judgments,
        missing=_missing(run_dir, summary) if stop is None or stop.finished else [],
        settings=settings,
        plan=plan,
        budget_stop=stop,
        not_due=_not_due(run_dir, summary) if stop is not None and not stop.finished else [],
        vectors=gather_vectors(judgments),
    )
