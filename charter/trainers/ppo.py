"""PPO on a causal LM with torch and transformers, in one file: setup -> train -> save.

TRL 1.x removed its PPO trainer, so charter keeps its own. The algorithm is the one of Ziegler et
al. (2019) and Ouyang et al. (2022) as TRL's old ``PPOTrainer`` ran it:

* rollouts: sample a response per prompt from the current policy;
* reward: a :class:`RewardFn` scores each (prompt, response); every response token also pays
  ``-kl_coef * (log pi - log pi_ref)``, a per-token KL penalty to a frozen copy of the start model;
  ``kl_coef`` follows an adaptive controller towards ``target_kl`` over ``kl_horizon`` samples;
* advantages: GAE(gamma, lambda) over response tokens from a value head (one linear layer on the
  LM's last hidden state), whitened per batch;
* update: several epochs over minibatches of the clipped surrogate, the clipped value loss and an
  entropy bonus, with gradient-norm clipping.

Two things watch the run. Fixed (prompt, chosen, rejected) probes log how each step moves
``log pi(chosen) - log pi(rejected)`` ("watch the policy shift"). An optional second reward, a
fresh judge, scores the same samples: when its ranking stops agreeing with the trained reward, or
the two trends part, the policy is likely exploiting the reward, and a warning says so. Training
stops early when the sampled KL to the reference passes ``kl_budget``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from charter.errors import InputError
from charter.generators.rendering import continuation_ids, stop_token_ids
from charter.jsonl import atomic_dir, write_jsonl_atomic
from charter.records import Chat
from charter.trainers.common import Lora

log = logging.getLogger(__name__)

Prompt = str | Chat
"""A plain string (sent as one user turn when the tokenizer has a chat template) or a chat."""


class RewardFn(Protocol):
    """Scores responses: a trained reward model, a pointwise judge, or a rule."""

    def __call__(self, prompts: list[Prompt], responses: list[str]) -> list[float]: ...


@dataclass(frozen=True)
class ShiftProbe:
    """A fixed preference whose log-prob margin under the policy is logged every step."""

    prompt: Prompt
    chosen: str
    rejected: str


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
    estimate, so it can dip below 0 while the policy is still close to the reference.
    ``probe_margins`` are ``log pi(chosen) - log pi(rejected)`` after the step, ``probe_shifts``
    their change since the step before. ``fresh_reward_mean`` and ``rank_corr`` are ``None``
    without a fresh judge.
    """

    step: int
    reward_mean: float
    kl: float
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


class ValueHead(nn.Module):
    """``V(s)`` from the LM's last hidden state: one linear layer, started near zero."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(hidden_size + 1) * 0.1)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# The maths, on plain tensors (tested against hand-computed values)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the unmasked entries; masked entries come out 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns over ``[batch, tokens]``.

    Responses are right-padded: ``mask`` is 1 up to each response's last token. Padded steps get
    reward and value 0, so the last real token bootstraps from 0 (the episode ends there).

    Returns:
        ``(advantages, returns)``, both 0 on padding; ``returns = advantages + values``.
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def ppo_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    clip_range_value: float,
) -> dict[str, torch.Tensor]:
    """The clipped surrogate and clipped value losses, token-averaged over ``mask``.

    Returns:
        ``policy_loss``, ``value_loss`` (with the usual 1/2), ``clip_frac`` (share of tokens
        whose ratio was clipped where it mattered) and ``approx_kl`` (``(r - 1) - log r``).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    policy_loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    values_clipped = old_values + torch.clamp(
        values - old_values, -clip_range_value, clip_range_value
    )
    value_loss = 0.5 * masked_mean(
        torch.maximum((values - returns) ** 2, (values_clipped - returns) ** 2), mask
    )
    return {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "clip_frac": masked_mean((clipped > unclipped).float(), mask),
        "approx_kl": masked_mean((ratio - 1) - log_ratio, mask),
    }


class AdaptiveKLController:
    """Ziegler et al.'s proportional controller: nudge ``value`` so the sampled KL nears target.

    The error is clipped to ±20 % and scaled by ``samples / horizon``, so the coefficient moves
    slowly and a single noisy batch cannot swing it.
    """

    def __init__(self, init: float, target: float | None, horizon: int) -> None:
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, kl: float, samples: int) -> None:
        if self.target is None:
            return
        error = min(max(kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * samples / self.horizon


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho (average ranks for ties); 0.0 when either side is constant."""

    def ranks(xs: Sequence[float]) -> list[float]:
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        out = [0.0] * len(xs)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else 0.0


def _slope(ys: Sequence[float]) -> float:
    n = len(ys)
    mx = (n - 1) / 2
    denominator = sum((x - mx) ** 2 for x in range(n))
    my = sum(ys) / n
    return sum((x - mx) * (y - my) for x, y in enumerate(ys)) / denominator if n > 1 else 0.0


# ---------------------------------------------------------------------------------------------
# Tokens: rendering prompts, sampling, scoring


def _probe(p: ShiftProbe | Mapping[str, Any], i: int) -> ShiftProbe:
    if isinstance(p, ShiftProbe):
        return p
    missing = {"prompt", "chosen", "rejected"} - set(p)
    if missing:
        raise InputError(f"probe {i} lacks {sorted(missing)}", field=f"trainer.probes[{i}]")
    prompt = p["prompt"] if isinstance(p["prompt"], str) else [dict(m) for m in p["prompt"]]
    return ShiftProbe(prompt, str(p["chosen"]), str(p["rejected"]))


def _render(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, system: str | None) -> str:
    """The prompt text the policy continues: its chat template, or the plain string."""
    if not tokenizer.chat_template:
        if isinstance(prompt, str):
            return prompt
        return "\n".join(m["content"] for m in prompt)
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system is not None and all(m["role"] != "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _forward(
    policy: PreTrainedModel,
    head: ValueHead | None,
    ids: torch.Tensor,
    mask: torch.Tensor,
    start: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log-probs of ``ids[:, start:]``, the entropy there, and the values of the states before.

    Position ids follow the attention mask, as in ``generate``, so left padding does not shift
    the prompt and the scores are those the tokens were sampled with.
    """
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = policy(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        output_hidden_states=head is not None,
        use_cache=False,
    )
    logits = out.logits[:, start - 1 : -1].float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logprobs = logp_all.gather(-1, ids[:, start:].unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    values = None
    if head is not None:
        values = head(out.hidden_states[-1][:, start - 1 : -1]).float()
    return logprobs, entropy, values


@torch.inference_mode()
def response_logprob(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    response: str,
    system: str | None = None,
) -> float:
    """Summed log-prob of ``response`` as the model's reply to ``prompt`` (one unpadded pass)."""
    prompt_ids = tokenizer(_render(tokenizer, prompt, system), add_special_tokens=False).input_ids
    reply_ids = tokenizer(response, add_special_tokens=False).input_ids
    if not reply_ids:
        return 0.0
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + reply_ids], device=device)
    logprobs, _, _ = _forward(model, None, ids, torch.ones_like(ids), len(prompt_ids), 1.0)
    return float(logprobs.sum())


@dataclass
class _Rollout:
    ids: torch.Tensor  # [B, P + R] left-padded prompt, right-padded response
    mask: torch.Tensor  # attention mask over ids
    start: int  # P: where responses begin
    response_mask: torch.Tensor  # [B, R] float, 1 up to and including each stop token
    texts: list[str]
    stopped: list[bool]  # ended with a stop token (not cut at max_new_tokens)


def _sample(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rendered: list[str],
    config: PPOConfig,
    stops: list[int],
) -> _Rollout:
    prompt_rows = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    prompt_ids, prompt_mask = (
        t.to(policy.device) for t in _left_pad(prompt_rows, tokenizer.pad_token_id)
    )
    generation = GenerationConfig(
        do_sample=True,
        temperature=config.temperature,
        top_k=0,  # pure sampling: the ratio and KL below assume the full distribution
        top_p=1.0,
        max_new_tokens=config.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stops,
    )
    policy.eval()
    with torch.no_grad():
        out = policy.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=generation
        )
    start = prompt_ids.shape[1]
    responses = out[:, start:]
    # Everything after a response's first stop token is padding (pad may equal EOS).
    is_stop = torch.isin(responses, torch.tensor(stops, device=responses.device))
    after_stop = (is_stop.cumsum(-1) - is_stop.long()) > 0
    response_mask = (~after_stop).float()
    texts = [
        tokenizer.decode(r[m.bool()], skip_special_tokens=True)
        for r, m in zip(responses, response_mask, strict=True)
    ]
    mask = torch.cat([prompt_mask, response_mask.long()], dim=1)
    return _Rollout(out, mask, start, response_mask, texts, is_stop.any(-1).tolist())


def _probe_margins(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    probes: Sequence[ShiftProbe],
    system: str | None,
) -> list[float]:
    """``log pi(chosen | prompt) - log pi(rejected | prompt)`` of each probe, summed over tokens."""
    margins = []
    policy.eval()
    with torch.no_grad():
        for probe in probes:
            prompt = _render(tokenizer, probe.prompt, system)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            total = []
            for response in (probe.chosen, probe.rejected):
                target = continuation_ids(tokenizer, prompt, prompt_ids, response)
                ids = torch.tensor([prompt_ids + target], device=policy.device)
                logprobs, _, _ = _forward(
                    policy, None, ids, torch.ones_like(ids), len(prompt_ids), 1.0
                )
                total.append(logprobs.sum().item())
            margins.append(total[0] - total[1])
    return margins


def _score_rollout(
    model: PreTrainedModel, head: ValueHead | None, roll: _Rollout, config: PPOConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (and values, with a head) of the sampled responses, one minibatch at a time."""
    logprobs, values = [], []
    with torch.no_grad():
        for idx in torch.arange(len(roll.texts)).split(config.mini_batch_size):
            lp, _, v = _forward(
                model, head, roll.ids[idx], roll.mask[idx], roll.start, config.temperature
            )
            logprobs.append(lp)
            values.append(v if v is not None else torch.zeros_like(lp))
    return torch.cat(logprobs), torch.cat(values)


def _update(
    model: PreTrainedModel,
    head: ValueHead,
    optimizer: torch.optim.Optimizer,
    parameters: list[nn.Parameter],
    roll: _Rollout,
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
            logprobs, entropy, values = _forward(
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
            losses["entropy"] = masked_mean(entropy, mask[idx])
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


def load_policy(
    policy: str | Path | PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM in fp32 (on the GPU when there is one) and its tokenizer, with a pad token."""
    if isinstance(policy, PreTrainedModel):
        model = policy
        if tokenizer is None:
            raise InputError("a policy passed as a model needs its tokenizer")
    else:
        from charter.generators.model_files import resolve_model

        path = resolve_model(str(policy))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


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
        out_dir: gets ``policy/`` (model, tokenizer, ``value_head.pt``) and ``ppo_log.jsonl``
            (rewritten after every step, so a killed run keeps its log so far).
        fresh_reward_fn: an independent judge scored on the same samples, for the
            over-optimisation guard; it never shapes the reward.

    Returns:
        The saved folder, the per-step logs, why training stopped, and any guard warnings.
    """
    if not prompts:
        raise InputError("no prompts to train on", field="prompts")
    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)

    model, tokenizer = load_policy(policy, tokenizer)
    peft_config = config.lora.peft_config("CAUSAL_LM") if config.lora else None
    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
        reference = None
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
    margins = _probe_margins(model, tokenizer, probes, config.system_prompt)
    initial_margins = list(margins)
    order: list[int] = []
    logs: list[StepLog] = []
    warnings: list[str] = []
    stopped = "steps"
    reward_means: list[float] = []
    fresh_means: list[float] = []

    for step in range(config.steps):
        began = time.perf_counter()
        batch: list[Prompt] = []
        while len(batch) < config.batch_size:
            if not order:
                order = list(range(len(prompts)))
                rng.shuffle(order)
            batch.append(prompts[order.pop()])
        rendered = [_render(tokenizer, p, config.system_prompt) for p in batch]

        # Rollout and the reward of each token.
        roll = _sample(model, tokenizer, rendered, config, stops)
        scores = _scores(reward_fn, batch, roll.texts, "reward_fn")
        penalty = [config.missing_eos_penalty * (not stopped) for stopped in roll.stopped]
        mask = roll.response_mask
        old_logprobs, old_values = _score_rollout(model, head, roll, config)
        if reference is None:
            with model.disable_adapter():
                ref_logprobs, _ = _score_rollout(model, None, roll, config)
        else:
            ref_logprobs, _ = _score_rollout(reference, None, roll, config)
        kl_tokens = (old_logprobs - ref_logprobs) * mask
        kl = kl_tokens.sum(-1).mean().item()
        if config.kl_budget is not None and kl > config.kl_budget:
            stopped = "kl_budget"
            log.info(
                "step %d: KL %.3f passed the budget %.3f; stopping", step, kl, config.kl_budget
            )
            break
        rewards = -kl_ctl.value * kl_tokens
        last = (mask.sum(-1).long() - 1).clamp(min=0)
        final = [score - cut for score, cut in zip(scores, penalty, strict=True)]
        rewards[torch.arange(len(scores)), last] += torch.tensor(final).to(rewards)
        advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = masked_whiten(advantages, mask)

        mean = _update(
            model,
            head,
            optimizer,
            parameters,
            roll,
            old_logprobs,
            old_values,
            advantages,
            returns,
            config,
        )
        coef_used = kl_ctl.value
        kl_ctl.update(kl, config.batch_size)

        # Watch the policy shift, and the fresh judge.
        previous, margins = margins, _probe_margins(model, tokenizer, probes, config.system_prompt)
        fresh_mean = corr = None
        reward_means.append(sum(scores) / len(scores))
        if fresh_reward_fn is not None:
            fresh = _scores(fresh_reward_fn, batch, roll.texts, "fresh_reward_fn")
            fresh_mean, corr = sum(fresh) / len(fresh), rank_correlation(scores, fresh)
            fresh_means.append(fresh_mean)
            warning = _guard(step, corr, reward_means, fresh_means, config)
            if warning:
                log.warning(warning)
                warnings.append(warning)
        logs.append(
            StepLog(
                step=step,
                reward_mean=reward_means[-1],
                kl=kl,
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
        log.info("ppo %s", json.dumps(dataclasses.asdict(logs[-1])))
        write_jsonl_atomic(out_dir / "ppo_log.jsonl", (dataclasses.asdict(s) for s in logs))

    model_dir = out_dir / "policy"
    if peft_config is not None:
        model = model.merge_and_unload()  # a plain folder, loadable without peft
    with atomic_dir(model_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        torch.save(head.state_dict(), tmp / "value_head.pt")
    write_jsonl_atomic(out_dir / "ppo_log.jsonl", (dataclasses.asdict(s) for s in logs))
    return PPOResult(model_dir, logs, stopped, initial_margins, warnings)


def _guard(
    step: int, corr: float, rewards: list[float], fresh: list[float], config: PPOConfig
) -> str | None:
    """A warning when the trained reward and the fresh judge disagree, else ``None``.

    Two signs of reward hacking: on this batch the two rank the samples differently (Spearman
    below ``guard_min_rank_corr``), or over the last ``guard_window`` steps the reward climbs
    while the fresh judge's mean falls.
    """
    problems = []
    if corr < config.guard_min_rank_corr:
        problems.append(f"rank correlation {corr:.2f} < {config.guard_min_rank_corr:.2f}")
    if len(rewards) >= config.guard_window:
        up = _slope(rewards[-config.guard_window :])
        down = _slope(fresh[-config.guard_window :])
        if up > 0 > down:
            problems.append(
                f"over the last {config.guard_window} steps the reward rose ({up:+.3f}/step) "
                f"while the fresh judge fell ({down:+.3f}/step)"
            )
    if not problems:
        return None
    return f"step {step}: reward and fresh judge diverge: " + "; ".join(problems)
