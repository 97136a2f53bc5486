"""The README.md saved beside every trained model: what it was trained on, how, and how it did.

A model trained on AI-judged preferences is only as trustworthy as the constitution and judge
behind the labels, so the card names both (with the constitution's hash) and the run they came
from, next to the settings and the measured figures.
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from charter.jsonl import write_text_atomic
from charter.trainers.data import Provenance


def _plain(value: Any) -> Any:
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


def write_model_card(
    model_dir: Path,
    *,
    method: str,
    base_model: str,
    provenance: Provenance,
    settings: Any,
    metrics: dict[str, Any],
) -> Path:
    """Write ``model_dir/README.md`` (Hub YAML header + provenance, settings, figures)."""
    header = ["---", "library_name: transformers", "tags:", "- charter", f"- {method}"]
    header += ["- trl", f"base_model: {json.dumps(base_model)}", "---", ""]

    def listed(values: list[str]) -> str:
        return ", ".join(f"`{v}`" for v in values) or "not recorded in the data"

    body = [
        f"# {method} model trained by charter",
        "",
        f"Base model: `{base_model}`. Trained with TRL on {provenance.rows} rows.",
        "",
        "## Data provenance",
        "",
        f"- data: `{provenance.source}`",
        f"- constitution sha256: {listed(provenance.constitution_sha256)}",
        f"- judge model: {listed(provenance.judge_model)}",
        f"- generator model: {listed(provenance.generator_model)}",
        "",
        "The labels are an AI judge's under the constitution above, not human judgments; see the",
        "dataset card in the run directory for the judge's swap consistency and drop counts.",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(_plain(settings), indent=2, default=str),
        "```",
        "",
        "## Results",
        "",
        "```json",
        json.dumps(metrics, indent=2, default=str),
        "```",
        "",
    ]
    path = model_dir / "README.md"
    write_text_atomic(path, "\n".join(header + body))
    return path
