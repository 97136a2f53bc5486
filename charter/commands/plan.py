"""``charter plan [the overrides of charter run]``: requests, cached calls, tokens, seconds and
cost of a run, printed and written to ``plan.json`` before any model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from charter.jsonl import write_text_atomic
from charter.planning import Plan, make_plan
from charter.progress import console, summary_table


def _cell(value: float | None, unit: str = "") -> str:
    return "unknown" if value is None else f"{value:.3g}{unit}"


def show_plan(plan: Plan, where: Path) -> None:
    gen, jud = plan.stages["generate"], plan.stages["judge"]
    rows = {
        "prompts (read / rejected / kept)": (
            f"{plan.prompts_read} / {plan.prompts_rejected} / {plan.prompts_kept}"
        ),
        "generate chats (cached / new)": f"{gen.chats} ({gen.cached} / {gen.chats - gen.cached})",
        "samples to generate": f"{gen.new_units} (at most {gen.max_new_output_tokens} tokens)",
        "generate prompt tokens (new)": f"{gen.prompt_tokens} ({gen.new_prompt_tokens})",
        f"comparisons ({plan.ranking}; all pairs)": (
            f"{plan.comparisons} ({plan.all_pairs_comparisons})"
        ),
        "judge chats (cached / new)": f"{jud.chats} ({jud.cached} / {jud.chats - jud.cached})",
        "judge prompt tokens (new)": f"{jud.prompt_tokens} ({jud.new_prompt_tokens})",
        "generate seconds": f"{_cell(gen.seconds)} ({gen.seconds_source})",
        "judge seconds": f"{_cell(jud.seconds)} ({jud.seconds_source})",
        "estimated seconds": _cell(plan.seconds),
        "estimated cost": _cell(plan.cost),
        "plan written to": str(where),
    }
    summary_table(f"charter plan: {plan.experiment}", rows)
    if plan.principles:
        width = max(len(p) for p in plan.principles)
        lines = [f"{'principle':<{width}}  comparisons  judge chats  cached  new"]
        for pid, c in plan.principles.items():
            lines.append(
                f"{pid:<{width}}  {c.comparisons:>11}  {c.chats:>11}  {c.cached:>6}  "
                f"{c.chats - c.cached:>3}"
            )
        console.print("\n".join(lines), markup=False, highlight=False)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)


def plan(cfg: DictConfig, out_dir: Path) -> None:
    """The Hydra task of ``charter plan``: the run config, planned into ``out_dir/plan.json``."""
    result = make_plan(cfg, probe=bool(cfg.plan.probe))
    where = out_dir / "plan.json"
    write_text_atomic(where, json.dumps(result.to_json(), indent=2) + "\n")
    show_plan(result, where)
