"""`charter train` end to end on the tiny Llama with a fake judge: the loop, online DPO, PPO.

These check the wiring a user runs (configs -> stages -> trainers -> files), in process for
speed; the CLI's error path runs as a user would, in a fresh process. Quality figures come from
the real model (`charter train experiment=loop_cpu`), never from these.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from charter.commands.train import train
from tests import tiny_llama as shared
from tests.test_configs import compose_all

tiny_llama = shared.tiny_llama  # the session fixture

FAKE_JUDGE = "engine@judge.engine=fake"
# one PPO step on two prompts: seconds on the tiny Llama
TINY_PPO = [
    "prompts.limit=2",
    "trainer.steps=1",
    "trainer.batch_size=2",
    "trainer.mini_batch_size=2",
    "trainer.ppo_epochs=1",
    "trainer.max_new_tokens=4",
]


def compose(tiny: Path, *overrides: str) -> OmegaConf:
    return compose_all("train", [f"generator.engine.model={tiny}", FAKE_JUDGE, *overrides])


def test_closed_loop_writes_figures(tiny_llama: Path, tmp_path: Path) -> None:
    cfg = compose(
        tiny_llama,
        "experiment=loop_cpu",
        "prompts.limit=6",
        "loop.heldout_prompts=2",
        "generator.sampling.max_new_tokens=8",
        "loop.reward.human_limit=4",
        "loop.reward.optim.max_steps=2",
        "loop.reward.optim.device=cpu",
        "loop.dpo.optim.max_steps=2",
        "loop.dpo.optim.device=cpu",
    )
    train(cfg, tmp_path)
    figures = json.loads((tmp_path / "loop_metrics.json").read_text())
    assert figures["pairs"] == 4  # 4 training prompts, one best-vs-worst pair each
    assert figures["dpo_vs_base"]["prompts"] == 2
    low, high = figures["dpo_vs_base"]["ci95"]
    assert low <= figures["dpo_vs_base"]["win_rate"] <= high
    assert figures["reward_model"]["human"]["pairs"] == 4
    assert (tmp_path / "data" / "dataset").is_dir()  # the loop's data is an ordinary run
    judged = (tmp_path / "head_to_head_judgments.jsonl").read_text().splitlines()
    assert all(json.loads(j)["candidate_a"].endswith("/trained") for j in judged)
    held_out = {json.loads(r)["prompt_id"] for r in judged}
    trained_on = (tmp_path / "data" / "train_prompts.jsonl").read_text()
    assert not any(f'"{p}"' in trained_on for p in held_out)


def _human_file(path: Path, n: int) -> Path:
    """n human pairs where the chosen answer is the helpful one."""
    rows = [
        {
            "id": f"h{i}",
            "messages": [{"role": "user", "content": f"How many legs has a spider? ({i})"}],
            "chosen": "Eight legs.",
            "rejected": "I cannot help with that.",
            "dimension": "helpfulness",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_loop_signal_reports_an_independent_evaluator(tiny_llama: Path, tmp_path: Path) -> None:
    human = _human_file(tmp_path / "human.jsonl", 6)
    cfg = compose(
        tiny_llama,
        "experiment=loop_signal",
        "prompts.limit=6",
        "loop.heldout_prompts=2",
        "generator.sampling.max_new_tokens=8",
        f"loop.reward.human_pairs={human}",
        "loop.reward.optim.max_steps=1",
        "loop.reward.optim.device=cpu",
        "loop.dpo.optim.max_steps=1",
        "loop.dpo.optim.device=cpu",
        f"loop.evaluator.human_pairs={human}",
        "loop.evaluator.heldout=2",
        "loop.evaluator.reward.optim.max_steps=1",
        "loop.evaluator.reward.optim.device=cpu",
    )
    assert cfg.constitution.path.endswith("helpful.yaml")
    train(cfg, tmp_path / "out")
    figures = json.loads((tmp_path / "out" / "loop_metrics.json").read_text())
    independent = figures["independent"]
    assert independent["agreement_with_people"]["n"] == 2  # the evaluator's held-out pairs
    assert "4 human pairs" in independent["evaluator"]  # trained on the other 4 only
    vs = independent["dpo_vs_base"]
    assert vs["n"] == figures["dpo_vs_base"]["prompts"] == 2
    assert vs["ci95"][0] <= vs["rate"] <= vs["ci95"][1] and 0.0 < vs["mean_p"] < 1.0
    assert figures["labels"]["comparisons"] == 4
    assert (tmp_path / "out" / "evaluator" / "head.json").is_file()  # method=head
    # the report page leads with both referees' verdicts, intervals included
    from charter.report.train_facts import gather_train

    rows = gather_train(tmp_path / "out").verdicts
    assert [r["referee"] for r in rows] == [
        "the labelling judge, both orders",
        independent["evaluator"],
    ]
    lo, hi = vs["ci95"]
    assert rows[1]["95% interval"] == f"[{lo:.3f}, {hi:.3f}]"
    assert rows[1]["referee's agreement with people"].startswith(
        f"{independent['agreement_with_people']['rate']} ["
    )
    from charter.report import write_report

    page = write_report(tmp_path / "out").read_text()
    assert 'id="verdicts"' in page and f"[{lo:.3f}, {hi:.3f}]" in page


def test_evaluator_heldout_larger_than_the_file_is_one_line(tmp_path: Path) -> None:
    from charter.errors import InputError
    from charter.trainers.independent_eval import split_human_pairs

    human = _human_file(tmp_path / "human.jsonl", 3)
    train_rows, held = split_human_pairs(human, 1, seed=0)
    assert len(train_rows) == 2 and len(held) == 1
    assert not {p.id for p in train_rows} & {p.id for p in held}
    with pytest.raises(InputError, match="loop.evaluator.heldout=3, but the file has 3"):
        split_human_pairs(human, 3, seed=0)


def test_verdict_counts_ties_half_and_averages_the_soft_probability() -> None:
    from charter.trainers.independent_eval import verdict

    v = verdict([1.0, 0.0, -1.0])
    assert v.rate == pytest.approx(0.5) and v.n == 3
    assert v.mean_p == pytest.approx((0.7310586 + 0.5 + 0.2689414) / 3, abs=1e-6)


@pytest.mark.slow
def test_a_fully_trained_evaluator_scores_people_and_policies(
    tiny_llama: Path, tmp_path: Path
) -> None:
    """method=full through TRL (on the tiny Llama: the head on real SmolLM2 features has its own
    test in test_label_curve.py)."""
    from charter.records import Candidate, CandidateSet
    from charter.trainers.common import Optimisation
    from charter.trainers.independent_eval import HumanRewardEvaluator, train_referee
    from charter.trainers.reward import RewardSettings

    human = _human_file(tmp_path / "human.jsonl", 6)
    settings = HumanRewardEvaluator(
        human_pairs=str(human),
        heldout=2,
        method="full",
        reward=RewardSettings(
            base_model=str(tiny_llama),
            optim=Optimisation(learning_rate=5e-5, max_steps=2, batch_size=2, device="cpu"),
        ),
    )
    referee = train_referee(settings, human, tmp_path)
    assert referee.train_pairs == 4 and referee.agreement.n == 2
    assert referee.longer_response_baseline == 0.0  # the chosen answers are the shorter ones
    chat = [{"role": "user", "content": "How many legs has a spider?"}]
    sets = [
        CandidateSet(
            "p1",
            chat,
            [
                Candidate("p1/trained", "Eight legs.", "stop", 3),
                Candidate("p1/base", "No.", "stop", 2),
            ],
            "m",
            {},
        )
    ]
    v = referee.judge(sets)
    assert v.n == 1 and v.rate in (0.0, 0.5, 1.0) and 0.0 < v.mean_p < 1.0


def test_online_dpo_rounds_sample_from_the_updated_policy(tiny_llama: Path, tmp_path: Path):
    cfg = compose(
        tiny_llama,
        "trainer=online_dpo",
        "trainer.rounds=2",
        "trainer.prompts_per_round=3",
        "trainer.dpo.optim.max_steps=1",
        "trainer.dpo.optim.device=cpu",
        "trainer.dpo.optim.learning_rate=1e-3",
        "generator.sampling.max_new_tokens=8",
    )
    train(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == [0, 1]
    round1 = [json.loads(r) for r in (tmp_path / "round_1" / "candidates.jsonl").open()]
    # round 1 sampled from round 0's model, and walked on to the next prompts
    assert round1[0]["generator_model"] == str(tmp_path / "round_0" / "model")
    assert (
        round1[0]["prompt_id"]
        != json.loads((tmp_path / "round_0" / "candidates.jsonl").open().readline())["prompt_id"]
    )
    assert metrics["model_dir"] == str(tmp_path / "round_1" / "model")
    assert (tmp_path / "round_1" / "model" / "README.md").exists()


def test_online_dpo_guard_logs_kl_and_fresh_agreement_and_stops_at_the_budget(
    tiny_llama: Path, tmp_path: Path
):
    cfg = compose(
        tiny_llama,
        "trainer=online_dpo",
        "trainer.rounds=3",
        "trainer.prompts_per_round=3",
        "trainer.dpo.optim.max_steps=2",
        "trainer.dpo.optim.device=cpu",
        "trainer.dpo.optim.learning_rate=1e-2",
        "trainer.kl_budget=0.0",
        "trainer.guard_min_agreement=1.01",  # no fresh judge agrees that often: always warns
        "generator.sampling.max_new_tokens=8",
    )
    train(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    first, second = metrics["rounds"]
    assert first["kl_to_start"] == 0.0  # round 0 samples from the starting model itself
    assert second["kl_to_start"] > 0.0 and second["skipped"] == "kl_budget"
    assert metrics["stopped"] == "kl_budget"
    assert metrics["model_dir"] == str(tmp_path / "round_0" / "model")  # the last trained one
    assert 0.0 <= first["fresh_agreement"] <= 1.0
    assert metrics["warnings"] and "fresh judge agrees" in metrics["warnings"][0]


def test_ppo_trains_on_the_pointwise_judge(tiny_llama: Path, tmp_path: Path) -> None:
    cfg = compose(
        tiny_llama,
        "trainer=ppo",
        "judge=pointwise",
        FAKE_JUDGE,
        *TINY_PPO,
    )
    train(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 1 and len(metrics["reward_mean_per_step"]) == 1
    (row,) = [json.loads(line) for line in (tmp_path / "curves.jsonl").read_text().splitlines()]
    assert row["fresh_reward_mean"] is None  # the judge is the reward here: no fresh judge
    assert metrics["guard_first_step"] is None and (tmp_path / "curves.png").is_file()


def test_cli_bad_data_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "hi"}\nnot json\n')
    result = subprocess.run(
        [sys.executable, "-c", "from charter.cli import main; main()", "train",
         "trainer=dpo", f"data={bad}", f"hydra.run.dir={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert f"{bad}: no usable preference pairs (2 rejected)" in said


@pytest.mark.slow
def test_reward_step_on_real_smollm2(tmp_path: Path) -> None:
    """One real reward-model run through SmolLM2-135M: the loss moves and the model scores."""
    from datasets import Dataset

    from charter.trainers.common import Optimisation
    from charter.trainers.data import Provenance
    from charter.trainers.reward import RewardModelScorer, RewardSettings, train_reward
    from tests.engine_fixtures import smollm2_dir

    rows = [
        {
            "prompt": [{"role": "user", "content": f"How do I pick a strong password? ({i})"}],
            "chosen": [{"role": "assistant", "content": "Use a long passphrase, unique per site."}],
            "rejected": [{"role": "assistant", "content": "Use 1234, it is easy to remember."}],
            "margin": 0.8,
        }
        for i in range(4)
    ]
    pairs = Dataset.from_list(rows)
    settings = RewardSettings(
        base_model=str(smollm2_dir()),
        eval_fraction=0.0,
        optim=Optimisation(learning_rate=5e-5, max_steps=2, batch_size=2, device="cpu"),
    )
    result = train_reward(settings, pairs, Provenance.of(pairs, Path("inline")), tmp_path)
    assert len(result.losses) == 2 and result.losses[0] != result.losses[1]
    scores = RewardModelScorer(result.model_dir).score(
        [rows[0]["prompt"]] * 2, ["Use a long passphrase, unique per site.", "Use 1234."]
    )
    assert all(isinstance(s, float) for s in scores)


def test_ppo_on_a_reward_model_is_watched_by_the_fresh_pointwise_judge(
    tiny_llama: Path, tmp_path: Path
) -> None:
    from datasets import Dataset

    from charter.trainers.common import Optimisation
    from charter.trainers.data import Provenance
    from charter.trainers.reward import RewardSettings, train_reward

    rows = [
        {
            "prompt": [{"role": "user", "content": f"question {i}"}],
            "chosen": [{"role": "assistant", "content": "A kind, careful answer."}],
            "rejected": [{"role": "assistant", "content": "No."}],
        }
        for i in range(4)
    ]
    pairs = Dataset.from_list(rows)
    optim = Optimisation(max_steps=1, batch_size=2, device="cpu")
    rm = train_reward(
        RewardSettings(base_model=str(tiny_llama), eval_fraction=0.0, optim=optim),
        pairs,
        Provenance.of(pairs, tmp_path),
        tmp_path / "rm",
    )
    cfg = compose(
        tiny_llama,
        "trainer=ppo",
        f"reward_model={rm.model_dir}",
        "judge=pointwise",
        FAKE_JUDGE,
        *TINY_PPO,
    )
    train(cfg, tmp_path / "ppo")
    metrics = json.loads((tmp_path / "ppo" / "metrics.json").read_text())
    # the learned reward drives PPO, and the pointwise judge scores the same samples beside it
    assert len(metrics["reward_mean_per_step"]) == 1
    assert metrics["fresh_reward_per_step"][0] is not None
    (row,) = [json.loads(line) for line in (tmp_path / "ppo/curves.jsonl").read_text().splitlines()]
    assert row["fresh_reward_mean"] == pytest.approx(metrics["fresh_reward_per_step"][0], abs=1e-4)
    assert row["kl_to_start"] == metrics["kl_to_start_first"] == 0.0
