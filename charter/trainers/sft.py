"""SFT: TRL's SFTTrainer on revision data (critique -> revision output, or any TRL-shaped set).

setup -> train -> save. The loss covers only the assistant's reply where the data says which
part that is (``prompt`` + ``completion``); ``messages`` rows train on the whole chat, as TRL does
by default, because not every chat template marks assistant turns for masking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class SFTSettings:
    """Supervised fine-tuning.

    Args:
        policy: the model to fine-tune.
        optim: optimisation knobs.
        lora: the LoRA switch.
    """

    policy: str = "smollm2-135m-instruct"
    optim: Optimisation = field(default_factory=lambda: Optimisation(learning_rate=2e-5))
    lora: Lora = field(default_factory=Lora)


def train_sft(
    settings: SFTSettings, examples: Any, provenance: Provenance, out_dir: Path
) -> TrainResult:
    """Fine-tune on ``examples`` and save to ``out_dir/model`` with a model card."""
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    policy = model_path(settings.policy)
    args = trl_config(SFTConfig, out_dir, settings.optim, max_length=settings.optim.max_length)
    trainer = SFTTrainer(
        model=policy,
        args=args,
        train_dataset=examples,
        processing_class=AutoTokenizer.from_pretrained(policy),
        peft_config=settings.lora.peft_config("CAUSAL_LM"),
    )
    trainer.train()
    write_step_logs(trainer, out_dir)
    losses = losses_of(trainer)
    model_dir = save_model(trainer, out_dir / "model")
    del trainer
    metrics = {
        "examples": len(examples),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }
    write_model_card(
        model_dir,
        method="sft",
        base_model=settings.policy,
        provenance=provenance,
        settings=settings,
        metrics=metrics,
    )
    return TrainResult(model_dir=model_dir, losses=losses, metrics=metrics)
