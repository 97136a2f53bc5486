"""Rich progress bars and summary tables, on stderr so stdout stays machine-readable."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True)


@contextmanager
def stage_progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Show a bar for one stage (None: no known total); yields a callback that advances it by n
    items.

    The callback runs between chunks, so it is also where a requested stop (SIGTERM, Ctrl-C;
    :mod:`charter.graceful_stop`) takes effect.
    """
    from charter.graceful_stop import check

    def advance(task: TaskID, n: int) -> None:
        progress.advance(task, n)
        check()

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: advance(task, n)


def summary_table(title: str, rows: dict[str, object]) -> None:
    """Print a two-column table of figures."""
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    for key, value in rows.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
