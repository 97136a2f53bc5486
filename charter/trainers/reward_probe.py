"""A reward model that trains only its head: frozen base-model features, a Bradley–Terry fit.

Fine-tuning all of SmolLM2-135M costs about 8 ms per token forward and backward on 2 CPU cores,
so the ten reward models of a label curve (2 × 25..400 pairs) take over an hour and a half. The
base model's last hidden state at the final token of ``chat + response`` is computed once per
text instead (forward only, shared by every point of the curve), and each reward model is a
linear head ``r = w · φ / s`` fitted by logistic regression on the feature differences of its
pairs: the Bradley–Terry likelihood with no intercept, so swapping a pair flips its margin
exactly. Its strength is picked by cross-validation inside the training pairs only.

This is the cheaper, weaker kind of reward model (a linear probe): the right instrument for
"how does accuracy grow with labels" on a CPU, not a replacement for ``trainer=reward``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from charter.human_prefs import HumanPair
from charter.records import Chat
from charter.trainers.common import model_path
from charter.trainers.data import Provenance
from charter.trainers.reward import RewardSettings


def _last(value: Any) -> str:
    return value[-1]["content"] if isinstance(value, list) else str(value)


class FrozenFeatureProbe:
    """A :data:`~charter.trainers.label_curve.TrainAndScore` step with a feature cache.

    Args:
        base_model: the frozen model whose features the heads read.
        max_length: tokens kept per conversation (the last ones, so the response's end stays).
        batch_size: texts per forward pass (sorted by length, so batches pad little).
        device: ``cpu`` or ``cuda``.
    """

    def __init__(
        self, base_model: str, *, max_length: int = 512, batch_size: int = 8, device: str = "cpu"
    ):
        self.base_model = base_model
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self._features: dict[tuple[str, str], np.ndarray] = {}
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = model_path(self.base_model)
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._tokenizer.truncation_side = "left"
        self._tokenizer.padding_side = "right"
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model = AutoModel.from_pretrained(path, dtype=torch.float32).to(self.device).eval()

    def features(self, jobs: Sequence[tuple[Chat, str]]) -> np.ndarray:
        """φ(chat, response) for each job: computed once per distinct text, then cached."""
        import torch

        missing = sorted(
            {(json.dumps(c), r) for c, r in jobs} - set(self._features),
            key=lambda k: len(k[0]) + len(k[1]),
        )
        if missing and self._model is None:
            self._load()
        for start in range(0, len(missing), self.batch_size):
            keys = missing[start : start + self.batch_size]
            texts = [
                self._tokenizer.apply_chat_template(
                    [*json.loads(c), {"role": "assistant", "content": r}], tokenize=False
                )
                for c, r in keys
            ]
            batch = self._tokenizer(
                texts,
                add_special_tokens=False,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.no_grad():
                hidden = self._model(**batch).last_hidden_state
            last = batch["attention_mask"].sum(dim=1) - 1
            rows = hidden[torch.arange(hidden.shape[0]), last].float().cpu().numpy()
            for key, row in zip(keys, rows, strict=True):
                self._features[key] = row
        return np.stack([self._features[(json.dumps(c), r)] for c, r in jobs])

    def _diffs(self, chats: Sequence[Chat], first: Sequence[str], second: Sequence[str]) -> Any:
        a = self.features(list(zip(chats, first, strict=True)))
        b = self.features(list(zip(chats, second, strict=True)))
        return a - b

    def fit(self, dataset: Any, seed: int) -> tuple[np.ndarray, float]:
        """The head's weights (in feature units) and the regularisation picked, for ``dataset``'s
        prompt/chosen/rejected rows."""
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

        chats = [list(p) for p in dataset["prompt"]]
        diffs = self._diffs(
            chats, [_last(c) for c in dataset["chosen"]], [_last(r) for r in dataset["rejected"]]
        )
        scale = diffs.std(axis=0) + 1e-6  # per feature; no centring, so -x stays the swap
        x = diffs / scale
        # each pair once, in a seeded random orientation: label 1 = "first is preferred"
        flip = random.Random(seed).choices((True, False), k=len(x))
        if len(x) >= 2 and len(set(flip)) == 1:
            flip[0] = not flip[0]  # both classes, whatever the draw
        y = np.array([0 if f else 1 for f in flip])
        x = np.where(np.array(flip)[:, None], -x, x)
        folds = min(5, int(min(y.sum(), len(y) - y.sum())))
        if folds >= 2:
            # picked by held-in log-loss: the head's probabilities are what a margin reads
            fit: Any = LogisticRegressionCV(
                Cs=np.logspace(-4, 2, 13).tolist(),
                cv=folds,
                fit_intercept=False,
                max_iter=2000,
                scoring="neg_log_loss",
                l1_ratios=(0.0,),
                use_legacy_attributes=False,
            )
        else:  # too few of one class to cross-validate: a fixed, strong prior
            fit = LogisticRegression(C=0.01, fit_intercept=False, max_iter=2000)
        fit.fit(x, y)
        c = float(np.atleast_1d(fit.C_)[0]) if hasattr(fit, "C_") else float(fit.C)
        return fit.coef_[0] / scale, c

    def margins(self, weights: np.ndarray, pairs: Sequence[HumanPair]) -> list[float]:
        """r(chosen) − r(rejected) under the head ``weights`` for each pair."""
        diffs = self._diffs(
            [p.messages for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs]
        )
        return [float(m) for m in diffs @ weights]

    def __call__(
        self,
        settings: RewardSettings,
        dataset: Any,
        provenance: Provenance,
        heldout: Sequence[HumanPair],
        out_dir: Path,
    ) -> list[float]:
        """Fit a head on ``dataset``'s pairs (kept in ``out_dir/head.json``); r(chosen) −
        r(rejected) for each held-out pair."""
        weights, c = self.fit(dataset, settings.optim.seed)
        self.write_head(out_dir, weights, c, len(dataset), provenance.source)
        return self.margins(weights, heldout)

    def write_head(self, out_dir: Path, weights: Any, c: float, pairs: int, source: str) -> Path:
        """``out_dir/head.json``: the head with what it was fitted on, to reuse or inspect."""
        out_dir.mkdir(parents=True, exist_ok=True)
        head = {
            "base_model": self.base_model,
            "pairs": pairs,
            "source": source,
            "C": c,
            "weights": [round(float(w), 8) for w in weights],
        }
        path = out_dir / "head.json"
        path.write_text(json.dumps(head) + "\n")
        return path
