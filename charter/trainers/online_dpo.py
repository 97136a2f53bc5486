"""Online DPO: labels that track the policy, round by round.

Each round samples from the *current* policy with the generate stage, judges the samples under
the constitution with the judge stage, selects pairs with the pairs stage, and takes a DPO step
on them; the next round samples from the updated model. These are the pipeline's own stage
functions, so online and offline data are made the same way and differ only in whose samples
are judged. Every round's candidates, judgments and pairs are kept under ``round_N/``, with its
DPO step's TRL log; ``log_history.jsonl`` at the top gathers every round's steps in order, each
row with its ``round``.

Over-optimisation guard. Before each round's DPO step, the policy's drift from the starting
model is measured on that round's own samples: the mean of log pi(y|x) - log pi_ref(y|x) over
them, a sampled estimate of KL(pi || pi_ref) in nats per response (exact in expectation at
temperature 1; the generator's temperature and top-p make it an approximation). Once it passes
``kl_budget`` the rounds stop and the last model is kept. With a fresh judge (a reward function
independent of the labelling judge, e.g. the pointwise judge), every round also counts how often
it agrees with the labelling judge on that round's pairs, and warns when that agreement falls
below ``guard_min_agreement``: the policy may be learning what the labelling judge likes rather
than what the principles ask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from charter import run_files
from charter.constitution import Constitution
from charter.errors import InputError
from charter.generators.engine import Engine, SamplingSettings
from charter.generators.stage import generate_candidates
from charter.jsonl import read_jsonl, write_jsonl_atomic
from charter.judges.protocol import Judge
from charter.judges.stage import judge_candidates
from charter.pairs import PairSettings, make_pairs
from charter.records import CandidateSet, PreferencePair, PromptRecord, to_row
from charter.trainers.common import LOG_HISTORY, TrainResult
from charter.trainers.data import Provenance
from charter.trainers.dpo import DPOSettings, train_dpo
from charter.trainers.ppo import RewardFn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnlineDPOSettings:
    """Online DPO.

    Args:
        rounds: sample -> judge -> pairs -> DPO cycles.
        prompts_per_round: prompts sampled each round (the prompt list is walked in order and
            wraps around, so rounds see different prompts while there are enough).
        num_samples: responses per prompt per round (2 is the minimum for a pair).
        dpo: the DPO step of every round; its ``policy`` is the starting model.
        pairs: how each round's pairs are selected.
        kl_budget: nats per response; rounds stop once the policy's sampled KL to the starting
            model passes it (``None``: measured and logged, never stops).
        guard_min_agreement: with a fresh judge, warn when it agrees with the labelling judge on
            fewer than this share of a round's pairs.
    """

    rounds: int = 2
    prompts_per_round: int = 8
    num_samples: int = 2
    dpo: DPOSettings = field(default_factory=DPOSettings)
    pairs: PairSettings = field(default_factory=PairSettings)
    kl_budget: float | None = None
    guard_min_agreement: float = 0.5


def _round_prompts(prompts: Sequence[PromptRecord], n: int, r: int) -> list[PromptRecord]:
    return [prompts[(r * n + i) % len(prompts)] for i in range(min(n, len(prompts)))]


def train_online_dpo(
    settings: OnlineDPOSettings,
    prompts: Sequence[PromptRecord],
    policy_engine: Callable[[str], Engine],
    sampling: SamplingSettings,
    judge: Judge,
    constitution: Constitution,
    out_dir: Path,
    *,
    seed: int = 0,
    fresh_reward_fn: RewardFn | None = None,
) -> TrainResult:
    """Run the rounds; the last round's model is the result.

    Args:
        policy_engine: loads a sampling engine for a model folder (the current policy).
        sampling: how the policy samples (its seed is offset by the round).
        judge: any charter judge (on its own, frozen engine).
        fresh_reward_fn: an independent scorer for the guard (see the module docstring).

    Returns:
        the final model, every round's DPO losses in order, and per-round counts, KL and guard
        figures in ``metrics`` (``stopped``: ``"rounds"`` or ``"kl_budget"``; ``warnings``).
    """
    from datasets import Dataset

    if settings.num_samples < 2:
        raise InputError("online DPO needs num_samples >= 2 to form pairs", field="num_samples")
    policy = start = str(settings.dpo.policy)
    losses: list[float] = []
    step_log: list[dict[str, Any]] = []  # every round's DPO steps, in order
    per_round: list[dict[str, Any]] = []
    warnings: list[str] = []
    stopped = "rounds"
    result: TrainResult | None = None
    for r in range(settings.rounds):
        round_dir = out_dir / f"round_{r}"
        engine = policy_engine(policy)
        sets, _ = generate_candidates(
            _round_prompts(prompts, settings.prompts_per_round, r),
            engine,
            replace(sampling, seed=sampling.seed + r),
            settings.num_samples,
        )
        del engine
        judgments, rankings, _ = judge_candidates(sets, judge, constitution, seed=seed + r)
        made = make_pairs(
            sets, judgments, rankings, settings.pairs, constitution_sha256=constitution.sha256
        )
        rows = [to_row(p) for p in made.pairs]
        run_files.write_rows(round_dir, run_files.CANDIDATES, sets)
        run_files.write_rows(round_dir, run_files.JUDGMENTS, judgments)
        run_files.write_rows(round_dir, run_files.PAIRS, rows)
        # no DPO step yet (round 0, or only rounds without pairs): the policy is the start
        kl = 0.0 if policy == start else _sampled_kl(policy, start, sets)
        guard: dict[str, Any] = {"kl_to_start": kl}
        if fresh_reward_fn is not None and made.pairs:
            guard["fresh_agreement"] = _agreement(fresh_reward_fn, made.pairs)
            if guard["fresh_agreement"] < settings.guard_min_agreement:
                warnings.append(
                    f"round {r}: the fresh judge agrees with the labelling judge on "
                    f"{guard['fresh_agreement']:.2f} of the pairs "
                    f"(< {settings.guard_min_agreement:.2f})"
                )
                log.warning(warnings[-1])
        if settings.kl_budget is not None and guard["kl_to_start"] > settings.kl_budget:
            stopped = "kl_budget"
            log.warning(
                "round %d: KL %.3f to the starting model passed the budget %.3f; stopping",
                r,
                guard["kl_to_start"],
                settings.kl_budget,
            )
            per_round.append({"round": r, "pairs": len(rows), "skipped": "kl_budget", **guard})
            break
        if not rows:  # every pair dropped (identical samples, low margins): nothing to learn
            per_round.append({"round": r, "pairs": 0, "skipped": "no pairs", **guard})
            continue
        pairs = Dataset.from_list(rows)
        step = replace(settings.dpo, policy=str(policy))
        result, _ = train_dpo(step, pairs, Provenance.of(pairs, round_dir), round_dir)
        losses += result.losses
        step_log += [{"round": r, **row} for _, row in read_jsonl(round_dir / LOG_HISTORY)]
        policy = str(result.model_dir)
        per_round.append({"round": r, "pairs": len(rows), **guard, **result.metrics})
    if result is None:
        raise InputError("no round produced a pair to train on", field="trainer.rounds")
    write_jsonl_atomic(out_dir / LOG_HISTORY, step_log)
    metrics = {"rounds": per_round, "stopped": stopped, "warnings": warnings}
    return TrainResult(model_dir=Path(policy), losses=losses, metrics=metrics)


def _sampled_kl(policy: str, start: str, sets: Sequence[CandidateSet]) -> float:
    """Mean log pi(y|x) - log pi_start(y|x) over the samples the policy just drew."""
    from charter.trainers.ppo import load_policy, response_logprob

    chats = [(cs.messages, c.text) for cs in sets for c in cs.candidates]
    if not chats:
        return 0.0
    gaps = [0.0] * len(chats)
    for model_path, sign in ((policy, 1.0), (start, -1.0)):
        model, tokenizer = load_policy(model_path, None)
        model.eval()
        for i, (messages, text) in enumerate(chats):
            gaps[i] += sign * response_logprob(model, tokenizer, messages, text)
        del model
    return sum(gaps) / len(gaps)


def _agreement(fresh: RewardFn, pairs: Sequence[PreferencePair]) -> float:
    """Share of pairs whose chosen response the fresh scorer also scores higher."""
    prompts = [p.prompt for p in pairs] * 2
    texts = [p.chosen[0]["content"] for p in pairs] + [p.rejected[0]["content"] for p in pairs]
    scores = fresh(prompts, texts)
    n = len(pairs)
    return sum(scores[i] > scores[n + i] for i in range(n)) / n
