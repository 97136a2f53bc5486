"""``charter publish RUN_DIR repo_id=ORG/NAME``: the upload folder, then a dry run, a local copy
or the Hub (the work itself is in :mod:`charter.publishing`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from charter.building import build
from charter.errors import InputError
from charter.publishing import publish


def publish_command(cfg: Any, _output_dir: Path) -> None:
    """``charter publish RUN_DIR repo_id=ORG/NAME [...]`` (the Hydra task the CLI runs)."""
    settings = build(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "run_dir"]), "publish")
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise InputError("run directory not found", file=str(run_dir))
    print(publish(run_dir, settings), flush=True)
