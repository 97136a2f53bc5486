"""DPO on charter pairs, with the judge's confidence deciding how hard to trust each label.

setup -> filter -> train -> save. Two uses of the soft labels:

* ``min_margin`` drops pairs the judge barely separated (margin = 2 p_chosen - 1); every drop is
  kept as a reject with its margin.
* ``label_smoothing``: a label the judge gives with p_chosen = 0.6 is wrong about 40% of the time
  if the judge is calibrated, so the run's mean (1 - p_chosen) is the expected label-flip rate.
  ``"auto"`` uses it as the soft label: with ``smoothed_loss=exo_pair`` (default) the policy's
  implied preference is pulled towards (1 - eps, eps), not towards certainty (EXO: a KL to the
  soft label, minimal at sigma(beta * margin) = 1 - eps, so an unsure judge moves the policy
  less). ``smoothed_loss=robust`` is Robust DPO instead: unbiased under eps label flips, but
  unbounded below and steeper than plain DPO, so it is not the conservative choice. A number
  sets eps by hand; 0 is plain DPO with ``loss_type``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from charter.errors import InputError
from charter.records import Reject
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

MAX_SMOOTHING = 0.45
"""At eps = 0.5 the soft label is a coin flip and there is nothing to learn (and Robust DPO
divides by 1 - 2 eps); keep a little signal, and filter with ``min_margin`` instead."""


@dataclass(frozen=True)
class DPOSettings:
    """DPO training.

    Args:
        policy: the model to train (and its frozen reference, unless LoRA is on).
        beta: KL strength towards the reference (TRL's beta).
        min_margin: drop pairs whose ``margin`` is below this (data without margins: kept).
        label_smoothing: ``"auto"`` (from the judge's mean p_chosen), or a flip rate in
            [0, 0.5); anything above 0 trains with ``smoothed_loss``.
        smoothed_loss: ``exo_pair`` (KL to the soft label; conservative) or ``robust``.
        loss_type: TRL loss when ``label_smoothing`` is 0 (``sigmoid`` is the DPO paper's).
        optim: optimisation knobs.
        lora: the LoRA switch; with LoRA the adapter-free base is the reference, no copy.
    """

    policy: str = "smollm2-135m-instruct"
    beta: float = 0.1
    min_margin: float = 0.0
    label_smoothing: float | str = "auto"
    smoothed_loss: Literal["exo_pair", "robust"] = "exo_pair"
    loss_type: str = "sigmoid"
    optim: Optimisation = field(default_factory=lambda: Optimisation(learning_rate=1e-6))
    lora: Lora = field(default_factory=Lora)


def filter_by_margin(pairs: Any, min_margin: float) -> tuple[Any, list[Reject]]:
    """Keep pairs with ``margin >= min_margin``; the rest become rejects naming their margin."""
    if min_margin <= 0 or "margin" not in pairs.column_names:
        return pairs, []
    margins = pairs["margin"]
    keep = [i for i, m in enumerate(margins) if m is not None and m >= min_margin]
    rejects = [
        Reject(
            stage="train",
            source=str(pairs[i].get("prompt_id", f"row {i}")),
            reason=f"margin {margins[i]} below min_margin {min_margin}",
            field="margin",
        )
        for i in sorted(set(range(len(pairs))) - set(keep))
    ]
    return pairs.select(keep), rejects


def smoothing_for(pairs: Any, setting: float | str) -> float:
    """The label-flip rate to train with: given, or the judge's mean (1 - p_chosen), capped."""
    if setting != "auto":
        value = float(setting)
        if not 0 <= value < 0.5:
            raise InputError("must be in [0, 0.5) or 'auto'", field="trainer.label_smoothing")
        return value
    if "p_chosen" not in pairs.column_names or len(pairs) == 0:
        return 0.0  # hard labels (e.g. human data): nothing to smooth
    mean_p = sum(float(p) for p in pairs["p_chosen"]) / len(pairs)
    return round(min(max(1.0 - mean_p, 0.0), MAX_SMOOTHING), 4)


def train_dpo(
    settings: DPOSettings, pairs: Any, provenance: Provenance, out_dir: Path
) -> tuple[TrainResult, list[Reject]]:
    """Filter, DPO-train and save the policy to ``out_dir/model`` with a model card.

    Returns:
        the result (``metrics`` has the pair counts, the smoothing used and the loss ends) and
        the pairs dropped by ``min_margin``.

    Raises:
        InputError: no pair reaches ``min_margin``.
    """
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    kept, rejects = filter_by_margin(pairs, settings.min_margin)
    if len(kept) == 0:
        raise InputError(
            f"no pair has margin >= {settings.min_margin} (of {len(pairs)})",
            field="trainer.min_margin",
        )
    eps = smoothing_for(kept, settings.label_smoothing)
    loss_type = settings.smoothed_loss if eps > 0 else settings.loss_type
    policy = model_path(settings.policy)
    args = trl_config(
        DPOConfig,
        out_dir,
        settings.optim,
        beta=settings.beta,
        loss_type=[loss_type],
        label_smoothing=eps,
        max_length=settings.optim.max_length,
    )
    trainer = DPOTrainer(
        model=policy,
        args=args,
        train_dataset=kept.select_columns(["prompt", "chosen", "rejected"]),
        processing_class=AutoTokenizer.from_pretrained(policy),
        peft_config=settings.lora.peft_config("CAUSAL_LM"),
    )
    trainer.train()
    write_step_logs(trainer, out_dir)
    losses = losses_of(trainer)
    model_dir = save_model(trainer, out_dir / "model")
    del trainer
    metrics = {
        "pairs_in": len(pairs),
        "pairs_trained": len(kept),
        "dropped_below_min_margin": len(rejects),
        "label_smoothing": eps,
        "loss_type": loss_type,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }
    used = replace(settings, label_smoothing=eps)
    write_model_card(
        model_dir,
        method="dpo",
        base_model=settings.policy,
        provenance=provenance,
        settings=used,
        metrics=metrics,
    )
    return TrainResult(model_dir=model_dir, losses=losses, metrics=metrics), rejects
