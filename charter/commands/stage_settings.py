"""What the stage commands read from a run's config beyond their own nodes: the fingerprint a
stage's completion mark holds, the window size, and whether a stage runs on Ray Data.

Kept apart from the stages so that each of them, and ``charter run``, can use them.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from charter import run_files, run_state
from charter.building import resolve_path
from charter.commands.shared import resolved
from charter.errors import InputError


def stage_fingerprint(cfg: DictConfig, stage: str, run_dir: Path) -> str:
    """What a stage's outputs depend on: its config slice and its input files' bytes.

    ``chunk_size`` and the engines' batch sizes are left out on purpose: they change how work
    is split, not what it produces.
    """
    constitution = resolve_path(cfg.constitution.path)
    if stage == "generate":
        settings = resolved(cfg.generator, cfg.prompts)
        inputs = [resolve_path(cfg.prompts.path)]
    elif stage == "judge":
        settings = resolved(cfg.judge, cfg.constitution, cfg.seed, cfg.principle_per, cfg.ranking)
        if cfg.principle_per == "all":  # only here, so other runs keep their stage marks
            settings = resolved(settings, principle_aggregation(cfg))
        inputs = [constitution, run_dir / run_files.CANDIDATES, *calibration_files(cfg.judge)]
    else:
        settings = resolved(cfg.pairs, cfg.constitution, cfg.experiment_name)
        names = (run_files.CANDIDATES, run_files.JUDGMENTS, run_files.RANKINGS)
        inputs = [constitution, *(run_dir / n for n in names)]
    return run_state.stage_fingerprint(settings, inputs)


def principle_aggregation(cfg: DictConfig) -> str:
    """How ``principle_per=all`` combines principles (``log_odds`` in a config from before the
    setting existed)."""
    return str(cfg.get("principle_aggregation") or "log_odds")


def calibration_files(judge: DictConfig) -> list[Path]:
    """The calibration files a judge config reads (its own and its cascade tiers'): a refitted
    file changes the judge stage's output, so its bytes are part of the stage's fingerprint."""
    paths = [judge.get("calibration")]
    paths += [tier.get("calibration") for tier in (judge.get("tiers") or {}).values()]
    return [resolve_path(str(p)) for p in paths if p]


def on_ray_data(cfg: DictConfig) -> bool:
    """``executor=ray executor.streaming=true``: generate and judge run on Ray Data's streaming
    path (:mod:`charter.executors.ray_streaming`), the engines built in its actors, not here.
    A budget meters engine calls in this process, so it cannot bound them there."""
    node = cfg.get("executor")
    if node is None or not node.get("streaming"):
        return False
    if any(v is not None for v in (cfg.get("budget") or {}).values()):
        raise InputError(
            "budget.* limits are not available with executor.streaming=true (the engines run "
            "in Ray Data's actors); drop the budget or the streaming",
            field="executor.streaming",
        )
    return True


def stream_window(cfg: DictConfig) -> int:
    """Prompts a stage holds at once (``stream_window``, checked >= 1 by the config check; a
    config from before the setting existed gets 1024)."""
    value = cfg.get("stream_window")
    return 1024 if value is None else int(value)
