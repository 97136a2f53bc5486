"""A judge config -> a judge: its engine, its calibration, and the tiers of a cascade.

Every command that judges (``run``, ``judge``, ``eval-judge``, ``calibrate``, revision checks,
training guards) builds its judge here, so three config keys work the same everywhere:

- ``engine``: loaded through the run's :class:`~charter.building.EngineCache` (shared with the
  generator where the configs match, behind the call cache). A judge config without one (the
  reward-model judge) is built without an engine.
- ``calibration``: a ``calibration.json`` path; the judge is wrapped in
  :class:`~charter.judges.calibrated.CalibratedJudge` after the file is checked against this
  judge's fingerprint and the run's constitution.
- ``tiers`` (``judge=cascade``): each tier is itself a judge config, built by this function on
  first use, so a tier no comparison reaches never loads its model.

Classes never see a DictConfig: the cascade gets plain callables, the wrapper a typed
:class:`~charter.judge_eval.calibration.Calibration`.
"""

from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from charter.building import THROUGHPUT_ONLY, EngineCache, build, resolve_path
from charter.generators.counting import TokenCountingEngine
from charter.judge_eval.calibration import check_matches, load_calibration
from charter.judges.calibrated import CalibratedJudge

_NOT_IDENTITY = frozenset({"calibration", "_partial_"})


def _identity(value: Any) -> Any:
    """A config value with throughput-only and calibration keys left out, paths made absolute."""
    if isinstance(value, dict):
        return {
            k: _identity(v)
            for k, v in sorted(value.items())
            if k not in THROUGHPUT_ONLY and k not in _NOT_IDENTITY
        }
    if isinstance(value, list):
        return [_identity(v) for v in value]
    if isinstance(value, str) and (value.endswith(".gguf") or "/" in value):
        path = Path(value).expanduser()
        return str(path.resolve()) if path.exists() else value
    return value


def judge_fingerprint(node: DictConfig) -> str:
    """What a calibration is valid for: the judge's method, options, template and model.

    Batch sizes, threads and cache folders are left out (they do not change a verdict), and so
    is the calibration itself.
    """
    settings = OmegaConf.to_container(node, resolve=True)
    material = json.dumps(_identity(settings), sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def judge_name(node: DictConfig) -> str:
    """A short human name for a judge config: its class and model."""
    target = str(node.get("_target_", "judge")).rsplit(".", 1)[-1]
    engine = node.get("engine")
    model = node.get("model") or (engine.get("model") or engine.get("model_id") if engine else "")
    return f"{target}({model})" if model else target


def build_judge(
    node: DictConfig,
    key: str,
    engines: EngineCache,
    *,
    constitution_sha256: str | None = None,
    engine: Any = None,
    count_tokens: bool = False,
) -> Any:
    """Build the judge at config ``key``.

    Args:
        node: the judge config.
        key: its path in the config, for error messages (``judge``, ``judge.tiers.strong``).
        engines: where engines are loaded once and cached.
        constitution_sha256: the run's constitution, checked against a calibration's.
        engine: use this engine instead of loading ``node.engine`` (e.g. a token counter).
        count_tokens: wrap the loaded engine in a token counter (cascade tiers report tokens).
    """
    calibration_path = node.get("calibration")
    rest = OmegaConf.masked_copy(node, [k for k in node if k not in ("calibration", "tiers")])
    if node.get("tiers") is not None:
        tiers = {
            str(name): partial(
                build_judge,
                tier,
                f"{key}.tiers.{name}",
                engines,
                constitution_sha256=constitution_sha256,
                count_tokens=True,
            )
            for name, tier in node.tiers.items()
        }
        rest = OmegaConf.masked_copy(rest, [k for k in rest if k != "engine"])
        judge = build(rest, key, tiers=tiers)
    elif node.get("engine") is not None:
        if engine is None:
            engine = engines.get(node.engine, f"{key}.engine")
            if count_tokens:
                engine = TokenCountingEngine(engine)
        judge = build(rest, key, engine=engine)
    else:
        judge = build(rest, key)
    if calibration_path:
        path = resolve_path(str(calibration_path))
        calibration = load_calibration(path)
        check_matches(calibration, str(path), judge_fingerprint(node), constitution_sha256)
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        judge = CalibratedJudge(judge, calibration, sha)
    return judge
