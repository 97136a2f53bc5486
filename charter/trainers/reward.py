"""Reward model: TRL's RewardTrainer on charter pairs, judged on held-out and human pairs.

setup -> train -> save -> evaluate, top to bottom. The judge's confidence enters through TRL's
``margin`` column: the loss becomes ``-log sigmoid(r_chosen - r_rejected - margin)`` (the Llama 2
margin loss), so a pair the judge was sure of must be separated by more than a coin-flip pair.
Accuracy is measured twice: on a held-out split of the same AI-labelled pairs (does the model
learn the judge?) and on human-labelled pairs (does the judge's preference transfer to people?).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charter.records import Chat
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
from charter.trainers.data import Provenance, split
from charter.trainers.model_card import write_model_card


@dataclass(frozen=True)
class RewardSettings:
    """Reward-model training.

    Args:
        base_model: the model to put a scalar head on (embedded name, folder or cached hub id).
        margin_scale: multiplies charter's ``margin`` (2 p_chosen - 1, in [0, 1]) into TRL's
            margin column; 0 trains without margins.
        eval_fraction: share of pairs held out for accuracy (seeded split).
        human_pairs: a human-labelled JSONL file (``shared/data/human_prefs`` format) to report
            accuracy on; null skips it.
        human_limit: at most this many human pairs (scoring costs two forward passes each).
        optim: optimisation knobs.
        lora: the LoRA switch (task SEQ_CLS; the new head is always trained in full).
    """

    base_model: str = "smollm2-135m-instruct"
    margin_scale: float = 1.0
    eval_fraction: float = 0.1
    human_pairs: str | None = None
    human_limit: int | None = 200
    optim: Optimisation = field(default_factory=lambda: Optimisation(learning_rate=1e-4))
    lora: Lora = field(default_factory=Lora)


class RewardModelScorer:
    """A trained reward model as a function: (conversation, response) -> scalar reward.

    Also callable the way TRL's GRPO/RLOO call reward functions
    (``prompts=..., completions=...``), so one object serves evaluation, RL and PPO.
    """

    def __init__(self, model_dir: str | Path, *, batch_size: int = 8, device: str = "cpu"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), dtype=torch.float32
        ).to(device)
        self.model.eval()
        self.batch_size = batch_size
        self.device = device
        self.__name__ = "reward_model"  # TRL logs reward functions by name

    def score(self, prompts: Sequence[Chat], responses: Sequence[str]) -> list[float]:
        """Reward of each response as the assistant turn after its conversation."""
        import torch

        texts = [
            self.tokenizer.apply_chat_template(
                [*p, {"role": "assistant", "content": r}], tokenize=False
            )
            for p, r in zip(prompts, responses, strict=True)
        ]
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    add_special_tokens=False,
                    padding=True,
                    truncation=True,
                    max_length=2048,
                    return_tensors="pt",
                ).to(self.device)
                scores += self.model(**batch).logits[:, 0].float().tolist()
        return scores

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        chats = [p if isinstance(p, list) else [{"role": "user", "content": p}] for p in prompts]
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return self.score(chats, texts)


def _last_text(value: Any) -> str:
    return value[-1]["content"] if isinstance(value, list) else str(value)


def _prompt_chat(value: Any) -> Chat:
    return value if isinstance(value, list) else [{"role": "user", "content": str(value)}]


def pair_accuracy(scorer: RewardModelScorer, dataset: Any) -> float:
    """Share of pairs whose chosen response gets the higher reward (ties count half)."""
    prompts = [_prompt_chat(p) for p in dataset["prompt"]]
    chosen = scorer.score(prompts, [_last_text(c) for c in dataset["chosen"]])
    rejected = scorer.score(prompts, [_last_text(r) for r in dataset["rejected"]])
    wins = sum(
        1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected, strict=True)
    )
    return wins / len(prompts)


def human_accuracy(
    scorer: RewardModelScorer, path: str | Path, limit: int | None
) -> dict[str, float | int]:
    """Accuracy on human-labelled pairs, beside the "longer response wins" baseline."""
    from datasets import Dataset

    from charter.building import resolve_path
    from charter.human_prefs import load_human_pairs

    # like every other config path: as given, else relative to the checkout
    pairs, rejects = load_human_pairs(resolve_path(str(path)), limit=limit)
    rows = {
        "prompt": [p.messages for p in pairs],
        "chosen": [p.chosen for p in pairs],
        "rejected": [p.rejected for p in pairs],
    }
    longer = sum(
        1.0 if len(p.chosen) > len(p.rejected) else 0.5 if len(p.chosen) == len(p.rejected) else 0
        for p in pairs
    )
    return {
        "accuracy": round(pair_accuracy(scorer, Dataset.from_dict(rows)), 4),
        "longer_response_baseline": round(longer / len(pairs), 4),
        "pairs": len(pairs),
        "rejected_rows": len(rejects),
    }


def _trl_rows(dataset: Any, margin_scale: float) -> Any:
    keep = ["prompt", "chosen", "rejected"]
    if margin_scale and "margin" in dataset.column_names:
        dataset = dataset.map(lambda r: {"margin": float(r["margin"]) * margin_scale})
        keep.append("margin")
    return dataset.select_columns(keep)


def train_reward(
    settings: RewardSettings, pairs: Any, provenance: Provenance, out_dir: Path
) -> TrainResult:
    """Train, save (``out_dir/model`` with a model card) and evaluate a reward model.

    Args:
        settings: what to train and how.
        pairs: a ``datasets.Dataset`` of preference pairs (charter's or any TRL-shaped).
        provenance: where the pairs came from, for the card.
        out_dir: the run directory.

    Returns:
        the model folder, the loss per step, and ``metrics`` with ``heldout_accuracy`` (None
        without a held-out split) and ``human`` (None without human pairs).
    """
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    base = model_path(settings.base_model)
    train, heldout = split(pairs, settings.eval_fraction, settings.optim.seed)
    args = trl_config(RewardConfig, out_dir, settings.optim, max_length=settings.optim.max_length)
    trainer = RewardTrainer(
        model=base,
        args=args,
        train_dataset=_trl_rows(train, settings.margin_scale),
        processing_class=AutoTokenizer.from_pretrained(base),
        peft_config=settings.lora.peft_config("SEQ_CLS"),
    )
    trainer.train()
    write_step_logs(trainer, out_dir)
    model_dir = save_model(trainer, out_dir / "model")
    losses = losses_of(trainer)
    del trainer  # free the training copy before loading the saved model to score

    scorer = RewardModelScorer(model_dir, device="cuda" if settings.optim.on_gpu() else "cpu")
    metrics: dict[str, Any] = {
        "train_pairs": len(train),
        "heldout_pairs": len(heldout) if heldout is not None else 0,
        "heldout_accuracy": round(pair_accuracy(scorer, heldout), 4) if heldout else None,
        "human": human_accuracy(scorer, settings.human_pairs, settings.human_limit)
        if settings.human_pairs
        else None,
    }
    metrics["first_loss"], metrics["last_loss"] = (losses[0], losses[-1]) if losses else (None,) * 2
    write_model_card(
        model_dir,
        method="reward",
        base_model=settings.base_model,
        provenance=provenance,
        settings=settings,
        metrics=metrics,
    )
    return TrainResult(model_dir=model_dir, losses=losses, metrics=metrics)
