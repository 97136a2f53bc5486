"""PPO's maths on plain tensors: masked statistics, GAE, the clipped losses, the KL controller.

Nothing here knows about models or tokenizers, so each piece is tested against hand-computed
values (``tests/test_ppo.py``).
"""

from __future__ import annotations

import torch


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


def token_rewards(
    scores: torch.Tensor, kl_tokens: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards ``[batch, tokens]``: ``-kl_coef * kl_tokens`` on every response token,
    plus each response's score on its last real token (``mask`` marks the real ones)."""
    rewards = -kl_coef * kl_tokens * mask
    last = (mask.sum(-1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores.to(rewards)
    return rewards


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


def token_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``KL(pi || pi_ref)`` of the next-token distributions at each position, over the vocabulary.

    Both are log-softmaxed ``[..., vocab]``. Summed over a sampled response this estimates the
    sequence KL without the sample noise of ``log pi - log pi_ref`` at the sampled token, and is
    never below 0.
    """
    return (logp.exp() * (logp - ref_logp)).sum(-1).clamp(min=0)


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution ``[..., vocab]`` (log-softmaxed)."""
    return -(logp.exp() * logp).sum(-1)


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
