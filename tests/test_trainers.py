"""Every trainer takes real optimiser steps on a tiny random Llama; its model reloads.

The tiny model's outputs are noise, so these tests check what a user relies on: the loss moves,
the saved folder loads and holds changed weights, the card names the data's provenance, the
judge's confidence filters and smooths DPO, and bad data fails with the file named.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from charter.errors import InputError
from charter.records import PromptRecord
from charter.trainers.common import Lora, Optimisation
from charter.trainers.data import Provenance, load_preference_pairs, load_sft_data
from charter.trainers.dpo import DPOSettings, filter_by_margin, smoothing_for, train_dpo
from charter.trainers.loop import wilson_interval
from charter.trainers.reward import RewardModelScorer, RewardSettings, train_reward
from charter.trainers.rl import RLSettings, train_rl
from charter.trainers.sft import SFTSettings, train_sft
from tests import tiny_llama as shared

tiny_llama = shared.tiny_llama  # the session fixture, shared with the PPO tests

CPU = {"device": "cpu", "batch_size": 2, "max_length": 128}


def pair_rows(n: int = 8) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"Question {i}: how do I stay safe online?"}],
            "chosen": [{"role": "assistant", "content": "Use strong, unique passwords."}],
            "rejected": [{"role": "assistant", "content": "Share your password with anyone."}],
            "prompt_id": f"p{i}",
            "p_chosen": 0.55 + 0.05 * (i % 8),
            "margin": round(0.1 + 0.1 * (i % 8), 2),
            "judge_model": "judge-x",
            "generator_model": "gen-y",
            "constitution_sha256": "c0ffee",
        }
        for i in range(n)
    ]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def changed(before: Path, after: Path) -> bool:
    a, b = weights(before), weights(after)
    shared = [k for k in a if k in b and a[k].shape == b[k].shape]
    return any(not torch.equal(a[k], b[k]) for k in shared)


PANDALM = Path(__file__).resolve().parents[2] / "shared/data/human_prefs/pandalm_dev.jsonl"


@pytest.mark.skipif(not PANDALM.exists(), reason=f"needs the human-labelled pairs at {PANDALM}")
def test_reward_model_learns_pairs_and_reloads(tiny_llama: Path, tmp_path: Path) -> None:
    pairs = Dataset.from_list(pair_rows(12))
    settings = RewardSettings(
        base_model=str(tiny_llama),
        eval_fraction=0.25,
        human_pairs=str(PANDALM),
        human_limit=6,
        optim=Optimisation(learning_rate=1e-3, max_steps=6, **CPU),
    )
    result = train_reward(settings, pairs, Provenance.of(pairs, Path("run")), tmp_path)
    assert len(result.losses) == 6 and result.losses[-1] < result.losses[0]
    assert result.metrics["heldout_pairs"] == 3
    assert result.metrics["heldout_accuracy"] == 1.0  # one fixed preference: learnable
    human = result.metrics["human"]
    assert human["pairs"] == 6
    # the longer-response baseline on PandaLM's first 6 rows, counted by hand from the file
    lines = PANDALM.read_text().splitlines()
    rows = [json.loads(x) for x in lines[:6]]
    longer = [len(r["chosen"]) - len(r["rejected"]) for r in rows]
    expected = sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in longer) / 6
    assert human["longer_response_baseline"] == pytest.approx(expected, abs=1e-4)
    assert 0.0 <= human["accuracy"] <= 1.0
    card = (result.model_dir / "README.md").read_text()
    assert "c0ffee" in card and "judge-x" in card and "gen-y" in card
    scorer = RewardModelScorer(result.model_dir)
    prompt = pair_rows(1)[0]["prompt"]
    good, bad = scorer.score([prompt, prompt], ["Use strong, unique passwords.", "Share it."])
    assert good > bad
    # the same object is a TRL/PPO reward function: chats or strings in, one float per sample
    as_trl = scorer(prompts=[prompt], completions=[[{"role": "assistant", "content": "Share it."}]])
    as_ppo = scorer(["Question 0: how do I stay safe online?"], ["Share it."])
    assert as_trl == pytest.approx([bad]) and len(as_ppo) == 1


def test_dpo_filters_by_margin_smooths_and_trains(tiny_llama: Path, tmp_path: Path) -> None:
    pairs = Dataset.from_list(pair_rows(8))
    kept, rejects = filter_by_margin(pairs, 0.3)
    assert len(kept) == 6 and len(rejects) == 2 and "below min_margin" in rejects[0].reason
    # mean p_chosen of the kept rows is 0.775 -> flip rate 0.225 (capped at 0.45)
    assert smoothing_for(kept, "auto") == pytest.approx(0.225)
    assert smoothing_for(kept, 0.0) == 0.0
    with pytest.raises(InputError):
        smoothing_for(kept, 0.6)
    settings = DPOSettings(
        policy=str(tiny_llama),
        min_margin=0.3,
        optim=Optimisation(learning_rate=1e-3, max_steps=3, **CPU),
    )
    result, dropped = train_dpo(settings, pairs, Provenance.of(pairs, Path("run")), tmp_path)
    assert len(dropped) == 2
    assert result.metrics["loss_type"] == "exo_pair"
    assert result.losses[-1] < result.losses[0]
    assert changed(tiny_llama, result.model_dir)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(result.model_dir))


def test_dpo_with_lora_saves_merged_model(tiny_llama: Path, tmp_path: Path) -> None:
    pairs = Dataset.from_list(pair_rows(4))
    settings = DPOSettings(
        policy=str(tiny_llama),
        label_smoothing=0.0,
        optim=Optimisation(learning_rate=1e-2, max_steps=2, **CPU),
        lora=Lora(enabled=True, r=4, alpha=8),
    )
    result, _ = train_dpo(settings, pairs, Provenance.of(pairs, Path("run")), tmp_path)
    assert result.metrics["loss_type"] == "sigmoid"
    assert not (result.model_dir / "adapter_config.json").exists()  # merged: a plain model
    assert changed(tiny_llama, result.model_dir)


def test_sft_trains_on_prompt_completion_jsonl(tiny_llama: Path, tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    rows = [
        {"prompt": [{"role": "user", "content": f"q{i}"}],
         "completion": [{"role": "assistant", "content": "A careful, kind answer."}],
         "constitution_sha256": "c0ffee", "judge_model": "judge-x", "generator_model": "gen-y"}
        for i in range(6)
    ]  # fmt: skip
    lines = [json.dumps(r) for r in rows] + ['{"prompt": "only a prompt"}', "not json"]
    path.write_text("\n".join(lines) + "\n")
    examples, rejects, prov = load_sft_data(path)
    assert len(examples) == 6 and len(rejects) == 2
    assert {r.source for r in rejects} == {f"{path}:7", f"{path}:8"}
    assert examples.column_names == ["prompt", "completion"]  # what SFTTrainer reads
    # the provenance columns were read before they were dropped: the model card names them
    assert (prov.constitution_sha256, prov.judge_model) == (["c0ffee"], ["judge-x"])
    settings = SFTSettings(
        policy=str(tiny_llama), optim=Optimisation(learning_rate=1e-3, max_steps=4, **CPU)
    )
    result = train_sft(settings, examples, prov, tmp_path / "out")
    assert result.losses[-1] < result.losses[0]
    assert changed(tiny_llama, result.model_dir)


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_group_rl_moves_the_policy(tiny_llama: Path, tmp_path: Path, algorithm: str) -> None:
    def shorter_is_better(prompts, completions, **_):
        return [-float(len(c[-1]["content"])) for c in completions]

    prompts = [PromptRecord(f"p{i}", [{"role": "user", "content": f"q{i}"}], "t") for i in range(4)]
    settings = RLSettings(
        algorithm=algorithm,
        policy=str(tiny_llama),
        num_generations=2,
        max_completion_length=6,
        optim=Optimisation(learning_rate=1e-3, max_steps=2, **CPU),
    )
    prov = Provenance("prompts", 4, [], [], [])
    result = train_rl(settings, prompts, shorter_is_better, prov, tmp_path)
    # GRPO/RLOO's first loss is ~0 by construction (on-policy ratio 1): check the weights moved
    assert len(result.losses) == 2 and len(result.metrics["mean_reward_per_step"]) == 2
    assert changed(tiny_llama, result.model_dir)


def test_pairs_load_from_run_dir_jsonl_with_rejects(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = pair_rows(3)
    lines = [json.dumps(r) for r in rows] + [json.dumps({**rows[0], "chosen": ""})]
    (run / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    data, rejects, prov = load_preference_pairs(run)
    assert len(data) == 3 and prov.judge_model == ["judge-x"]
    assert rejects[0].source.endswith("pairs.jsonl:4") and rejects[0].field == "chosen"
    Dataset.from_list(rows).save_to_disk(str(run / "dataset"))
    data, rejects, _ = load_preference_pairs(run)  # the published folder wins
    assert len(data) == 3 and rejects == []


def test_bad_training_data_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_preference_pairs(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.parquet"
    Dataset.from_list([{"question": "x", "answer": "y"}]).to_parquet(str(bad))
    with pytest.raises(InputError, match="prompt\\+chosen\\+rejected") as err:
        load_preference_pairs(bad)
    assert str(bad) in str(err.value)


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(10, 20)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.4, abs=0.03)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


# --- TRL's per-step log, kept beside the model ------------------------------------------------


def step_log(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "log_history.jsonl").read_text().splitlines()]


def test_dpo_through_charter_train_keeps_trls_step_log_and_the_page_plots_it(
    tiny_llama: Path, tmp_path: Path
) -> None:
    from charter.commands.train import train
    from charter.report import build_report
    from tests.test_configs import compose_all
    from tests.test_report import Page

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(8)))
    cfg = compose_all(
        "train",
        [
            "trainer=dpo",
            f"data={data}",
            f"trainer.policy={tiny_llama}",
            "trainer.optim.max_steps=3",
            "trainer.optim.device=cpu",
            "trainer.optim.learning_rate=1e-3",
            "trainer.optim.max_length=128",
        ],
    )
    out = tmp_path / "out"
    train(cfg, out)
    log = step_log(out)
    metrics = json.loads((out / "metrics.json").read_text())
    # one row per optimiser step (logging_steps=1), TRL's own keys, the loss metrics.json kept
    assert [row["step"] for row in log] == [1, 2, 3]
    assert [round(row["loss"], 5) for row in log] == metrics["losses"]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen"):
        assert all(isinstance(row[key], float) for row in log), key
    assert not any("train_runtime" in row for row in log)  # TRL's closing summary is no step

    page = Page(build_report(out).html)
    plots = {e.attrs["id"] for e in page.find("figure")}
    assert {"plot-log-loss", "plot-log-reward", "plot-log-logps"} <= plots
    caption = next(e.text for e in page.find("figcaption") if e.text.startswith("reward "))
    assert "rewards/chosen" in caption and "rewards/margins" in caption
    assert page.find(id="not-recorded") == []  # what TRL logs is recorded now
    assert "log_history.jsonl" in page.one(id="per-step-sources").text


@pytest.mark.parametrize("method", ["reward", "sft", "grpo"])
def test_every_trl_trainer_writes_one_log_row_per_step(
    tiny_llama: Path, tmp_path: Path, method: str
) -> None:
    optim = Optimisation(learning_rate=1e-3, max_steps=2, **CPU)
    if method == "reward":
        pairs = Dataset.from_list(pair_rows(4))
        settings = RewardSettings(base_model=str(tiny_llama), eval_fraction=0.0, optim=optim)
        result = train_reward(settings, pairs, Provenance.of(pairs, Path("run")), tmp_path)
    elif method == "sft":
        rows = [{"prompt": [{"role": "user", "content": f"q{i}"}],
                 "completion": [{"role": "assistant", "content": "A kind answer."}]}
                for i in range(4)]  # fmt: skip
        examples = Dataset.from_list(rows)
        settings = SFTSettings(policy=str(tiny_llama), optim=optim)
        result = train_sft(settings, examples, Provenance("sft", 4, [], [], []), tmp_path)
    else:
        prompts = [
            PromptRecord(f"p{i}", [{"role": "user", "content": f"q{i}"}], "t") for i in range(4)
        ]
        settings = RLSettings(
            policy=str(tiny_llama), num_generations=2, max_completion_length=4, optim=optim
        )

        def shorter(prompts, completions, **_):
            return [-float(len(c[-1]["content"])) for c in completions]

        result = train_rl(settings, prompts, shorter, Provenance("p", 4, [], [], []), tmp_path)
    log = step_log(tmp_path)
    assert [row["step"] for row in log] == [1, 2]
    assert [row["loss"] for row in log] == pytest.approx(result.losses)
    assert all(isinstance(v, (int, float)) or v is None for row in log for v in row.values())
    if method == "grpo":  # the policy-shift figures the page plots
        assert [row["reward"] for row in log] == result.metrics["mean_reward_per_step"]
        assert all("kl" in row for row in log)


def test_online_dpo_gathers_every_rounds_steps_in_one_log(tiny_llama: Path, tmp_path: Path):
    from charter.commands.train import train
    from charter.report import build_report
    from tests.test_loop import compose
    from tests.test_report import Page

    cfg = compose(
        tiny_llama,
        "trainer=online_dpo",
        "trainer.rounds=2",
        "trainer.prompts_per_round=2",
        "trainer.dpo.optim.max_steps=2",
        "trainer.dpo.optim.device=cpu",
        "generator.sampling.max_new_tokens=6",
    )
    train(cfg, tmp_path)
    rounds = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    trained = [r["round"] for r in rounds if "skipped" not in r]
    log = step_log(tmp_path)
    assert [(row["round"], row["step"]) for row in log] == [(r, s) for r in trained for s in (1, 2)]
    for r in trained:  # each round's own log, unchanged, under its folder
        assert [{"round": r, **row} for row in step_log(tmp_path / f"round_{r}")] == [
            row for row in log if row["round"] == r
        ]
    page = Page(build_report(tmp_path).html)
    assert page.one(id="plot-log-reward") and page.find(id="not-recorded") == []


@pytest.mark.slow
def test_real_smollm2_dpo_steps_are_logged_and_plotted(tmp_path: Path) -> None:
    """Two DPO steps on the real SmolLM2-135M: TRL's log has a row per step with the implied
    rewards of chosen and rejected, and the train page plots them."""
    from charter.report import build_report
    from tests.engine_fixtures import smollm2_dir
    from tests.test_report import Page

    pairs = Dataset.from_list(pair_rows(4))
    settings = DPOSettings(
        policy=str(smollm2_dir()),
        label_smoothing=0.0,
        optim=Optimisation(learning_rate=1e-5, max_steps=2, **CPU),
    )
    result, _ = train_dpo(settings, pairs, Provenance.of(pairs, Path("run")), tmp_path)
    log = step_log(tmp_path)
    assert [row["step"] for row in log] == [1, 2]
    assert [row["loss"] for row in log] == pytest.approx(result.losses)
    # step 1 is taken at the reference itself: both implied rewards are 0, then they part
    assert log[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert log[1]["rewards/margins"] != pytest.approx(0.0, abs=1e-9)
    (tmp_path / "metrics.json").write_text(
        json.dumps({"trainer": "DPOSettings", "losses": result.losses})
    )
    page = Page(build_report(tmp_path).html)
    assert {"plot-log-loss", "plot-log-reward", "plot-log-logps"} <= {
        e.attrs["id"] for e in page.find("figure")
    }
