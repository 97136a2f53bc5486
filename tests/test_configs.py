"""Every config composes, and every _target_ accepts exactly the keys its config gives it."""

from __future__ import annotations

import inspect
from importlib import resources
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from charter.building import register_resolvers
from charter.config_check import check_config

CONF = resources.files("charter") / "conf"


def options(group: str) -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in (CONF / group).iterdir() if p.name.endswith(".yaml")
    )


def targets(node: Any, path: str = "") -> list[tuple[str, DictConfig]]:
    found = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append((path, node))
        for key in node:
            found += targets(node[key], f"{path}.{key}" if path else str(key))
    return found


def check_signature(path: str, node: DictConfig) -> None:
    target = get_object(node._target_)
    params = inspect.signature(target).parameters
    keys = {k for k in node if not str(k).startswith("_")}
    # a judge's calibration file is read by charter.judge_building, which wraps the judge
    is_judge = path == "judge" or path.startswith("judge.tiers.")
    unknown = keys - set(params) - ({"calibration"} if is_judge else set())
    assert not unknown, f"{path}: {node._target_} takes no {sorted(unknown)}"
    required = {
        n
        for n, p in params.items()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    # the judge's engine is passed in by the CLI (one loaded model shared with the generator);
    # a jury hands that engine to its members, which are partials for that reason
    passed_in = path == "judge" or (path.startswith("judge.members.") and node.get("_partial_"))
    missing = required - keys - ({"engine"} if passed_in else set())
    assert not missing, f"{path}: {node._target_} needs {sorted(missing)}"


def compose_all(config: str, overrides: list[str]) -> DictConfig:
    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        return compose(config, overrides=overrides, return_hydra_config=False)


@pytest.mark.parametrize("experiment", options("experiment"))
@pytest.mark.parametrize("engine", options("engine"))
def test_every_experiment_composes_with_every_engine(experiment: str, engine: str) -> None:
    cfg = compose_all(
        "run",
        [
            f"experiment={experiment}",
            f"engine@generator.engine={engine}",
            f"engine@judge.engine={engine}",
        ],
    )
    check_config(cfg, "run")  # the value checks never refuse a shipped config
    OmegaConf.resolve(cfg)
    found = targets(cfg)
    assert {p for p, _ in found} >= {"generator.engine", "generator.sampling", "judge", "pairs"}
    for path, node in found:
        check_signature(path, node)


@pytest.mark.parametrize("group", ["generator", "judge", "constitution", "prompts", "pairs"])
def test_every_option_of_every_group_composes(group: str) -> None:
    for option in options(group):
        cfg = compose_all("run", [f"{group}={option}"])
        check_config(cfg, "run")
        OmegaConf.resolve(cfg)
        for path, node in targets(cfg):
            check_signature(path, node)


def test_eval_judge_config_composes() -> None:
    cfg = compose_all("eval_judge", ["data=x.jsonl"])
    check_config(cfg, "eval_judge")
    assert cfg.data == "x.jsonl"
    for path, node in targets(cfg):
        check_signature(path, node)


def test_calibrate_config_composes() -> None:
    cfg = compose_all("calibrate", ["data=x.jsonl", "judge=jury"])
    check_config(cfg, "calibrate")
    OmegaConf.resolve(cfg)
    assert cfg.data == "x.jsonl"
    found = targets(cfg)
    assert {p for p, _ in found} >= {"judge", "calibration"}
    for path, node in found:
        check_signature(path, node)


def test_cascade_tiers_are_judge_configs_with_their_own_engines() -> None:
    distilled = compose_all("run", ["judge=cascade_reward_model"])
    assert list(distilled.judge.tiers) == ["cheap", "strong"]  # the cheap tier comes first
    assert distilled.judge.tiers.cheap._target_.endswith("RewardModelJudge")
    cfg = compose_all("run", ["judge=cascade", "judge.tiers.strong.engine.model=/m/big.gguf"])
    OmegaConf.resolve(cfg)
    assert list(cfg.judge.tiers) == ["cheap", "strong"]
    assert cfg.judge.tiers.strong.engine.model == "/m/big.gguf"
    assert cfg.judge.tiers.cheap.engine.model != "/m/big.gguf"
    assert "engine" not in cfg.judge  # each tier loads its own, lazily


def test_a_local_engine_naming_a_missing_model_is_refused_at_the_check(tmp_path) -> None:
    from charter.errors import InputError

    missing = tmp_path / "big.gguf"
    tier = ["judge=cascade", f"judge.tiers.strong.engine.model={missing}"]
    with pytest.raises(InputError) as caught:
        check_config(compose_all("run", tier), "run")
    assert caught.value.field == "judge.tiers.strong.engine.model"
    assert str(missing) in caught.value.message
    missing.write_bytes(b"GGUF")  # there now: whether it loads is the engine's business, later
    check_config(compose_all("run", tier), "run")
    # a server's model name is not a file here, and a local folder is taken as it is
    served = ["engine@judge.engine=openai", "judge.engine.model=gpt-from-the-server"]
    check_config(compose_all("run", served), "run")
    check_config(compose_all("run", [f"generator.engine.model={tmp_path}"]), "run")


def test_bundled_files_named_by_configs_exist() -> None:
    from charter.building import resolve_path

    for option in options("constitution"):
        cfg = compose_all("run", [f"constitution={option}"])
        assert resolve_path(cfg.constitution.path).exists(), option
    cfg = compose_all("run", [])
    assert resolve_path(cfg.prompts.path).exists()
