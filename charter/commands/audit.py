"""``charter audit``: principles proposed from the pairs where the judge and people disagree.

Like every command module, this is where the config becomes objects; the audit itself lives in
:mod:`charter.audit` (the definitions of "add", "replace" and the held-out check are in
:mod:`charter.audit.score`).

Writes into the output directory: ``verdicts.jsonl`` (every labelled pair's verdict and split),
``candidates.jsonl`` (every valid candidate with its figures), ``rejects.jsonl`` (unusable input
rows and unusable proposals, each with its reason), ``audit.json`` (all figures), and, when a
candidate passes the held-out check, ``proposed.yaml`` and ``proposed.diff``. The user's
constitution file is only read.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from charter.audit.disagreements import (
    LabelledVerdict,
    agreement_under,
    is_held_out,
    judge_labelled,
)
from charter.audit.labelled import load_labelled
from charter.audit.proposal_file import unified_diff, with_principle
from charter.audit.propose import (
    PROMPT_SHA256,
    Candidate,
    ProposalSettings,
    candidates_from,
    example_groups,
    propose,
)
from charter.audit.score import (
    Gain,
    ScoreSettings,
    add_gains,
    gain_on,
    per_principle,
    replace_gains,
    select,
    shortlist,
)
from charter.building import EngineCache, build, open_call_cache, resolve_path
from charter.commands.eval_judge import judge_label
from charter.commands.shared import stage_chunk_size
from charter.constitution import load_constitution, validate_constitution
from charter.errors import InputError
from charter.jsonl import write_jsonl_atomic, write_text_atomic
from charter.judge_building import build_judge
from charter.judge_eval.ppi import wilson
from charter.progress import console, stage_progress, summary_table
from charter.records import to_row


def _scored(
    rows: list[LabelledVerdict],
    under: list[float],
    *,
    share: float,
    weakest: str,
    settings: ScoreSettings,
) -> dict[str, Gain]:
    """A candidate's add and replace figures on one split."""
    base = [r.agreement for r in rows]
    drawn = [r.principle_id for r in rows]
    diffs = [c - b for b, c in zip(base, under, strict=True)]
    on_weakest = [d for d, p in zip(diffs, drawn, strict=True) if p == weakest]
    boot = {"resamples": settings.bootstrap, "seed": settings.seed}
    return {
        "add": gain_on(
            base,
            add_gains(base, under, share),
            gain_if_drawn=sum(diffs) / len(diffs),
            **boot,
        ),
        "replace": gain_on(
            base,
            replace_gains(base, under, drawn, weakest),
            gain_if_drawn=sum(on_weakest) / len(on_weakest) if on_weakest else None,
            **boot,
        ),
    }


def _agreement(rows: list[LabelledVerdict]) -> dict[str, float] | None:
    if not rows:
        return None
    i = wilson(sum(r.agreement for r in rows), len(rows))
    return {"value": round(i.estimate, 4), "low": round(i.low, 4), "high": round(i.high, 4)}


def _finish(out_dir: Path, result: dict[str, Any], line: str) -> None:
    """Write ``audit.json`` and end with one line."""
    write_text_atomic(out_dir / "audit.json", json.dumps(result, indent=2) + "\n")
    print(line, flush=True)


def audit(cfg: DictConfig, out_dir: Path) -> None:
    """``charter audit``: judge labelled pairs, propose principles from the disagreements, score
    them held-in then held-out, and write ``proposed.yaml`` for the pick (if any passes)."""
    proposal: ProposalSettings = build(cfg.proposal, "proposal")
    scoring: ScoreSettings = build(cfg.scoring, "scoring")
    data, run_dir = cfg.get("data"), cfg.get("run_dir")
    pairs, data_rejects, source, run_sha = load_labelled(
        resolve_path(data) if data is not None else None,
        resolve_path(run_dir) if run_dir is not None else None,
        cfg.limit,
    )
    constitution_path = resolve_path(cfg.constitution.path)
    constitution = load_constitution(constitution_path)
    if run_sha and run_sha != constitution.sha256:
        console.print(
            f"note: the run was judged under another constitution than {constitution_path}; "
            "the audit judges its pairs under the given one",
            markup=False,
        )
    if cfg.judge.get("engine") is None or cfg.judge.get("tiers") is not None:
        raise InputError(
            "the audit's proposer is the judge's own model: use a judge with an engine "
            "(not a cascade or a reward model)",
            field="judge",
        )
    if cfg.principle:
        constitution.principle(cfg.principle)  # an unknown id fails here, before any model
    split = [is_held_out(p.id, cfg.seed, scoring.held_out_fraction) for p in pairs]
    if all(split) or not any(split):
        raise InputError(
            f"all {len(pairs)} pairs fell in one split (held-out share "
            f"{scoring.held_out_fraction}); the audit needs both: give more pairs (limit=) or "
            "change scoring.held_out_fraction=",
            field="scoring.held_out_fraction",
        )
    engines = EngineCache(open_call_cache(cfg))
    judge = build_judge(cfg.judge, "judge", engines, constitution_sha256=constitution.sha256)
    engine = engines.get(cfg.judge.engine, "judge.engine")
    chunk = stage_chunk_size(cfg, engine)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    with stage_progress("audit: judge the labelled pairs", len(pairs)) as advance:
        rows = judge_labelled(
            pairs,
            judge,
            constitution,
            seed=cfg.seed,
            principle=cfg.principle,
            held_out_fraction=scoring.held_out_fraction,
            chunk_size=chunk,
            on_progress=advance,
        )
    seconds["judge_pairs"] = round(time.perf_counter() - start, 2)
    write_jsonl_atomic(
        out_dir / "verdicts.jsonl",
        [{**to_row(r.judgment), "split": "held_out" if r.held_out else "held_in"} for r in rows],
    )
    held_in = [r for r in rows if not r.held_out]
    held_out = [r for r in rows if r.held_out]
    wrong_in = [r for r in held_in if r.disagrees]
    wrong_out = [r for r in held_out if r.disagrees]
    result: dict[str, Any] = {
        "data": source,
        "constitution": str(constitution_path),
        "constitution_sha256": constitution.sha256,
        "judge": judge_label(cfg),
        "seed": cfg.seed,
        "principle": cfg.principle,
        "held_out_fraction": scoring.held_out_fraction,
        "n": {"pairs": len(rows), "held_in": len(held_in), "held_out": len(held_out)},
        "agreement": {
            "all": _agreement(rows),
            "held_in": _agreement(held_in),
            "held_out": _agreement(held_out),
        },
        "disagreements": {"held_in": len(wrong_in), "held_out": len(wrong_out)},
        "selected": None,
        "seconds": seconds,
    }
    if data_rejects:
        write_jsonl_atomic(out_dir / "rejects.jsonl", [asdict(r) for r in data_rejects])
    if not wrong_in and not wrong_out:
        _finish(
            out_dir,
            result,
            f"charter audit: the judge agrees with people on all {len(rows)} pairs "
            "(no disagreements); nothing to propose",
        )
        return
    if not wrong_in:
        _finish(
            out_dir,
            result,
            f"charter audit: all {len(wrong_out)} disagreements fell in the held-out split; "
            "nothing to propose from (raise limit= or lower scoring.held_out_fraction=)",
        )
        return

    start = time.perf_counter()
    groups = example_groups(
        [r.pair for r in wrong_in], proposal.calls, proposal.examples_per_prompt, cfg.seed
    )
    with stage_progress("audit: propose principles", len(groups)) as advance:
        proposals = propose(engine, groups, constitution, proposal, advance)
    candidates, bad = candidates_from(proposals, constitution, weight=scoring.candidate_weight)
    seconds["propose"] = round(time.perf_counter() - start, 2)
    write_jsonl_atomic(out_dir / "rejects.jsonl", [asdict(r) for r in [*data_rejects, *bad]])
    result |= {"proposals": len(proposals), "candidates": len(candidates), "rejected": len(bad)}
    result["proposer_prompt_sha256"] = PROMPT_SHA256
    if not candidates:
        _finish(
            out_dir,
            result,
            f"charter audit: none of the {len(proposals)} proposals was a valid, new principle; "
            f"the reasons are in {out_dir / 'rejects.jsonl'}",
        )
        return

    audited = [constitution.principle(cfg.principle)] if cfg.principle else constitution.principles
    share = scoring.candidate_weight / (sum(p.weight for p in audited) + scoring.candidate_weight)
    table = per_principle([r.principle_id for r in held_in], [r.agreement for r in held_in])
    weakest = table[0]
    result |= {
        "add_share": round(share, 4),
        "per_principle_held_in": [asdict(t) for t in table],
        "weakest": asdict(weakest),
    }
    by_id: dict[str, Candidate] = {c.principle.id: c for c in candidates}
    start = time.perf_counter()
    with stage_progress("audit: candidates, held-in", len(candidates) * len(held_in)) as advance:
        under_in = agreement_under(
            held_in, [c.principle for c in candidates], judge, chunk_size=chunk, on_progress=advance
        )
    scores_in = {
        cid: _scored(held_in, v, share=share, weakest=weakest.principle_id, settings=scoring)
        for cid, v in under_in.items()
    }
    short = shortlist({cid: s["add"].gain.estimate for cid, s in scores_in.items()}, scoring.top_k)
    with stage_progress("audit: shortlist, held-out", len(short) * len(held_out)) as advance:
        under_out = agreement_under(
            held_out,
            [by_id[cid].principle for cid in short],
            judge,
            chunk_size=chunk,
            on_progress=advance,
        )
    seconds["score"] = round(time.perf_counter() - start, 2)
    scores_out = {
        cid: _scored(held_out, v, share=share, weakest=weakest.principle_id, settings=scoring)
        for cid, v in under_out.items()
    }
    picked = select(
        short, {c: s["add"].gain for c, s in scores_out.items()}, scoring.held_out_check
    )

    ranked = sorted(scores_in, key=lambda c: (-scores_in[c]["add"].gain.estimate, c))
    figures = []
    for cid in ranked:
        out = scores_out.get(cid)
        figures.append(
            {
                "id": cid,
                "principle": by_id[cid].as_dict(),
                "source": by_id[cid].proposal.source,
                "examples": list(by_id[cid].proposal.example_ids),
                "held_in": {k: g.as_dict() for k, g in scores_in[cid].items()},
                "held_out": {k: g.as_dict() for k, g in out.items()} if out else None,
                "shortlisted": cid in short,
                "selected": cid == picked,
            }
        )
    write_jsonl_atomic(
        out_dir / "candidates.jsonl",
        [{**f, "text": by_id[f["id"]].proposal.text} for f in figures],
    )
    result |= {
        "held_out_check": scoring.held_out_check,
        "top_k": scoring.top_k,
        "shortlist": short,
        "best_by_held_in": ranked[0],
        "selected": picked,
        "ranking": figures,
    }
    if picked is not None:
        _write_proposal(
            out_dir, constitution_path, by_id[picked], scores_in[picked], scores_out[picked], source
        )
    _summary(result, figures, out_dir)
    _finish(out_dir, result, _last_line(result, out_dir))


def _write_proposal(
    out_dir: Path,
    constitution_path: Path,
    candidate: Candidate,
    held_in: dict[str, Gain],
    held_out: dict[str, Gain],
    source: str,
) -> None:
    """``proposed.yaml`` (the user's text plus the candidate) and ``proposed.diff``."""
    gin, gout = held_in["add"].gain, held_out["add"].gain
    comment = (
        f"Proposed by `charter audit` from {Path(source).name}: adding it changes agreement with\n"
        f"people by {gin.estimate:+.3f} held-in and {gout.estimate:+.3f} held-out "
        f"(95% interval {gout.low:+.3f} to {gout.high:+.3f}, {held_out['add'].n} pairs).\n"
        "Review the text, and bump the version, before using it."
    )
    old = constitution_path.read_text(encoding="utf-8")
    new = with_principle(old, candidate.as_dict(), comment)
    target = out_dir / "proposed.yaml"
    write_text_atomic(target, new)
    problems = validate_constitution(target)
    if problems:  # a bug here, not the user's: the candidate was validated on its own
        raise RuntimeError(f"proposed.yaml does not validate: {problems[0]}")
    write_text_atomic(
        out_dir / "proposed.diff", unified_diff(old, new, str(constitution_path), str(target))
    )


def _summary(result: dict[str, Any], figures: list[dict[str, Any]], out_dir: Path) -> None:
    n, agreement = result["n"], result["agreement"]["all"]
    rows: dict[str, object] = {
        "labelled pairs": f"{n['pairs']} ({n['held_in']} held-in, {n['held_out']} held-out)",
        "agreement (drawn principle)": agreement["value"],
        "disagreements": (
            f"{result['disagreements']['held_in']} held-in, "
            f"{result['disagreements']['held_out']} held-out"
        ),
        "proposals": f"{result['proposals']} -> {result['candidates']} valid and distinct",
        "weakest principle (held-in)": (
            f"{result['weakest']['principle_id']} "
            f"({result['weakest']['agreement']:.2f} on {result['weakest']['n']})"
        ),
    }
    for f in figures[:5]:
        add_in = f["held_in"]["add"]["gain"]["value"]
        cell = f"{add_in:+.3f}"
        if f["held_out"]:
            g = f["held_out"]["add"]["gain"]
            cell += f" | {g['value']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]"
        rows[f"+ {f['id']}"] = cell + (" picked" if f["selected"] else "")
    summary_table(
        f"charter audit: {result['judge']}; adding a candidate: agreement gain held-in | "
        "held-out [95%]",
        rows,
    )


def _last_line(result: dict[str, Any], out_dir: Path) -> str:
    if result["selected"] is not None:
        return (
            f"charter audit: proposed {result['selected']!r}: {out_dir / 'proposed.yaml'} "
            f"(diff: {out_dir / 'proposed.diff'})"
        )
    if not result["shortlist"]:
        return "charter audit: no candidate raised held-in agreement; nothing proposed"
    need = "a 95% interval above 0" if result["held_out_check"] == "interval" else "a gain above 0"
    return (
        f"charter audit: no shortlisted candidate showed {need} on the held-out split; "
        f"nothing proposed (figures in {out_dir / 'audit.json'})"
    )
