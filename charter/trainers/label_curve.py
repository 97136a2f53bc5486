"""How many labels does a reward model need, and can a judge's labels stand in for people's?

The human-labelled files are pooled and shuffled with the seed, and split once: ``heldout`` pairs
are kept out (each file's share of them follows its share of the pool), and every training set
is a prefix of the rest, so the 25 pairs are inside the 50 and two points of a curve differ only
in how many labels they saw. Each prefix is trained twice, with the human labels and with a
judge's labels on the same pairs, and every model is scored against the *human* labels of the
held-out pairs. The judge's labels differ from the human ones exactly where the judge disagrees
with people, so the judge curve is the human curve with that much label noise.

Pure and typed: no config. The command (:mod:`charter.commands.label_curve`) builds the judge and
passes the train-and-score step, which tests replace with a fake.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from charter.constitution import Constitution
from charter.errors import InputError
from charter.human_prefs import HumanPair
from charter.judge_eval.evaluate import JudgeReport, evaluate_judge
from charter.judges.protocol import Judge
from charter.records import Judgment
from charter.trainers.common import Optimisation
from charter.trainers.data import Provenance
from charter.trainers.loop import wilson_interval
from charter.trainers.reward import RewardSettings

LabelSource = Literal["human", "judge"]
LABEL_SOURCES: tuple[str, ...] = ("human", "judge")
DEFAULT_DATA = (
    "../shared/data/human_prefs/pandalm_dev.jsonl",
    "../shared/data/human_prefs/hh_rlhf_harmless_dev.jsonl",
)


_NONE_GIVEN = {
    "data": "human-labelled JSONL file",
    "counts": "training-set size",
    "labels": "label source (human, judge)",
}


def _default_reward() -> RewardSettings:
    # margin_scale 0: human labels carry no confidence, so a judge margin would make the two
    # sources train with different losses and the curves would measure the loss, not the labels.
    # Batch 4 at 256 tokens: ~11 s a step on 2 CPU cores (experiment/label_curve.yaml has the
    # whole run's cost); 8 pairs a step cost ~35 s, as each batch pads to its longest chat.
    return RewardSettings(
        margin_scale=0.0,
        eval_fraction=0.0,
        human_pairs=None,
        optim=Optimisation(learning_rate=1e-4, epochs=1.0, batch_size=4, max_length=256),
    )


@dataclass(frozen=True)
class LabelCurveSettings:
    """``charter train experiment=label_curve``.

    Args:
        data: human-labelled JSONL files (``shared/data/human_prefs`` schema), pooled.
        counts: training-set sizes, one reward model per size and label source.
        heldout: pairs kept out of every training set; every model is scored on them.
        labels: label sources to train on: ``human`` and/or ``judge``.
        seed: the pool's shuffle, and the coin for a judge's exact ties.
        keep_models: keep each trained model folder (about 540 MB each for SmolLM2-135M);
            false deletes it once it is scored.
        method: ``head`` trains only a linear head on the frozen base model's features
            (:mod:`charter.trainers.reward_probe`: minutes on a CPU for the whole curve);
            ``full`` fine-tunes every weight with TRL's reward trainer (hours on a CPU).
        reward: how each reward model is trained (its ``eval_fraction`` and ``human_pairs``
            are unused: scoring is on the held-out pairs).
    """

    data: list[str] = field(default_factory=lambda: list(DEFAULT_DATA))
    counts: list[int] = field(default_factory=lambda: [25, 50, 100, 200, 400])
    heldout: int = 200
    labels: list[LabelSource] = field(default_factory=lambda: ["human", "judge"])
    seed: int = 0
    keep_models: bool = False
    method: Literal["head", "full"] = "head"
    reward: RewardSettings = field(default_factory=_default_reward)

    def __post_init__(self) -> None:
        # Hydra hands lists over as ListConfig; plain lists keep asdict and json simple
        for name in ("data", "counts", "labels"):
            object.__setattr__(self, name, list(getattr(self, name)))
        for name, what in _NONE_GIVEN.items():
            if not getattr(self, name):
                raise InputError(f"is empty: name at least one {what}", field=f"label_curve.{name}")
        bad = [c for c in self.counts if isinstance(c, bool) or not isinstance(c, int) or c < 1]
        if bad:
            raise InputError(
                f"training-set sizes must be whole numbers >= 1, got {bad}",
                field="label_curve.counts",
            )
        if self.heldout < 1:
            raise InputError(
                f"must be >= 1 (the pairs every model is scored on), got {self.heldout}",
                field="label_curve.heldout",
            )
        unknown = [s for s in self.labels if s not in LABEL_SOURCES]
        if unknown:
            raise InputError(
                f"unknown label source {unknown[0]!r}; choose from {list(LABEL_SOURCES)}",
                field="label_curve.labels",
            )
        if self.method not in ("head", "full"):
            raise InputError(
                f"unknown method {self.method!r}; choose head or full", field="label_curve.method"
            )
        object.__setattr__(self, "counts", sorted(set(self.counts)))
        object.__setattr__(self, "labels", list(dict.fromkeys(self.labels)))


@dataclass(frozen=True)
class PooledPair:
    """A human pair and the file it came from."""

    file: str
    pair: HumanPair


def token_lengths(tokenizer: Any, pair: HumanPair) -> tuple[int, int]:
    """Tokens of the chosen and the rejected conversation, counted the way TRL's reward trainer
    counts them before it silently drops pairs longer than ``max_length``."""

    def n(response: str) -> int:
        chat = [*pair.messages, {"role": "assistant", "content": response}]
        return len(
            tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
        )

    return n(pair.chosen), n(pair.rejected)


@dataclass(frozen=True)
class CurveSplit:
    """The held-out pairs and the training pool, in training order (prefixes are the sets)."""

    heldout: list[PooledPair]
    train: list[PooledPair]


def split_pool(pool: Sequence[PooledPair], settings: LabelCurveSettings) -> CurveSplit:
    """Shuffle with the seed; hold out ``heldout`` pairs, each file's share following the pool.

    Raises:
        InputError: the largest count does not fit beside the held-out pairs; it names
            ``label_curve.counts`` and what would fit.
    """
    most = max(settings.counts)
    if most > len(pool) - settings.heldout:
        room = max(len(pool) - settings.heldout, 0)
        raise InputError(
            f"label_curve.counts asks for {most} training pairs, but the data has {len(pool)} "
            f"usable pairs and label_curve.heldout={settings.heldout} keeps "
            f"{min(settings.heldout, len(pool))} of them out: at most {room} can train",
            field="label_curve.counts",
        )
    shuffled = list(pool)
    random.Random(settings.seed).shuffle(shuffled)
    quota = _quotas([p.file for p in shuffled], settings.heldout)
    heldout, train = [], []
    for item in shuffled:
        if quota[item.file] > 0:
            quota[item.file] -= 1
            heldout.append(item)
        else:
            train.append(item)
    return CurveSplit(heldout=heldout, train=train[:most])


def _quotas(files: Sequence[str], total: int) -> dict[str, int]:
    """Held-out pairs per file, proportional to the pool (largest remainder, ties by name)."""
    sizes: dict[str, int] = defaultdict(int)
    for f in files:
        sizes[f] += 1
    exact = {f: total * n / len(files) for f, n in sizes.items()}
    quota = {f: int(x) for f, x in exact.items()}
    by_remainder = sorted(exact, key=lambda f: (quota[f] - exact[f], f))
    for f in by_remainder[: total - sum(quota.values())]:
        quota[f] += 1
    return quota


@dataclass(frozen=True)
class JudgeLabel:
    """The judge's label for one training pair.

    ``p_human_choice`` is the judge's P(the human-chosen response is better), both orders
    combined; ``agrees`` is whether its label keeps the human's order; ``coin`` marks an exact
    0.5, decided by a seeded coin rather than by the human label (which would leak it).
    """

    pair_id: str
    p_human_choice: float
    agrees: bool
    coin: bool


def judge_labels(
    pairs: Sequence[HumanPair],
    judge: Judge,
    constitution: Constitution,
    *,
    seed: int,
    chunk_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[JudgeLabel], list[Judgment], JudgeReport]:
    """Judge every pair in both orders (no injection attacks) and turn each verdict into a label.

    Returns:
        one label per pair (in order), the judgments (``p_a`` = P(human choice better)), and the
        judge's agreement report on these pairs.
    """
    report, judgments, _ = evaluate_judge(
        pairs, judge, constitution, seed=seed, chunk_size=chunk_size, on_progress=on_progress
    )
    labels = []
    for pair, j in zip(pairs, judgments, strict=True):
        coin = j.p_a == 0.5
        agrees = random.Random(f"{seed}:{pair.id}").random() < 0.5 if coin else j.p_a > 0.5
        labels.append(JudgeLabel(pair.id, j.p_a, agrees, coin))
    return labels, judgments, report


def training_set(pairs: Sequence[PooledPair], labels: Sequence[JudgeLabel] | None = None) -> Any:
    """A ``datasets.Dataset`` of ``id``/``prompt``/``chosen``/``rejected`` in charter's chat shape.

    With ``labels`` (the judge's, in the same order), a pair the judge disagrees on is swapped.
    """
    from datasets import Dataset

    rows = []
    for i, item in enumerate(pairs):
        p = item.pair
        keep = labels is None or labels[i].agrees
        chosen, rejected = (p.chosen, p.rejected) if keep else (p.rejected, p.chosen)
        rows.append(
            {
                "id": p.id,
                "prompt": p.messages,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return Dataset.from_list(rows)


TrainAndScore = Callable[[RewardSettings, Any, Provenance, Sequence[HumanPair], Path], list[float]]
"""(settings, training Dataset, provenance, held-out pairs, folder) -> r(chosen) - r(rejected)
for each held-out pair, by its human labels. The model is saved in ``folder/model``."""


def train_and_score(
    settings: RewardSettings,
    dataset: Any,
    provenance: Provenance,
    heldout: Sequence[HumanPair],
    out_dir: Path,
) -> list[float]:
    """The real step: :func:`~charter.trainers.reward.train_reward`, then score the held-out."""
    from charter.trainers.reward import RewardModelScorer, train_reward

    result = train_reward(settings, dataset, provenance, out_dir)
    scorer = RewardModelScorer(
        result.model_dir, device="cuda" if settings.optim.on_gpu() else "cpu"
    )
    # scored shortest first, so each batch pads to a similar length: 200 held-out pairs took
    # 151 s this way against 492 s in file order (2 CPU cores)
    jobs = [(p.messages, text) for p in heldout for text in (p.chosen, p.rejected)]
    order = sorted(range(len(jobs)), key=lambda i: len(jobs[i][1]) + len(str(jobs[i][0])))
    scores = scorer.score([jobs[i][0] for i in order], [jobs[i][1] for i in order])
    by_job = dict(zip(order, scores, strict=True))
    return [by_job[2 * k] - by_job[2 * k + 1] for k in range(len(heldout))]


def accuracy(margins: Sequence[float], pairs: Sequence[HumanPair]) -> dict[str, Any]:
    """Share of pairs whose human choice has the higher score (a tie counts half), with its
    Wilson 95% interval, overall and per ``dimension``."""

    def figures(ms: Sequence[float]) -> dict[str, Any]:
        wins = sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in ms)
        low, high = wilson_interval(wins, len(ms))
        return {"accuracy": round(wins / len(ms), 4), "ci95": [round(low, 4), round(high, 4)],
                "n": len(ms)}  # fmt: skip

    by_dim: dict[str, list[float]] = defaultdict(list)
    for m, p in zip(margins, pairs, strict=True):
        by_dim[p.dimension].append(m)
    return {**figures(margins), "by_dimension": {d: figures(v) for d, v in sorted(by_dim.items())}}


def longer_response_baseline(pairs: Sequence[HumanPair]) -> dict[str, Any]:
    """What "the longer response wins" scores on the same pairs (characters, ties half)."""
    return accuracy([len(p.chosen) - len(p.rejected) for p in pairs], pairs)


@dataclass(frozen=True)
class CurvePoint:
    """One reward model: its label source and count, and how it did on the held-out pairs.

    ``label_agreement`` (judge labels only) is the share of its training labels equal to the
    human ones, the label noise it trained with; ``coin_labels`` how many were exact ties.
    ``seconds`` is training plus scoring the held-out pairs.
    """

    source: str
    count: int
    accuracy: float
    ci95: list[float]
    heldout: int
    by_dimension: dict[str, Any]
    seconds: float
    label_agreement: float | None = None
    coin_labels: int | None = None
    model_dir: str | None = None


def measure_curve(
    settings: LabelCurveSettings,
    split: CurveSplit,
    labels: Sequence[JudgeLabel] | None,
    out_dir: Path,
    *,
    source_name: str,
    judge_model: str | None = None,
    train_fn: TrainAndScore = train_and_score,
    on_point: Callable[[CurvePoint], None] | None = None,
) -> list[CurvePoint]:
    """Train and score one model per (count, source), smallest counts first, both sources at
    each count before the next, so a stopped run still has comparable points.

    Args:
        settings: counts, sources and the reward settings.
        split: from :func:`split_pool`.
        labels: the judge's labels for ``split.train`` (required when ``judge`` is a source).
        out_dir: each model trains in ``out_dir/models/{source}_{count}``.
        source_name: what the pairs are, for the model card.
        judge_model: the judge's name, for the judge-labelled models' cards.
        train_fn: the train-and-score step (:func:`train_and_score`).
        on_point: called with each finished point (the command rewrites its JSON).
    """
    if "judge" in settings.labels and (labels is None or len(labels) < len(split.train)):
        raise ValueError("judge labels are needed for every training pair")
    heldout = [item.pair for item in split.heldout]
    points = []
    for count in settings.counts:
        for source in settings.labels:
            pairs = split.train[:count]
            own = labels[:count] if source == "judge" and labels is not None else None
            dataset = training_set(pairs, own)
            judges = [judge_model] if own is not None and judge_model else []
            provenance = Provenance(source_name, count, [], judges, [])
            folder = out_dir / "models" / f"{source}_{count}"
            start = time.perf_counter()
            margins = train_fn(settings.reward, dataset, provenance, heldout, folder)
            seconds = time.perf_counter() - start
            if not settings.keep_models:
                shutil.rmtree(folder / "model", ignore_errors=True)
            figures = accuracy(margins, heldout)
            point = CurvePoint(
                source=source,
                count=count,
                accuracy=figures["accuracy"],
                ci95=figures["ci95"],
                heldout=len(heldout),
                by_dimension=figures["by_dimension"],
                seconds=round(seconds, 1),
                label_agreement=round(sum(x.agrees for x in own) / count, 4) if own else None,
                coin_labels=sum(x.coin for x in own) if own else None,
                model_dir=str(folder / "model") if settings.keep_models else None,
            )
            points.append(point)
            if on_point is not None:
                on_point(point)
    return points
