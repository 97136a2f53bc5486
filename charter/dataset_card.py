"""The dataset card (README.md) of a run: a YAML header the Hub reads, then provenance.

A card must let a stranger reproduce or distrust the data: the exact constitution text and hash,
both models, sampling settings, how many rows were kept and why the others were dropped, and how
often the judge agreed with itself when the order of the responses was swapped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from charter.judges.principles import FLAT_BELOW, PrincipleAgreement, agreement_of
from charter.records import Judgment


@dataclass(frozen=True)
class CardFacts:
    """Everything the card reports; filled by the CLI from the run's files."""

    experiment: str
    constitution_name: str
    constitution_version: str
    constitution_sha256: str
    constitution_text: str
    generator_model: str
    judge_model: str
    judge_method: str
    judge_template_sha256: str
    sampling: dict[str, Any]
    num_samples: int
    pair_settings: dict[str, Any]
    counts: dict[str, int]
    dropped: dict[str, int] = field(default_factory=dict)
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    swap_consistency: float | None = None
    mean_margin: float | None = None
    extra_configs: list[dict[str, Any]] = field(default_factory=list)
    extra_section: str = ""


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < bound:
            return label
    return "100K<n<1M"


def render_card(facts: CardFacts) -> str:
    """Render README.md for the run's published pairs."""
    header = {
        "pretty_name": f"charter preference pairs: {facts.experiment}",
        "language": ["en"],
        "tags": ["preference", "rlaif", "constitutional-ai", "dpo", "reward-modeling", "charter"],
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(facts.counts.get("pairs", 0))],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "pairs.parquet"}]},
            *facts.extra_configs,
        ],
    }
    swap = "n/a" if facts.swap_consistency is None else f"{facts.swap_consistency:.1%}"
    margin = "n/a" if facts.mean_margin is None else f"{facts.mean_margin:.3f}"
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# charter preference pairs: {facts.experiment}",
        "",
        "Preference pairs labelled by an AI judge under a written constitution, made with charter.",
        "Rows follow TRL's conversational preference format (`prompt` as a list of messages,",
        "`chosen` and `rejected` as one assistant message each) plus the judge's soft label",
        "(`p_chosen`), `margin` (2·p_chosen − 1), the principle ids used, whether the judge agreed",
        "with itself in both orders (`swap_consistent`), the models and the constitution hash.",
        "",
        "## Provenance",
        "",
        "| what | value |",
        "|---|---|",
        f"| constitution | {facts.constitution_name} v{facts.constitution_version} |",
        f"| constitution sha256 | `{facts.constitution_sha256}` |",
        f"| generator model | `{facts.generator_model}` |",
        f"| judge model | `{facts.judge_model}` |",
        f"| judge method | {facts.judge_method} |",
        f"| judge template sha256 | `{facts.judge_template_sha256}` |",
        f"| samples per prompt | {facts.num_samples} |",
        f"| sampling | `{json.dumps(facts.sampling, sort_keys=True)}` |",
        f"| pair selection | `{json.dumps(facts.pair_settings, sort_keys=True)}` |",
        f"| swap consistency of judged comparisons | {swap} |",
        f"| mean margin of published pairs | {margin} |",
        "",
        "## Counts",
        "",
        "| stage | rows |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts.counts.items()),
        "",
        "## Dropped and rejected",
        "",
        "| reason | rows |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in {**facts.dropped, **facts.rejects_by_reason}.items()),
        *([] if facts.dropped or facts.rejects_by_reason else ["| (none) | 0 |"]),
        "",
        "Every dropped or rejected row is listed with its reason in `rejects.jsonl`.",
        "",
        *([facts.extra_section.rstrip(), ""] if facts.extra_section else []),
        "## Constitution",
        "",
        "```yaml",
        facts.constitution_text.rstrip(),
        "```",
        "",
        "## Limitations",
        "",
        "Labels come from an AI judge, not from people; they are only as good as the judge model.",
        "Check agreement with human labels on a sample (`charter eval-judge`) before training.",
        "",
    ]
    return "\n".join(lines)


def judge_section(judge: dict[str, Any]) -> str:
    """The card's lines on a calibrated judge and on a cascade's tiers (empty for neither)."""
    lines = []
    calibration = judge.get("calibration")
    if calibration:
        lines += [
            "## Calibration",
            "",
            f"`p_chosen` is calibrated on {calibration['fitted_on']} human labels "
            f"(`{calibration['file']}`, sha256 `{calibration['sha256'][:12]}`); the judge's raw "
            "probability is kept in `judgments.jsonl` as `raw.uncalibrated_p_a`.",
            "",
        ]
    cascade = judge.get("cascade")
    if cascade:
        est = cascade["last_tier_only_estimate"]
        lines += [
            "## Judge cascade",
            "",
            f"Escalated when confidence < {cascade['escalate_below']}"
            + (" or the two orders disagreed" if cascade["escalate_swap_inconsistent"] else "")
            + f". {cascade['needs_human']} comparisons stayed unsure at the last tier "
            "(`needs_human`; `charter review export` sends them first).",
            "",
            "| tier | comparisons | escalation rate | seconds | prompt tokens |",
            "|---|---|---|---|---|",
            *(
                f"| {name} | {t['comparisons']} | {t['escalation_rate']} | {t['seconds']} | "
                f"{t['prompt_tokens']} |"
                for name, t in cascade["tiers"].items()
            ),
            "",
            f"The last tier alone on all {est['comparisons']} comparisons: about "
            f"{est['seconds']} s and {est['prompt_tokens']} prompt tokens ({est['basis']}).",
            "",
        ]
    return "\n".join(lines)


def vector_counts(judgments: list[Judgment]) -> dict[str, int]:
    """The card's count of per-principle judgments in a ``principle_per=all`` run ({} else)."""
    found = agreement_of(judgments)
    if found is None:
        return {}
    key = "principle judgments (comparisons x principles, each in 2 orders)"
    return {key: found.comparisons * len(found.principles)}


def principle_section(judgments: list[Judgment]) -> str:
    """The card's lines on a ``principle_per=all`` run (empty for any other): the score
    columns, the aggregation, and how the principles relate (see
    :class:`~charter.judges.principles.PrincipleAgreement`)."""
    found = agreement_of(judgments)
    if found is None:
        return ""
    first = next(j for j in judgments if j.raw.get("principle_scores"))
    how = first.raw.get("principle_aggregation", "log_odds")
    weights = first.raw["principle_weights"]
    rule = {
        "log_odds": "the weighted mean of their log-odds",
        "mean": "the weighted mean of their probabilities",
    }.get(how, how)
    return "\n".join(
        [
            "## Principles compared",
            "",
            f"Every comparison was judged under each of the {len(found.principles)} principles "
            "(`principle_per=all`), in both orders.",
            "Each pair has one `score_<principle id>` column per principle: P(chosen better) "
            "under that principle alone, so a trainer can pick or reweight principles without "
            "judging again.",
            f"`p_chosen` combines them: {rule}, weighted by each principle's `weight` "
            f"(`principle_aggregation={how}`).",
            "",
            *agreement_table(found, weights),
            "",
            f"Agreement: share of the {found.comparisons} comparisons where the two principles "
            "pick the same winner. Decisive: share of comparisons whose label flips when that "
            "principle alone is left out of the aggregation. Never separates: the principle's "
            f"|p − 0.5| stayed below {FLAT_BELOW} on every comparison"
            + (f": {', '.join(f'`{p}`' for p in found.flat)}." if found.flat else "; none did."),
            "",
        ]
    )


def agreement_table(found: PrincipleAgreement, weights: dict[str, float]) -> list[str]:
    """A Markdown table: one row per principle with its weight, decisiveness and largest
    separation, and its agreement with every principle (columns numbered like the rows)."""
    ids = found.principles
    numbers = " | ".join(str(i + 1) for i in range(len(ids)))

    def share(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    rows = [
        f"| {i + 1} | `{pid}` | {weights[pid]:g} | {share(found.decisiveness[pid])} | "
        f"{found.separation[pid]:.3f} | "
        + " | ".join(share(found.agreement[pid][other]) for other in ids)
        + " |"
        for i, pid in enumerate(ids)
    ]
    return [
        f"| # | principle | weight | decisive | max abs(p − 0.5) | {numbers} |",
        "|---|---|---|---|---|" + "---|" * len(ids),
        *rows,
    ]
