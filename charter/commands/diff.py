"""``charter diff RUN_A RUN_B``: what changed in the data between two runs (plain argv)."""

from __future__ import annotations

import json
from pathlib import Path

from charter.commands.plain_args import number, plain_args
from charter.jsonl import write_text_atomic
from charter.progress import console
from charter.run_diff import diff_runs, to_markdown


def diff(args: list[str]) -> int:
    """``charter diff RUN_A RUN_B [out=FILE]``: Markdown to stdout, JSON to ``RUN_B/diff.json``."""
    positional, options = plain_args(args, {"out", "max_rows"})
    if len(positional) != 2:
        console.print("usage: charter diff RUN_A RUN_B [out=FILE] [max_rows=50]", markup=False)
        return 2
    run_a, run_b = (Path(p) for p in positional)
    result = diff_runs(run_a, run_b)
    out = Path(options.get("out") or run_b / "diff.json")
    write_text_atomic(out, json.dumps(result.to_json(), indent=2) + "\n")
    print(to_markdown(result, max_rows=int(number(options, "max_rows") or 50)), end="")
    console.print(f"JSON: {out}", soft_wrap=True)
    return 0
