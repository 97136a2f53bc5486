"""PPO on a causal LM with torch and transformers: setup -> train -> save.

TRL 1.x removed its PPO trainer, so charter keeps its own. The algorithm is the one of Ziegler et
al. (2019) and Ouyang et al. (2022) as TRL's old ``PPOTrainer`` ran it:

* rollouts: sample a response per prompt from the current policy (:mod:`.ppo_rollout`);
* reward: a :class:`RewardFn` scores each (prompt, response); every response token also pays
  ``-kl_coef * (log pi - log pi_ref)``, a per-token KL penalty to a frozen copy of the start model;
  ``kl_coef`` follows an adaptive controller towards ``target_kl`` over ``kl_horizon`` samples;
* advantages: GAE(gamma, lambda) over response tokens from a value head (one linear layer on the
  LM's last hidden state), whitened per batch (:mod:`.ppo_maths`);
* update: several epochs over minibatches of the clipped surrogate, the clipped value loss and an
  entropy bonus, with gradient-norm clipping.

Two things watch the run. Fixed (prompt, chosen, rejected) probes log how each step moves
``log pi(chosen) - log pi(rejected)`` ("watch the policy shift"). An optional second reward, a
fresh judge, scores the same samples: when its ranking stops agreeing with the trained reward, or
the two trends part, the policy is likely exploiting the reward, and a warning says so
(:mod:`.ppo_guard`). Every step's reward, fresh judge and KL to the start policy go to
``curves.jsonl`` and, at the end, ``curves.png`` (:mod:`.ppo_curves`). Training stops early when
the sampled KL to the reference passes ``kl_budget``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from charter.errors import InputError
from charter.generators.rendering import stop_token_ids
from charter.jsonl import atomic_dir, write_jsonl_atomic
from charter.trainers.common import Lora
from charter.trainers.ppo_curves import CurvePoint, write_curves, write_curves_plot
from charter.trainers.ppo_guard import divergence_warning, rank_correlation
from charter.trainers.ppo_maths import (
    AdaptiveKLController,
    entropy,
    gae,
    masked_mean,
    masked_whiten,
    ppo_losses,
    token_rewards,
)
from charter.trainers.ppo_rollout import (
    Prompt,
    Rollout,
    ShiftProbe,
    ValueHead,
    forward,
    load_policy,
    probe_margins,
    render,
    response_logprob,
    sample,
    score_rollout,
)

# Callers import these from here (the module was one file before it was split).
__all__ = [
    "AdaptiveKLController",
    "PPOConfig",
    "PPOResult",
    "Prompt",
    "RewardFn",
    "ShiftProbe",
    "StepLog",
    "ValueHead",
    "gae",
    "load_policy",
    "masked_mean",
    "masked_whiten",
    "ppo_losses",
    "rank_correlation",
    "response_logprob",
    "train_ppo",
]

log = logging.getLogger(__name__)


class RewardFn(Protocol):
    """Scores responses: a trained reward model, a pointwise judge, or a rule."""

    def __call__(self, prompts: list[Prompt], responses: list[str]) -> list[float]: ...


@dataclass
class PPOConfig:
    """PPO settings (``charter/conf/trainer/ppo.yaml``); the defaults suit a small CPU run.

    ``batch_size`` prompts are sampled per step and cut into minibatches of ``mini_batch_size``
    for ``ppo_epochs`` passes. ``kl_budget`` (nats per response) stops training once the policy's
    samples drift that far from the reference; ``None`` never stops. ``probes`` are
    :class:`ShiftProbe` or mappings with the same keys. The guard compares the reward with a fresh
    judge over the last ``guard_window`` steps and warns below ``guard_min_rank_corr``.
    ``missing_eos_penalty`` is taken off the score of a response cut at ``max_new_tokens``, so a
    reward that likes length cannot be farmed by never stopping (logged rewards leave it out).
    With ``lora.enabled`` only low-rank adapters train, the reference is the same weights with
    the adapters switched off (no second copy in memory), and the saved policy has them merged.
    """

    steps: int = 20
    batch_size: int = 8
    mini_batch_size: int = 4
    ppo_epochs: int = 4
    max_new_tokens: int = 32
    temperature: float = 1.0
    learning_rate: float = 1e-5
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    entropy_coef: float = 0.0
    init_kl_coef: float = 0.05
    adaptive_kl: bool = True
    target_kl: float = 6.0
    kl_horizon: int = 10000
    kl_budget: float | None = None
    max_grad_norm: float = 1.0
    whiten_advantages: bool = True
    system_prompt: str | None = None
    seed: int = 0
    probes: Sequence[ShiftProbe | Mapping[str, Any]] = ()
    guard_window: int = 5
    guard_min_rank_corr: float = 0.0
    missing_eos_penalty: float = 0.0
    lora: Lora | None = None

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens")
        for name in (*positive, "temperature", "kl_horizon", "guard_window"):
            if getattr(self, name) <= 0:
                raise InputError(f"must be > 0, got {getattr(self, name)}", field=f"trainer.{name}")
        if self.batch_size % self.mini_batch_size:
            raise InputError(
                f"batch_size {self.batch_size} is not a multiple of mini_batch_size "
                f"{self.mini_batch_size}",
                field="trainer.mini_batch_size",
            )
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(
                    f"must be in [0, 1], got {getattr(self, name)}", field=f"trainer.{name}"
                )
        self.probes = tuple(_probe(p, i) for i, p in enumerate(self.probes))


@dataclass(frozen=True)
class StepLog:
    """One PPO step's figures (a row of ``ppo_log.jsonl``).

    ``kl`` is the mean over responses of the summed per-token ``log pi - log pi_ref`` of the
    rollout; ``approx_kl`` is how far the updates moved the policy from the rollout policy
    (mean of ``(r - 1) - log r`` over tokens, r the probability ratio). ``kl`` is a sample
    estimate, so it can dip below 0 while the policy is still close to the reference;
    ``kl_to_start`` sums the KL of the whole next-token distributions instead (never below 0).
    ``probe_margins`` are ``log pi(chosen) - log pi(rejected)`` after the step, ``probe_shifts``
    their change since the step before. ``fresh_reward_mean`` and ``rank_corr`` are ``None``
    without a fresh judge.
    """

    step: int
    reward_mean: float
    kl: float
    kl_to_start: float
    kl_coef: float
    entropy: float
    clip_frac: float
    value_loss: float
    policy_loss: float
    approx_kl: float
    response_tokens: float
    probe_margins: list[float]
    probe_shifts: list[float]
    fresh_reward_mean: float | None
    rank_corr: float | None
    seconds: float


@dataclass(frozen=True)
class PPOResult:
    """What a run produced: the saved policy folder, every step's log, why it stopped."""

    model_dir: Path
    steps: list[StepLog]
    stopped: str
    """``"steps"`` (ran them all) or ``"kl_budget"``."""
    initial_probe_margins: list[float]
    warnings: list[str] = field(default_factory=list)
    curves: list[CurvePoint] = field(default_factory=list)
    """The rows of ``curves.jsonl``."""


def _probe(p: ShiftProbe | Mapping[str, Any], i: int) -> ShiftProbe:
    if isinstance(p, ShiftProbe):
        return p
    missing = {"prompt", "chosen", "rejected"} - set(p)
    if missing:
        raise InputError(f"probe {i} lacks {sorted(missing)}", field=f"trainer.probes[{i}]")
    prompt = p["prompt"] if isinstance(p["prompt"], str) else [dict(m) for m in p["prompt"]]
    return ShiftProbe(prompt, str(p["chosen"]), str(p["rejected"]))


def _batches(prompts: Sequence[Prompt], size: int, seed: int) -> Iterator[list[Prompt]]:
    """Batches of ``size`` prompts, endlessly: each pass over the prompts a new seeded shuffle."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        batch = []
        while len(batch) < size:
            if not order:
                order = list(range(len(prompts)))
                rng.shuffle(order)
            batch.append(prompts[order.pop()])
        yield batch


def _update(
    model: PreTrainedModel,
    head: ValueHead,
    optimizer: torch.optim.Optimizer,
    parameters: list[nn.Parameter],
    roll: Rollout,
    old_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    config: PPOConfig,
) -> dict[str, float]:
    """``ppo_epochs`` passes of clipped updates over shuffled minibatches; the mean losses.

    The model stays in eval mode (no dropout), so the first minibatch's ratio is exactly 1, as
    PPO assumes: the rollout's log-probs came from the same deterministic forward pass.
    """
    mask = roll.response_mask
    sums: dict[str, float] = {}
    updates = 0
    for _ in range(config.ppo_epochs):
        for idx in torch.randperm(len(roll.texts)).split(config.mini_batch_size):
            logprobs, logp_all, values = forward(
                model, head, roll.ids[idx], roll.mask[idx], roll.start, config.temperature
            )
            assert values is not None
            losses = ppo_losses(
                logprobs,
                old_logprobs[idx],
                advantages[idx],
                values,
                old_values[idx],
                returns[idx],
                mask[idx],
                config.clip_range,
                config.clip_range_value,
            )
            losses["entropy"] = masked_mean(entropy(logp_all), mask[idx])
            loss = (
                losses["policy_loss"]
                + config.vf_coef * losses["value_loss"]
                - config.entropy_coef * losses["entropy"]
            )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value.item()
            updates += 1
    return {key: total / updates for key, total in sums.items()}


def _scores(fn: RewardFn, prompts: list[Prompt], texts: list[str], what: str) -> list[float]:
    scores = [float(s) for s in fn(prompts, texts)]
    if len(scores) != len(texts):
        raise ValueError(f"{what} returned {len(scores)} scores for {len(texts)} responses")
    if not all(math.isfinite(s) for s in scores):
        raise ValueError(f"{what} returned a non-finite score: {scores}")
    return scores


# ---------------------------------------------------------------------------------------------
# setup -> train -> save


def train_ppo(
    policy: str | Path | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    reward_fn: RewardFn,
    prompts: Sequence[Prompt],
    config: PPOConfig,
    out_dir: str | Path,
    *,
    fresh_reward_fn: RewardFn | None = None,
) -> PPOResult:
    """Train ``policy`` with PPO against ``reward_fn``; save it to ``out_dir/policy``.

    Args:
        policy: a model folder, an embedded model name (loaded in fp32, on CUDA where there is
            one), or a loaded causal LM (trained in place, on its own device).
        tokenizer: the policy's tokenizer; ``None`` loads it from the policy's folder.
        reward_fn: scores ``(prompts, responses)``; prompts are passed as given here.
        prompts: strings or chats; each step takes the next ``batch_size`` of a seeded shuffle.
        config: the PPO settings.
        out_dir: gets ``policy/`` (model, tokenizer, ``value_head.pt``), ``ppo_log.jsonl`` and
            ``curves.jsonl`` (both rewritten after every step, so a killed run keeps its steps
            so far), and ``curves.png`` at the end.
        fresh_reward_fn: an independent judge scored on the same samples, for the
            over-optimisation guard; it never shapes the reward.

    Returns:
        The saved folder, the per-step logs, why training stopped, and any guard warnings.
    """
    if not prompts:
        raise InputError("no prompts to train on", field="prompts")
    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)

    model, tokenizer = load_policy(policy, tokenizer)
    peft_config = config.lora.peft_config("CAUSAL_LM") if config.lora else None
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
        reference = None  # the same weights with the adapters switched off
    else:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    head = ValueHead(model.config.hidden_size).to(model.device, model.dtype)
    parameters = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, eps=1e-5)
    kl_ctl = AdaptiveKLController(
        config.init_kl_coef, config.target_kl if config.adaptive_kl else None, config.kl_horizon
    )
    stops = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    probes = list(config.probes)
    margins = probe_margins(model, tokenizer, probes, config.system_prompt)
    initial_margins = list(margins)
    batches = _batches(prompts, config.batch_size, config.seed)
    logs: list[StepLog] = []
    curves: list[CurvePoint] = []
    warnings: list[str] = []
    stopped = "steps"
    reward_means: list[float] = []
    fresh_means: list[float] = []

    for step in range(config.steps):
        began = time.perf_counter()
        batch = next(batches)
        rendered = [render(tokenizer, p, config.system_prompt) for p in batch]

        # Rollout and the reward of each token.
        roll = sample(
            model,
            tokenizer,
            rendered,
            temperature=config.temperature,
            max_new_tokens=config.max_new_tokens,
            stops=stops,
        )
        scores = _scores(reward_fn, batch, roll.texts, "reward_fn")
        penalty = [config.missing_eos_penalty * (not stopped) for stopped in roll.stopped]
        mask = roll.response_mask
        scored = score_rollout(
            model,
            head,
            reference,
            roll,
            temperature=config.temperature,
            mini_batch_size=config.mini_batch_size,
        )
        kl_tokens = (scored.logprobs - scored.ref_logprobs) * mask
        kl = kl_tokens.sum(-1).mean().item()
        if config.kl_budget is not None and kl > config.kl_budget:
            stopped = "kl_budget"
            log.info(
                "step %d: KL %.3f passed the budget %.3f; stopping", step, kl, config.kl_budget
            )
            break
        final = torch.tensor([s - cut for s, cut in zip(scores, penalty, strict=True)])
        rewards = token_rewards(final, kl_tokens, mask, kl_ctl.value)
        advantages, returns = gae(rewards, scored.values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = masked_whiten(advantages, mask)

        mean = _update(
            model,
            head,
            optimizer,
            parameters,
            roll,
            scored.logprobs,
            scored.values,
            advantages,
            returns,
            config,
        )
        coef_used = kl_ctl.value
        kl_ctl.update(kl, config.batch_size)

        # Watch the policy shift, and the fresh judge.
        previous, margins = margins, probe_margins(model, tokenizer, probes, config.system_prompt)
        fresh_mean = corr = warning = None
        reward_means.append(sum(scores) / len(scores))
        if fresh_reward_fn is not None:
            fresh = _scores(fresh_reward_fn, batch, roll.texts, "fresh_reward_fn")
            fresh_mean, corr = sum(fresh) / len(fresh), rank_correlation(scores, fresh)
            fresh_means.append(fresh_mean)
            warning = divergence_warning(
                step,
                corr,
                reward_means,
                fresh_means,
                window=config.guard_window,
                min_rank_corr=config.guard_min_rank_corr,
            )
            if warning:
                log.warning(warning)
                warnings.append(warning)
        kl_to_start = scored.kl.sum(-1).mean().item()
        logs.append(
            StepLog(
                step=step,
                reward_mean=reward_means[-1],
                kl=kl,
                kl_to_start=kl_to_start,
                kl_coef=coef_used,
                entropy=mean["entropy"],
                clip_frac=mean["clip_frac"],
                value_loss=mean["value_loss"],
                policy_loss=mean["policy_loss"],
                approx_kl=mean["approx_kl"],
                response_tokens=mask.sum(-1).mean().item(),
                probe_margins=margins,
                probe_shifts=[m - p for m, p in zip(margins, previous, strict=True)],
                fresh_reward_mean=fresh_mean,
                rank_corr=corr,
                seconds=time.perf_counter() - began,
            )
        )
        curves.append(CurvePoint.of(logs[-1], guard_fired=warning is not None))
        log.info("ppo %s", json.dumps(dataclasses.asdict(logs[-1])))
        write_jsonl_atomic(out_dir / "ppo_log.jsonl", (dataclasses.asdict(s) for s in logs))
        write_curves(out_dir, curves)

    model_dir = out_dir / "policy"
    if peft_config is not None:
        model = model.merge_and_unload()  # a plain folder, loadable without peft
    with atomic_dir(model_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        torch.save(head.state_dict(), tmp / "value_head.pt")
    write_jsonl_atomic(out_dir / "ppo_log.jsonl", (dataclasses.asdict(s) for s in logs))
    write_curves(out_dir, curves)
    if curves:
        write_curves_plot(out_dir, [dataclasses.asdict(c) for c in curves])
    return PPOResult(model_dir, logs, stopped, initial_margins, warnings, curves)
