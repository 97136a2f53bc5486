"""``charter review export|import RUN_DIR``: send the pairs the judge is least sure of (or a random
audit) to people, and merge their labels back (the work is in :mod:`charter.review` and
:mod:`charter.review_labels`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charter.building import build
from charter.errors import InputError
from charter.progress import console
from charter.publishing import build_upload_folder
from charter.review import RANDOM, REVIEWED_DIR, export_queue
from charter.review_labels import import_labels


def review_command(cfg: Any, _output_dir: Path) -> None:
    """``charter review export|import`` (the Hydra task the CLI runs; ``action`` picks which)."""
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise InputError("run directory not found", file=str(run_dir))
    if cfg.action == "export":
        settings = build(cfg.queue, "queue")
        dest, queue, total = export_queue(run_dir, settings)
        what = "random audit" if settings.sample == RANDOM else "least sure first"
        console.print(
            f"review queue ({what}): {len(queue)} of {total} pairs sent to people, "
            f"{total - len(queue)} kept with the judge's label; label file: {dest}",
            soft_wrap=True,
            highlight=False,
        )
        return
    if not cfg.file:
        raise InputError("usage: charter review import RUN_DIR FILE", field="file")
    _, report = import_labels(run_dir, Path(cfg.file))
    folder = build_upload_folder(run_dir, build(cfg.publish, "publish"))
    print(json.dumps(report), flush=True)
    console.print(
        f"reviewed pairs: {run_dir / REVIEWED_DIR}; upload folder rebuilt: {folder}",
        soft_wrap=True,
        highlight=False,
    )
