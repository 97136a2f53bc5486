"""The revise run's own figures, for summary.json and the dataset card's extra section."""

from __future__ import annotations

from typing import Any


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "(empty)"


def revise_section(figures: dict[str, Any]) -> str:
    """Markdown for the card: the recipe, verification, and what the revisions repeat."""
    kept = figures["verification"]["fraction_kept"]
    verified = figures["verification"]["enabled"]
    lines = [
        "## Critique and revision",
        "",
        "Each prompt got an initial response, then "
        f"{figures['rounds']} round(s) of critique and revision under a principle drawn per round.",
        "`sft.parquet` (config `sft`) holds TRL prompt-completion rows whose completion is the",
        "final revision, with the whole chain in `revision_chain`; the pairs above are (revision",
        "chosen, initial rejected).",
        "",
    ]
    if verified:
        share = "n/a" if kept is None else f"{kept:.1%}"
        lines += [
            "The judge compared every revision with its initial response in both orders, under the",
            "chain's principles; pairs where it did not prefer the revision by "
            f"`min_margin` = {figures['verification']['min_margin']} were dropped.",
            "",
            f"**Verified: {figures['verification']['kept']} of {figures['verification']['judged']} "
            f"judged revisions kept ({share}).**",
        ]
    else:
        lines += [
            "**Verification was off (the plain recipe):** no judge checked the revisions; pairs",
            'carry the recipe\'s hard label (`p_chosen` 1, `judge_model` "unverified").',
        ]
    lines += ["", "Most common revision openings:", "", "| opening | revisions |", "|---|---|"]
    lines += [f"| {_cell(o)} | {n} |" for o, n in figures["openings"]] or ["| (none) | 0 |"]
    lines += [
        "",
        "Most repeated revision sentences (in how many prompts' revisions):",
        "",
        "| sentence | prompts |",
        "|---|---|",
    ]
    lines += [f"| {_cell(s)} | {n} |" for s, n in figures["repeated_sentences"]] or [
        "| (none repeated) | 0 |"
    ]
    return "\n".join(lines) + "\n"
