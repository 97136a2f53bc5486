"""A trained reward model as a judge: ``p_a = sigmoid((r_a - r_b) / temperature)``.

Any sequence-classification checkpoint with one output works, such as the ``model/`` folder that
``charter train trainer=reward`` writes. Each response is scored alone as the assistant turn after
its conversation, so there is no position to debias and one pass suffices; both per-order fields
carry the same probability and every verdict is swap-consistent by construction.

This is what lets a team distil a strong judge into a small, fast scorer (judge -> pairs ->
``trainer=reward``) and use it as the cheap first tier of a cascade. It reads no principle: like
any reward model it judges by what it was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from charter.errors import InputError
from charter.judges.debias import sigmoid
from charter.judges.protocol import Comparison
from charter.records import Judgment


def check_reward_model(path: str | Path) -> Path:
    """The folder, if it holds a sequence-classification checkpoint with one output.

    Raises:
        InputError: missing folder, no ``config.json``, or another kind of model.
    """
    folder = Path(path).expanduser()
    config = folder / "config.json"
    if not folder.is_dir() or not config.exists():
        raise InputError(
            "not a model folder (no config.json); give the model/ folder that "
            "`charter train trainer=reward` writes",
            file=str(folder),
            field="judge.model",
        )
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"config.json is not JSON: {exc}", file=str(config)) from None
    architectures = data.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise InputError(
            f"not a sequence-classification checkpoint (architectures: {architectures or 'none'});"
            " a reward-model judge needs one, e.g. from `charter train trainer=reward`",
            file=str(config),
            field="judge.model",
        )
    from transformers import AutoConfig

    # transformers leaves the label count out of config.json when it is its default (2)
    labels = AutoConfig.from_pretrained(str(folder)).num_labels
    if labels != 1:
        raise InputError(
            f"a reward model has one output; this classifier has {labels} labels",
            file=str(config),
            field="judge.model",
        )
    return folder


class RewardModelJudge:
    """Judge by the difference of two rewards.

    Args:
        model: a reward-model folder (``AutoModelForSequenceClassification``, one output).
        temperature: divides the reward difference before the sigmoid (a calibration can refit
            the scale too).
        batch_size: responses per forward pass.
        device: ``cpu`` or ``cuda``.
    """

    method = "reward_model"

    def __init__(
        self,
        model: str | None,
        *,
        temperature: float = 1.0,
        batch_size: int = 8,
        device: str = "cpu",
    ) -> None:
        from charter.trainers.reward import RewardModelScorer

        if not model:
            raise InputError(
                "judge=reward_model needs the reward model's folder: judge.model=PATH",
                field="judge.model",
            )
        if temperature <= 0:
            raise InputError(f"temperature must be positive, got {temperature}", field="judge")
        folder = check_reward_model(model)
        self.scorer = RewardModelScorer(folder, batch_size=batch_size, device=device)
        self.temperature = temperature
        self.model_id = str(model)
        self.prompt_tokens = 0

    def judge(self, comparisons: Sequence[Comparison]) -> list[Judgment]:
        """Score each distinct (conversation, response) once, then compare."""
        keys: dict[tuple[str, str], int] = {}
        chats, texts = [], []
        for c in comparisons:
            for text in (c.response_a, c.response_b):
                key = (json.dumps(c.messages, sort_keys=True), text)
                if key not in keys:
                    keys[key] = len(texts)
                    chats.append(c.messages)
                    texts.append(text)
        rewards = self.scorer.score(chats, texts) if texts else []
        tokenizer = self.scorer.tokenizer
        rendered = [
            tokenizer.apply_chat_template([*m, {"role": "assistant", "content": t}], tokenize=False)
            for m, t in zip(chats, texts, strict=True)
        ]
        if rendered:
            ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
            self.prompt_tokens += sum(len(x) for x in ids)
        out = []
        for c in comparisons:
            r_a = rewards[keys[(json.dumps(c.messages, sort_keys=True), c.response_a)]]
            r_b = rewards[keys[(json.dumps(c.messages, sort_keys=True), c.response_b)]]
            p = sigmoid((r_a - r_b) / self.temperature)
            out.append(
                Judgment(
                    prompt_id=c.prompt_id,
                    candidate_a=c.candidate_a,
                    candidate_b=c.candidate_b,
                    principle_id=c.principle.id,
                    p_first_order=p,
                    p_swapped=p,
                    p_a=p,
                    swap_consistent=p != 0.5,
                    judge_model=self.model_id,
                    judge_method=self.method,
                    raw={"reward_a": r_a, "reward_b": r_b},
                )
            )
        return out
