"""GRPO and RLOO through TRL, rewarded by a trained reward model or by the pointwise judge.

setup -> train -> save. Both algorithms sample ``num_generations`` responses per prompt and use
the group's own rewards as the baseline, so no value model is needed. The reward is either
:class:`~charter.trainers.reward.RewardModelScorer` (fast, learned from the pairs) or
:class:`JudgeReward`, the constitution's pointwise expected score (slow, but the labeller itself:
nothing learned in between that the policy could exploit). Prompts go in as message lists:
plain-string prompts on an instruct model end after one token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from charter.constitution import Constitution
from charter.judges.pointwise import PointwiseScoreJudge
from charter.judges.principles import draw_principle
from charter.records import PromptRecord
from charter.trainers.common import (
    Lora,
    Optimisation,
    TrainResult,
    losses_of,
    model_path,
    save_model,
    trl_config,
    write_step_logs,
)
from charter.trainers.data import Provenance
from charter.trainers.model_card import write_model_card


class JudgeReward:
    """The pointwise judge's expected 1-9 score under one principle per prompt, as a reward.

    The principle is drawn from the constitution by a hash of the prompt, so a prompt's samples
    are all scored under the same principle (the group baseline compares like with like).
    """

    def __init__(self, judge: PointwiseScoreJudge, constitution: Constitution, seed: int = 0):
        self.judge = judge
        self.constitution = constitution
        self.seed = seed
        self.__name__ = "pointwise_judge"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        chats = []
        for prompt, completion in zip(prompts, completions, strict=True):
            messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            principle = draw_principle(self.constitution, self.seed, repr(messages))
            chats.append(self.judge.chat(messages, principle, text))
        return self.judge.scores(chats)


@dataclass(frozen=True)
class RLSettings:
    """Online RL with a group baseline.

    Args:
        algorithm: ``grpo`` or ``rloo``.
        policy: the model to train.
        reward: ``reward_model`` (needs ``reward_model``) or ``judge`` (the pointwise judge
            under the run's constitution, on the config's ``judge.engine``).
        reward_model: a folder written by ``charter train trainer=reward`` (``.../model``).
        num_generations: samples per prompt (the group).
        max_completion_length: tokens per sample.
        beta: KL penalty to the reference (0: no reference model is loaded).
        prompts_limit: train on at most this many prompts.
        optim: optimisation knobs (``batch_size`` must be a multiple of ``num_generations``).
        lora: the LoRA switch.
    """

    algorithm: Literal["grpo", "rloo"] = "grpo"
    policy: str = "smollm2-135m-instruct"
    reward: Literal["reward_model", "judge"] = "reward_model"
    reward_model: str | None = None
    num_generations: int = 4
    max_completion_length: int = 48
    beta: float = 0.04
    prompts_limit: int | None = None
    optim: Optimisation = field(default_factory=lambda: Optimisation(learning_rate=1e-6))
    lora: Lora = field(default_factory=Lora)


def train_rl(
    settings: RLSettings,
    prompts: Sequence[PromptRecord],
    reward_fn: Any,
    provenance: Provenance,
    out_dir: Path,
) -> TrainResult:
    """Train the policy with GRPO or RLOO on ``prompts``; save to ``out_dir/model``."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    if settings.algorithm == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer

    policy = model_path(settings.policy)
    rows = [{"prompt": p.messages} for p in prompts[: settings.prompts_limit]]
    args = trl_config(
        Config,
        out_dir,
        settings.optim,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        beta=settings.beta,
    )
    tokenizer = AutoTokenizer.from_pretrained(policy, padding_side="left")
    trainer = Trainer(
        model=policy,
        reward_funcs=reward_fn,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=settings.lora.peft_config("CAUSAL_LM"),
    )
    trainer.train()
    write_step_logs(trainer, out_dir)
    losses = losses_of(trainer)
    rewards = [float(h["reward"]) for h in trainer.state.log_history if "reward" in h]
    model_dir = save_model(trainer, out_dir / "model")
    del trainer
    metrics = {
        "prompts": len(rows),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "mean_reward_per_step": rewards,
    }
    write_model_card(
        model_dir,
        method=settings.algorithm,
        base_model=settings.policy,
        provenance=provenance,
        settings=settings,
        metrics=metrics,
    )
    return TrainResult(model_dir=model_dir, losses=losses, metrics=metrics)
