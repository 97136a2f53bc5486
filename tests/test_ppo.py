"""PPO: the maths against hand-computed values, a toy with a known optimum, and the real model.

The toy is a tiny random Llama over a 16-word vocabulary. (With SmolLM2's 49k-token vocabulary a
random model emits any one token with p ~ 2e-5, so a reward for it would never be sampled.) The
reward pays +1 per emitted "k". With a per-token KL penalty beta to the start model, PPO's fixed
point is known in closed form for one-token responses: pi*(k) = p0 e^(1/beta) / (1 - p0 +
p0 e^(1/beta)), p0 the start model's probability of "k".
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from charter.errors import InputError
from charter.report.render import write_report
from charter.trainers.common import Lora
from charter.trainers.ppo import PPOConfig, ShiftProbe, train_ppo
from charter.trainers.ppo_guard import divergence_warning, rank_correlation
from charter.trainers.ppo_maths import (
    AdaptiveKLController,
    gae,
    masked_whiten,
    ppo_losses,
    token_kl,
    token_rewards,
)
from tests.engine_fixtures import smollm2_dir
from tests.test_configs import check_signature, compose_all
from tests.tiny_llama import tiny_llama  # noqa: F401  (the fixture)

WORDS = ["<pad>", "<eos>", "<unk>"] + [chr(ord("a") + i) for i in range(13)]
TARGET = WORDS.index("k")
PROMPTS = ["a b", "c d e", "f", "g h"]


def toy_model() -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        vocab_size=len(WORDS),
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=1,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config), tokenizer


def p_target(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> list[float]:
    """Each prompt's next-token probability of "k"."""
    with torch.no_grad():
        return [
            torch.softmax(model(torch.tensor([ids])).logits[0, -1], -1)[TARGET].item()
            for ids in tokenizer(PROMPTS, add_special_tokens=False)["input_ids"]
        ]


def count_k(prompts: list, responses: list[str]) -> list[float]:
    return [float(r.split().count("k")) for r in responses]


def curve_rows(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "curves.jsonl").read_text().splitlines()]


# --- the toy, where the optimum is known ------------------------------------------------------


def test_toy_policy_reaches_the_kl_regularised_optimum(tmp_path):
    model, tokenizer = toy_model()
    start = p_target(model, tokenizer)
    beta = 0.5
    config = PPOConfig(
        steps=50,
        batch_size=32,
        mini_batch_size=16,
        max_new_tokens=1,
        learning_rate=1e-3,
        init_kl_coef=beta,
        adaptive_kl=False,
        vf_coef=0.5,
    )
    result = train_ppo(model, tokenizer, count_k, PROMPTS, config, tmp_path)
    grow = math.exp(1 / beta)
    optimum = [p * grow / (1 - p + p * grow) for p in start]
    end = p_target(model, tokenizer)
    assert max(start) < 0.08 and min(optimum) > 0.3  # far from the start, far from 1
    for p_end, p_opt in zip(end, optimum, strict=True):
        assert abs(p_end - p_opt) < 0.08, (end, optimum)
    assert result.stopped == "steps" and len(result.steps) == 50


def test_toy_weak_penalty_drives_the_target_token_towards_one(tmp_path):
    model, tokenizer = toy_model()
    reference = copy.deepcopy(model)
    config = PPOConfig(
        steps=30,
        batch_size=16,
        mini_batch_size=8,
        max_new_tokens=3,
        learning_rate=3e-3,
        init_kl_coef=0.05,
        target_kl=6.0,
        kl_horizon=1000,
        vf_coef=0.5,
    )
    result = train_ppo(model, tokenizer, count_k, PROMPTS, config, tmp_path)
    assert min(p_target(model, tokenizer)) > 0.9
    assert result.steps[0].reward_mean < 0.5 and result.steps[-1].reward_mean > 2.7  # of 3
    # Bounded: never further from the reference than always saying "k" (3 × log 1/p_ref(k)).
    ceiling = 3 * max(-math.log(p) for p in p_target(reference, tokenizer))
    assert all(0 <= s.kl < ceiling + 0.5 for s in result.steps[1:])
    assert result.steps[-1].entropy < result.steps[0].entropy / 4
    assert all(s.kl_coef != config.init_kl_coef for s in result.steps[1:])  # it adapted
    # curves.jsonl: the full-distribution KL starts at 0, never dips below it, and tracks the
    # noisier sampled estimate of the same KL once the policy has moved
    curves = curve_rows(tmp_path)
    assert [c["step"] for c in curves] == list(range(30))
    assert curves[0]["kl_to_start"] == 0.0 and min(c["kl_to_start"] for c in curves) >= 0
    assert curves[-1]["kl_to_start"] > 2.0
    full = sum(c["kl_to_start"] for c in curves[-10:])
    sampled = sum(c["kl_sampled"] for c in curves[-10:])
    assert 0.5 < full / sampled < 2.0, (full, sampled)


def test_kl_budget_stops_training_before_the_policy_drifts_further(tmp_path):
    model, tokenizer = toy_model()
    config = PPOConfig(
        steps=30,
        batch_size=16,
        mini_batch_size=8,
        max_new_tokens=3,
        learning_rate=3e-3,
        init_kl_coef=0.05,
        kl_budget=2.0,
    )
    result = train_ppo(model, tokenizer, count_k, PROMPTS, config, tmp_path)
    assert result.stopped == "kl_budget" and len(result.steps) < 30
    assert all(s.kl <= 2.0 for s in result.steps)


def test_curves_are_written_every_step_so_a_killed_run_keeps_them(tmp_path):
    model, tokenizer = toy_model()
    calls = []

    def dies_at_the_third_step(prompts: list, responses: list[str]) -> list[float]:
        calls.append(len(responses))
        if len(calls) == 3:
            raise RuntimeError("killed")
        return count_k(prompts, responses)

    config = PPOConfig(steps=5, batch_size=8, mini_batch_size=8, max_new_tokens=2)
    with pytest.raises(RuntimeError, match="killed"):
        train_ppo(model, tokenizer, dies_at_the_third_step, PROMPTS, config, tmp_path)
    curves = curve_rows(tmp_path)
    assert [c["step"] for c in curves] == [0, 1]
    # no fresh judge: its key is kept, empty, and the guard cannot fire
    assert all(c["fresh_reward_mean"] is None and c["guard_fired"] is False for c in curves)
    assert not (tmp_path / "curves.png").exists()  # drawn when the run ends


def test_missing_eos_penalty_teaches_the_policy_to_stop(tmp_path):
    model, tokenizer = toy_model()
    config = PPOConfig(
        steps=25,
        batch_size=16,
        mini_batch_size=8,
        max_new_tokens=1,  # every response but "<eos>" is cut
        learning_rate=1e-3,
        init_kl_coef=0.01,
        missing_eos_penalty=1.0,
        vf_coef=0.5,
    )
    nothing = lambda prompts, responses: [0.0] * len(responses)  # noqa: E731
    result = train_ppo(model, tokenizer, nothing, PROMPTS, config, tmp_path)
    ids = tokenizer(PROMPTS, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        p_eos = [torch.softmax(model(torch.tensor([i])).logits[0, -1], -1)[1].item() for i in ids]
    assert min(p_eos) > 0.8, p_eos
    assert all(s.reward_mean == 0.0 for s in result.steps)  # the log keeps the raw reward


# --- the maths against hand-computed values ---------------------------------------------------


def test_gae_matches_hand_computed_values_and_ignores_padding():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 0.2, 0.1], [1.0, 1.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 2 ends after 2 tokens
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 1: deltas 0.9, -0.11, -0.32, then A_t = delta_t + 0.72 A_{t+1}
    torch.testing.assert_close(advantages[0], torch.tensor([0.06736, 0.538, 0.9]))
    torch.testing.assert_close(returns[0], torch.tensor([0.56736, 0.738, 1.0]))
    # row 2: the last real token bootstraps from 0, the padded reward 5 and value 7 are ignored
    torch.testing.assert_close(advantages[1], torch.tensor([0.62, 1.0, 0.0]))
    torch.testing.assert_close(returns[1], torch.tensor([1.62, 2.0, 0.0]))


def test_clipped_losses_match_hand_computed_values():
    ratios = torch.tensor([[1.5, 0.5, 1.1, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the 4th token is padding: ignored
    losses = ppo_losses(
        logprobs=ratios.log(),
        old_logprobs=torch.zeros(1, 4),
        advantages=torch.tensor([[1.0, -1.0, 2.0, 100.0]]),
        values=torch.tensor([[0.5, -0.1, 0.3, 50.0]]),
        old_values=torch.zeros(1, 4),
        returns=torch.tensor([[1.0, 0.0, -1.0, -50.0]]),
        mask=mask,
        clip_range=0.2,
        clip_range_value=0.2,
    )
    # surrogate per token: max(-A r, -A clip(r)) = -1.2 (clipped), 0.8 (clipped), -2.2
    assert losses["policy_loss"].item() == pytest.approx(-2.6 / 3, abs=1e-6)
    assert losses["clip_frac"].item() == pytest.approx(2 / 3)
    # value: max of the squared errors of v and of the clipped v: 0.64, 0.01, 1.69
    assert losses["value_loss"].item() == pytest.approx(0.5 * 2.34 / 3, abs=1e-6)
    expected_kl = sum(r - 1 - math.log(r) for r in (1.5, 0.5, 1.1)) / 3
    assert losses["approx_kl"].item() == pytest.approx(expected_kl, abs=1e-6)


def test_token_kl_is_zero_for_equal_distributions_and_matches_a_hand_value():
    p = torch.tensor([[0.5, 0.25, 0.25]]).log()
    q = torch.tensor([[0.25, 0.5, 0.25]]).log()
    assert token_kl(p, p).item() == 0.0
    expected = 0.5 * math.log(2) + 0.25 * math.log(0.5)  # sum p log(p / q)
    assert token_kl(p, q).item() == pytest.approx(expected)


def test_token_rewards_pay_the_score_on_the_last_real_token():
    kl_tokens = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards = token_rewards(torch.tensor([5.0, 7.0]), kl_tokens, mask, kl_coef=0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.5, -1.0, 3.5], [-0.5, 6.5, 0.0]]))


def test_whitening_uses_only_real_tokens():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    out = masked_whiten(x, torch.tensor([[1.0, 1.0, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-4, rtol=0)


def test_adaptive_kl_moves_by_at_most_the_clipped_error():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(kl=60.0, samples=10)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl.update(kl=0.0, samples=10)  # error clipped to -0.2
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.98)
    fixed = AdaptiveKLController(0.1, target=None, horizon=100)
    fixed.update(kl=60.0, samples=10)
    assert fixed.value == 0.1


def test_rank_correlation_and_the_divergence_guard():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 1, 2], [5, 5, 9]) == pytest.approx(1.0)  # ties share a rank
    assert rank_correlation([1, 1, 1], [1, 2, 3]) == 0.0
    guard = {"window": 3, "min_rank_corr": 0.0}
    assert divergence_warning(4, 0.5, [0.1, 0.2, 0.3], [0.5, 0.6, 0.7], **guard) is None
    warning = divergence_warning(4, 0.5, [0.1, 0.2, 0.3], [0.7, 0.6, 0.5], **guard)
    assert warning and "fresh judge fell" in warning
    assert "rank correlation -0.40" in (divergence_warning(1, -0.4, [0.1], [0.1], **guard) or "")


# --- config and plumbing on the shared tiny Llama (SmolLM2's tokenizer and chat template) -----


def test_config_composes_and_builds_the_probes():
    with initialize_config_module("charter.conf", version_base="1.3"):
        cfg = compose("trainer/ppo")
    check_signature("trainer", cfg.trainer)
    config = instantiate(cfg.trainer, _convert_="all")
    assert isinstance(config, PPOConfig) and len(config.probes) == 2
    assert all(isinstance(p, ShiftProbe) for p in config.probes)


@pytest.mark.parametrize("experiment", ["ppo_no_leash_cpu", "ppo_kl_leash_cpu"])
def test_over_optimisation_experiments_differ_only_in_the_kl_leash(experiment):
    cfg = compose_all("train", ["trainer=ppo", f"experiment={experiment}", "reward_model=rm"])
    check_signature("trainer", cfg.trainer)
    config = instantiate(cfg.trainer, _convert_="all")
    assert cfg.judge._target_.endswith("PointwiseScoreJudge")  # the fresh judge
    assert (config.steps, config.batch_size, config.kl_budget) == (16, 4, None)
    assert config.init_kl_coef == (0.0 if experiment == "ppo_no_leash_cpu" else 0.3)
    assert not config.adaptive_kl


def test_bad_settings_name_the_field():
    with pytest.raises(InputError, match=r"trainer\.mini_batch_size"):
        PPOConfig(batch_size=6, mini_batch_size=4)
    with pytest.raises(InputError, match=r"trainer\.probes\[0\].*'rejected'"):
        PPOConfig(probes=[{"prompt": "hi", "chosen": "hello"}])
    with pytest.raises(InputError, match=r"trainer\.lam"):
        PPOConfig(lam=1.5)


def test_chat_run_logs_probe_shifts_warns_on_divergence_and_saves(tiny_llama, tmp_path):  # noqa: F811
    probes = [
        {"prompt": "Say hi.", "chosen": "Hi there!", "rejected": "No."},
        {
            "prompt": [{"role": "user", "content": "Name a colour."}],
            "chosen": "Blue",
            "rejected": "x",
        },
    ]
    config = PPOConfig(
        steps=3,
        batch_size=4,
        mini_batch_size=2,
        ppo_epochs=2,
        max_new_tokens=6,
        learning_rate=1e-3,
        probes=probes,
        guard_window=2,
    )
    seen: list[list] = []

    def longer(prompts: list, responses: list[str]) -> list[float]:
        seen.append(prompts)
        return [len(r) / 10 for r in responses]

    def opposite(prompts: list, responses: list[str]) -> list[float]:  # a judge that disagrees
        return [-len(r) / 10 for r in responses]

    prompts = ["Tell me a joke.", [{"role": "user", "content": "What is 2 + 2?"}], "Hello"]
    result = train_ppo(
        str(tiny_llama), None, longer, prompts, config, tmp_path, fresh_reward_fn=opposite
    )
    assert len(result.steps) == 3 and all(len(batch) == 4 for batch in seen)
    assert all(p in prompts for batch in seen for p in batch)  # prompts reach the reward as given
    margins = [result.initial_probe_margins] + [s.probe_margins for s in result.steps]
    for before, after, step in zip(margins, margins[1:], result.steps, strict=False):
        assert step.probe_shifts == pytest.approx(
            [a - b for a, b in zip(after, before, strict=True)]
        )
    assert any(s != 0 for s in result.steps[0].probe_shifts)  # the update moved the policy
    for s in result.steps:
        assert all(math.isfinite(v) for v in (s.policy_loss, s.value_loss, s.entropy, s.kl))
        assert s.rank_corr is not None and s.rank_corr <= 0
    assert result.warnings and "diverge" in result.warnings[-1]
    rows = [json.loads(line) for line in (tmp_path / "ppo_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    curves = curve_rows(tmp_path)
    assert [c["step"] for c in curves] == [0, 1, 2]
    assert set(curves[0]) == {
        "step", "reward_mean", "fresh_reward_mean", "kl_to_start", "kl_sampled", "kl_coef",
        "guard_fired",
    }  # fmt: skip
    assert curves[0]["kl_to_start"] == 0.0  # step 0 samples the start policy
    assert all(c["kl_to_start"] >= 0 for c in curves) and curves[-1]["kl_to_start"] > 0
    for c, s in zip(curves, result.steps, strict=True):
        assert (c["reward_mean"], c["fresh_reward_mean"]) == (s.reward_mean, s.fresh_reward_mean)
        assert c["guard_fired"] == any(w.startswith(f"step {s.step}:") for w in result.warnings)
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    page = write_report(tmp_path).read_text()  # the train page draws the same curves
    assert 'id="plot-curves"' in page and "guard's first warning (step 0)" in page
    reloaded = AutoModelForCausalLM.from_pretrained(str(result.model_dir))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    assert not torch.equal(reloaded.lm_head.weight, base.lm_head.weight)
    assert (Path(result.model_dir) / "value_head.pt").is_file()


def test_lora_trains_adapters_against_the_adapter_free_reference(tiny_llama, tmp_path):  # noqa: F811
    config = PPOConfig(
        steps=2,
        batch_size=2,
        mini_batch_size=2,
        ppo_epochs=2,
        max_new_tokens=4,
        learning_rate=1e-2,
        lora=Lora(enabled=True, r=4, alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    lengths = lambda prompts, responses: [float(len(r)) for r in responses]  # noqa: E731
    result = train_ppo(str(tiny_llama), None, lengths, ["Hi", "Hello"], config, tmp_path)
    assert result.steps[0].kl == pytest.approx(0.0, abs=1e-5)  # untrained adapters: no drift
    assert curve_rows(tmp_path)[0]["kl_to_start"] == pytest.approx(0.0, abs=1e-5)
    assert result.steps[1].kl != pytest.approx(0.0, abs=1e-5)
    reloaded = AutoModelForCausalLM.from_pretrained(str(result.model_dir))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    layer, base_layer = reloaded.model.layers[0].self_attn, base.model.layers[0].self_attn
    assert not torch.equal(layer.q_proj.weight, base_layer.q_proj.weight)  # merged adapters
    assert torch.equal(layer.k_proj.weight, base_layer.k_proj.weight)  # untouched
    assert not any("lora" in name for name, _ in reloaded.named_parameters())


def test_no_prompts_is_a_user_error(tiny_llama, tmp_path):  # noqa: F811
    with pytest.raises(InputError, match="no prompts"):
        train_ppo(str(tiny_llama), None, count_k, [], PPOConfig(), tmp_path)


# --- the real model ---------------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_ppo_steps_are_finite_and_the_saved_policy_reloads(tmp_path):
    config = PPOConfig(
        steps=2,
        batch_size=2,
        mini_batch_size=2,
        ppo_epochs=1,
        max_new_tokens=8,
        learning_rate=1e-5,
        probes=[{"prompt": "Say hello.", "chosen": "Hello!", "rejected": "Go away."}],
    )

    def says_hello(prompts: list, responses: list[str]) -> list[float]:
        return [1.0 if "hello" in r.lower() else 0.0 for r in responses]

    prompts = ["Greet me.", "Say something friendly."]
    result = train_ppo("smollm2-135m-instruct", None, says_hello, prompts, config, tmp_path)
    assert len(result.steps) == 2
    for s in result.steps:
        assert all(math.isfinite(v) for v in (s.policy_loss, s.value_loss, s.entropy, s.kl))
        assert 1 <= s.response_tokens <= 8
    assert result.steps[0].probe_shifts[0] != 0
    curves = curve_rows(tmp_path)
    assert [c["step"] for c in curves] == [0, 1] and curves[0]["kl_to_start"] == 0.0
    assert curves[1]["kl_to_start"] > 0 and (tmp_path / "curves.png").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(str(result.model_dir))
    base = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert not torch.allclose(reloaded(ids).logits, base(ids).logits)
