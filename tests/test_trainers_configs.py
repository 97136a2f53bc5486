"""Every trainer config, and the loop experiment, composes under `charter train`, and every
_target_ accepts exactly the keys its config gives it (so a renamed field fails here)."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.test_configs import check_signature, compose_all, options, targets


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_config_composes(trainer: str) -> None:
    cfg = compose_all("train", [f"trainer={trainer}", "data=run"])
    OmegaConf.resolve(cfg)
    assert "trainer" in {p for p, _ in targets(cfg)}
    for path, node in targets(cfg):
        check_signature(path, node)
    if trainer != "ppo":  # ours: the whole node builds into typed settings
        settings = instantiate(cfg.trainer)
        assert type(settings).__module__.startswith("charter.trainers.")


def test_loop_experiment_composes_and_builds() -> None:
    cfg = compose_all("train", ["experiment=loop_cpu"])
    OmegaConf.resolve(cfg)
    for path, node in targets(cfg):
        check_signature(path, node)
    loop = instantiate(cfg.loop)
    assert loop.heldout_prompts > 0
    assert loop.dpo.policy == loop.reward.base_model == cfg.generator.engine.model
    assert loop.dpo.optim.device == "auto"  # bf16 on a GPU, fp32 on CPU


def test_trainer_settings_override_from_the_command_line() -> None:
    cfg = compose_all(
        "train",
        ["trainer=dpo", "data=x", "trainer.min_margin=0.3", "trainer.lora.enabled=true"],
    )
    settings = instantiate(cfg.trainer)
    assert settings.min_margin == 0.3 and settings.lora.enabled
