"""What every trainer shares: optimisation knobs, the LoRA switch, TRL arguments, saving.

TRL's configs default to bf16 and gradient checkpointing, which fail or crawl on a CPU; one
function here turns our small, typed settings into a TRL config that is right for the device, so
each trainer file only says what is specific to its method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from charter.errors import InputError
from charter.generators.model_files import resolve_model


@dataclass(frozen=True)
class Optimisation:
    """How long and how hard to train, on which device.

    Args:
        learning_rate: peak learning rate (TRL's defaults: reward 1e-4, DPO 1e-6).
        epochs: passes over the data; ignored when ``max_steps`` is positive.
        max_steps: optimiser steps to stop after (-1: run ``epochs``). Small on CPU.
        batch_size: examples (pairs, for preference trainers) per device per step.
        grad_accum: steps whose gradients are summed before one update.
        max_length: longest tokenised sequence; longer rows are dropped or truncated by TRL.
        seed: the trainer's seed (data order, new heads, dropout).
        device: ``"cpu"``, ``"cuda"``, or ``"auto"`` (cuda where there is one).
        bf16: mixed precision on a GPU (never on CPU, where it is slower here).
        gradient_checkpointing: trade compute for memory on a GPU (never on CPU).
    """

    learning_rate: float = 1e-5
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "auto"
    bf16: bool = True
    gradient_checkpointing: bool = False

    def on_gpu(self) -> bool:
        if self.device == "cpu":
            return False
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise InputError("device=cuda but torch sees no CUDA device", field="trainer.optim")
        return torch.cuda.is_available()


@dataclass(frozen=True)
class Lora:
    """Train low-rank adapters instead of all weights (peft); merged into the saved model.

    Merging means every saved model is a plain folder that charter's engines, TRL and
    ``from_pretrained`` load the same way, adapter or not.
    """

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"

    def peft_config(self, task_type: Literal["CAUSAL_LM", "SEQ_CLS"]) -> Any:
        if not self.enabled:
            return None
        try:
            from peft import LoraConfig
        except ImportError:
            raise InputError(
                "trainer.lora.enabled=true needs peft: pip install 'charter[train]'",
                field="trainer.lora",
            ) from None
        modules = self.target_modules
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=modules if isinstance(modules, str) else list(modules),
            task_type=task_type,
        )


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced: the saved model folder and its loss curve."""

    model_dir: Path
    losses: list[float]
    metrics: dict[str, Any]


def model_path(name: str) -> str:
    """A local folder for ``name`` (an embedded model name, a folder, or a cached hub id)."""
    return str(resolve_model(name))


def trl_config(config_cls: type, out_dir: Path, optim: Optimisation, **specific: Any) -> Any:
    """A TRL config with our knobs, right for the device, logging every step, saving nothing.

    Checkpoints are off: a run here is minutes long, and the final model is saved by the
    trainer file itself (merged, with its card) so a half-trained folder never looks finished.
    """
    gpu = optim.on_gpu()
    return config_cls(
        output_dir=str(out_dir / "trainer"),
        learning_rate=optim.learning_rate,
        num_train_epochs=optim.epochs,
        max_steps=optim.max_steps,
        per_device_train_batch_size=optim.batch_size,
        per_device_eval_batch_size=optim.batch_size,
        gradient_accumulation_steps=optim.grad_accum,
        seed=optim.seed,
        use_cpu=not gpu,
        bf16=gpu and optim.bf16,
        gradient_checkpointing=gpu and optim.gradient_checkpointing,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **specific,
    )


def losses_of(trainer: Any) -> list[float]:
    """The training loss logged at every step."""
    return [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]


LOG_HISTORY = "log_history.jsonl"
"""TRL's per-step log, one row per logged step, in a trainer's output folder."""


def _number(value: Any) -> float | int | None:
    """A finite number as it is; NaN and infinity as None, so the file stays strict JSON."""
    if isinstance(value, int):
        return value
    return float(value) if math.isfinite(value) else None


def step_logs(trainer: Any) -> list[dict[str, float | int | None]]:
    """TRL's ``state.log_history`` rows for the logged steps, numbers only.

    The trainer logs every step (``logging_steps=1``) with whatever its method measures: loss,
    rewards and margins (DPO, reward), KL, rewards per function and completion lengths (GRPO,
    RLOO). The closing summary TRL appends (``train_runtime``, mean ``train_loss``) is not a
    step and is left out; so are values that are not numbers.
    """
    rows = []
    for entry in trainer.state.log_history:
        if "train_runtime" in entry:
            continue
        row = {
            key: _number(value)
            for key, value in entry.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        if row:
            rows.append(row)
    return rows


def write_step_logs(trainer: Any, out_dir: Path) -> Path:
    """Write :func:`step_logs` to ``out_dir/log_history.jsonl`` (all or nothing).

    TRL keeps this log only in memory; written out, the per-step reward, margin and KL can be
    plotted after the run (``charter report``) instead of only the loss.
    """
    from charter.jsonl import write_jsonl_atomic

    path = out_dir / LOG_HISTORY
    write_jsonl_atomic(path, step_logs(trainer))
    return path


def save_model(trainer: Any, dest: Path) -> Path:
    """Save the trained model (LoRA adapters merged in) and its tokenizer to ``dest``.

    Written to a temp folder and renamed, so ``dest`` only ever holds a complete model.
    """
    from charter.jsonl import atomic_dir

    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tokenizer = trainer.processing_class
    if getattr(model.config, "pad_token_id", None) is None and tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    with atomic_dir(dest) as tmp:
        model.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
    return dest
