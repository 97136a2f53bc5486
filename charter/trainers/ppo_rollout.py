"""PPO's token side: loading the policy, rendering prompts, sampling, and scoring samples.

A rollout is one batch of prompts (left-padded) and the policy's sampled responses
(right-padded, everything after a response's first stop token masked out). Scoring a rollout
gives, per response token, the policy's and the reference's log-probs, the value head's
estimate and the KL between their full next-token distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

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
from charter.generators.rendering import continuation_ids
from charter.records import Chat
from charter.trainers.ppo_maths import token_kl

Prompt = str | Chat
"""A plain string (sent as one user turn when the tokenizer has a chat template) or a chat."""


@dataclass(frozen=True)
class ShiftProbe:
    """A fixed preference whose log-prob margin under the policy is logged every step."""

    prompt: Prompt
    chosen: str
    rejected: str


class ValueHead(nn.Module):
    """``V(s)`` from the LM's last hidden state: one linear layer, started near zero."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(hidden_size + 1) * 0.1)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden).squeeze(-1)


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


def render(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, system: str | None) -> str:
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


def forward(
    policy: PreTrainedModel,
    head: ValueHead | None,
    ids: torch.Tensor,
    mask: torch.Tensor,
    start: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log-probs of ``ids[:, start:]``, the full next-token log-distributions there
    (``[batch, tokens, vocab]``), and the values of the states before.

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
    values = None
    if head is not None:
        values = head(out.hidden_states[-1][:, start - 1 : -1]).float()
    return logprobs, logp_all, values


@torch.inference_mode()
def response_logprob(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    response: str,
    system: str | None = None,
) -> float:
    """Summed log-prob of ``response`` as the model's reply to ``prompt`` (one unpadded pass)."""
    prompt_ids = tokenizer(render(tokenizer, prompt, system), add_special_tokens=False).input_ids
    reply_ids = tokenizer(response, add_special_tokens=False).input_ids
    if not reply_ids:
        return 0.0
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + reply_ids], device=device)
    logprobs, _, _ = forward(model, None, ids, torch.ones_like(ids), len(prompt_ids), 1.0)
    return float(logprobs.sum())


@dataclass
class Rollout:
    ids: torch.Tensor  # [B, P + R] left-padded prompt, right-padded response
    mask: torch.Tensor  # attention mask over ids
    start: int  # P: where responses begin
    response_mask: torch.Tensor  # [B, R] float, 1 up to and including each stop token
    texts: list[str]
    stopped: list[bool]  # ended with a stop token (not cut at max_new_tokens)


def sample(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rendered: list[str],
    *,
    temperature: float,
    max_new_tokens: int,
    stops: list[int],
) -> Rollout:
    """One response per rendered prompt, by pure sampling at ``temperature``."""
    prompt_rows = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    prompt_ids, prompt_mask = (
        t.to(policy.device) for t in _left_pad(prompt_rows, tokenizer.pad_token_id)
    )
    generation = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,  # pure sampling: the ratio and KL below assume the full distribution
        top_p=1.0,
        max_new_tokens=max_new_tokens,
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
    return Rollout(out, mask, start, response_mask, texts, is_stop.any(-1).tolist())


def probe_margins(
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
            prompt = render(tokenizer, probe.prompt, system)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            total = []
            for response in (probe.chosen, probe.rejected):
                target = continuation_ids(tokenizer, prompt, prompt_ids, response)
                ids = torch.tensor([prompt_ids + target], device=policy.device)
                logprobs, _, _ = forward(
                    policy, None, ids, torch.ones_like(ids), len(prompt_ids), 1.0
                )
                total.append(logprobs.sum().item())
            margins.append(total[0] - total[1])
    return margins


@dataclass(frozen=True)
class RolloutScores:
    """Per response token ``[B, R]``, 0 on padding where it is summed over."""

    logprobs: torch.Tensor
    """``log pi`` of each sampled token under the policy that sampled it."""
    values: torch.Tensor
    ref_logprobs: torch.Tensor
    """``log pi_ref`` of the same tokens under the reference (the start policy)."""
    kl: torch.Tensor
    """``KL(pi || pi_ref)`` of the full next-token distributions, masked to the response."""


def score_rollout(
    policy: PreTrainedModel,
    head: ValueHead,
    reference: PreTrainedModel | None,
    roll: Rollout,
    *,
    temperature: float,
    mini_batch_size: int,
) -> RolloutScores:
    """Score a rollout under the policy and the reference, one minibatch at a time.

    ``reference=None`` means the policy's LoRA adapters switched off (the start weights). Only
    a minibatch's full distributions are held at once: ``[mini_batch, tokens, vocab]`` twice.
    """
    parts: dict[str, list[torch.Tensor]] = {"lp": [], "v": [], "ref": [], "kl": []}
    with torch.no_grad():
        for idx in torch.arange(len(roll.texts)).split(mini_batch_size):
            args = (roll.ids[idx], roll.mask[idx], roll.start, temperature)
            lp, logp_all, v = forward(policy, head, *args)
            with policy.disable_adapter() if reference is None else nullcontext():
                ref_lp, ref_all, _ = forward(reference or policy, None, *args)
            parts["lp"].append(lp)
            parts["v"].append(v if v is not None else torch.zeros_like(lp))
            parts["ref"].append(ref_lp)
            parts["kl"].append(token_kl(logp_all, ref_all) * roll.response_mask[idx])
    return RolloutScores(*(torch.cat(parts[k]) for k in ("lp", "v", "ref", "kl")))
