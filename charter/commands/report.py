"""``charter report RUN_DIR [against=OTHER_RUN] [max_pairs=N]``: a run's page, or the page of
what changed between two runs (plain argv: both runs already exist)."""

from __future__ import annotations

from pathlib import Path

from charter.commands.plain_args import number, plain_args
from charter.errors import InputError
from charter.progress import console

USAGE = "usage: charter report RUN_DIR [against=OTHER_RUN] [max_pairs=200]"


def report(args: list[str]) -> int:
    from charter.report import write_report

    positional, options = plain_args(args, {"against", "max_pairs"})
    if len(positional) != 1:
        console.print(USAGE, markup=False)
        return 2
    max_pairs = number(options, "max_pairs")
    if max_pairs is not None and (max_pairs < 1 or max_pairs != int(max_pairs)):
        raise InputError(
            f"max_pairs must be a positive whole number, got {options['max_pairs']!r}",
            field="max_pairs",
        )
    against = Path(options["against"]) if options.get("against") else None
    path = write_report(
        Path(positional[0]),
        against=against,
        max_pairs=int(max_pairs) if max_pairs is not None else 200,
    )
    console.print(f"report: {path}", soft_wrap=True, highlight=False)
    return 0
