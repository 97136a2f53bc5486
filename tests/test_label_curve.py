"""`charter train experiment=label_curve`: nested training sets, held-out pairs kept apart, judge
labels that swap a pair where the judge disagrees, refusals before anything is loaded, and the
page. The fast tests replace the train-and-score step with a fake; one slow test runs it all on
SmolLM2 (pairwise judge through the transformers engine, one optimiser step per model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from charter.building import resolve_path
from charter.commands.label_curve import run_label_curve
from charter.config_check import check_config
from charter.constitution import load_constitution
from charter.errors import InputError
from charter.human_prefs import load_human_pairs
from charter.records import Judgment
from charter.report import build_report
from charter.trainers.label_curve import LabelCurveSettings, judge_labels
from tests import tiny_llama as shared
from tests.test_configs import check_signature, compose_all, targets

tiny_llama = shared.tiny_llama  # the session fixture: its tokenizer counts tokens here


def write_pairs(path: Path, n: int, dimension: str) -> Path:
    rows = [
        {
            "id": f"{path.stem}-{i}",
            "dimension": dimension,
            "messages": [{"role": "user", "content": f"How should I store password {i}?"}],
            "chosen": f"Use a password manager; item {i}." + " Long and unique." * (i % 3),
            "rejected": f"Write it on a sticky note {i}.",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def compose(data: list[Path], *overrides: str) -> Any:
    files = ",".join(f"'{p}'" for p in data)
    return compose_all(
        "train", ["experiment=label_curve", f"label_curve.data=[{files}]", *overrides]
    )


class FakeTrainer:
    """Records what each model would train on; every held-out pair is scored r(chosen) > r."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, settings, dataset, provenance, heldout, folder: Path) -> list[float]:
        (folder / "model").mkdir(parents=True)  # as train_reward leaves it
        self.calls.append(
            {
                "folder": folder.name,
                "ids": list(dataset["id"]),
                "chosen": [c[-1]["content"] for c in dataset["chosen"]],
                "heldout": [p.id for p in heldout],
                "judges": provenance.judge_model,
            }
        )
        return [1.0] * len(heldout)


def test_experiment_config_composes_and_builds() -> None:
    cfg = compose_all("train", ["experiment=label_curve"])
    check_config(cfg, "train")
    OmegaConf.resolve(cfg)
    for path, node in targets(cfg):
        check_signature(path, node)
    settings = instantiate(cfg.label_curve)
    assert isinstance(settings, LabelCurveSettings)
    assert settings.counts == [25, 50, 100, 200, 400] and settings.heldout == 200
    assert settings.reward.margin_scale == 0.0 and settings.reward.eval_fraction == 0.0
    assert cfg.constitution.path.endswith("helpful.yaml")


def test_nested_sets_held_out_apart_and_judge_labels_swap_pairs(
    tiny_llama: Path, tmp_path: Path
) -> None:
    a = write_pairs(tmp_path / "a.jsonl", 30, "helpfulness")
    b = write_pairs(tmp_path / "b.jsonl", 18, "harmlessness")
    cfg = compose(
        [a, b],
        "engine@judge.engine=fake",
        "label_curve.counts=[16,4,8]",
        "label_curve.heldout=8",
        f"label_curve.reward.base_model={tiny_llama}",
    )
    out = tmp_path / "out"
    fake = FakeTrainer()
    run_label_curve(cfg, out, train_fn=fake)

    assert [c["folder"] for c in fake.calls] == [
        f"{s}_{n}" for n in (4, 8, 16) for s in ("human", "judge")
    ]
    assert [len(c["ids"]) for c in fake.calls] == [4, 4, 8, 8, 16, 16]
    biggest = fake.calls[-1]["ids"]
    assert all(c["ids"] == biggest[: len(c["ids"])] for c in fake.calls)  # nested prefixes
    heldout = [json.loads(line) for line in (out / "heldout.jsonl").read_text().splitlines()]
    held_ids = {h["id"] for h in heldout}
    assert len(heldout) == 8 and not held_ids & set(biggest)
    assert all(c["heldout"] == [h["id"] for h in heldout] for c in fake.calls)
    # each file's share of the held-out set follows the pool: 30/48 and 18/48 of 8
    assert sorted(h["file"] for h in heldout).count(str(a)) == 5

    human = {p.id: p for f in (a, b) for p in load_human_pairs(f)[0]}
    verdicts = {
        v["prompt_id"]: v
        for v in map(json.loads, (out / "verdicts.jsonl").read_text().splitlines())
    }
    judged = fake.calls[-1]
    assert judged["judges"] and fake.calls[-2]["chosen"] == [human[i].chosen for i in biggest]
    kept = [c == human[i].chosen for i, c in zip(judged["ids"], judged["chosen"], strict=True)]
    assert kept == [verdicts[i]["p_a"] > 0.5 for i in judged["ids"]]  # swapped where p_a < 0.5
    assert any(kept) and not all(kept), "the fake judge should keep some pairs and swap others"

    result = json.loads((out / "label_curve.json").read_text())
    rows = {(r["source"], r["count"]): r for r in result["rows"]}
    assert rows[("judge", 8)]["label_agreement"] == sum(kept[:8]) / 8
    assert rows[("human", 4)]["label_agreement"] is None
    assert rows[("human", 16)]["accuracy"] == 1.0 and rows[("human", 16)]["heldout"] == 8
    assert set(rows[("human", 16)]["by_dimension"]) == {"helpfulness", "harmlessness"}
    assert result["heldout"]["ids"] == [h["id"] for h in heldout]
    assert [d["sha256"] for d in result["data"]] and result["judge"]["pairs"] == 16
    assert not (out / "models" / "human_4" / "model").exists()  # keep_models=false
    assert (out / "label_curve.png").read_bytes()[:4] == b"\x89PNG"

    page = build_report(out)
    assert page.kind == "label_curve" and not page.missing
    assert 'data-count="16"' in page.html and "data:image/png;base64," in page.html


def test_an_exact_tie_is_decided_by_a_seeded_coin_not_the_human_label(tmp_path: Path) -> None:
    class Undecided:
        model_id, method = "undecided", "fake"

        def judge(self, comparisons):
            return [
                Judgment(c.prompt_id, c.candidate_a, c.candidate_b, c.principle.id,
                         0.5, 0.5, 0.5, True, self.model_id, self.method)
                for c in comparisons
            ]  # fmt: skip

    pairs, _ = load_human_pairs(write_pairs(tmp_path / "a.jsonl", 24, "helpfulness"))
    constitution = load_constitution(resolve_path("constitutions/helpful.yaml"))
    labels, _, _ = judge_labels(pairs, Undecided(), constitution, seed=3)
    again, _, _ = judge_labels(pairs, Undecided(), constitution, seed=3)
    assert all(x.coin for x in labels) and labels == again
    assert 0 < sum(x.agrees for x in labels) < len(labels)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("label_curve.counts=[400]", "label_curve.counts"),
        ("label_curve.counts=[0,4]", "label_curve.counts"),
        ("label_curve.counts=[]", "label_curve.counts"),
        ("label_curve.heldout=0", "label_curve.heldout"),
        ("label_curve.labels=[human,crowd]", "label_curve.labels"),
    ],
)
def test_bad_settings_fail_in_one_line_before_anything_is_loaded(
    tmp_path: Path, override: str, field: str
) -> None:
    data = write_pairs(tmp_path / "a.jsonl", 48, "helpfulness")
    cfg = compose(
        [data],
        override,
        "label_curve.heldout=8" if "heldout" not in override else "label_curve.counts=[4]",
        # either of these, loaded, would fail with another message
        "judge=reward_model",
        f"judge.model={tmp_path / 'no-such-model'}",
        f"label_curve.reward.base_model={tmp_path / 'no-such-model'}",
    )
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError) as caught:
        run_label_curve(cfg, out, train_fn=FakeTrainer())
    assert caught.value.field == field and "\n" not in str(caught.value)
    if override == "label_curve.counts=[400]":
        assert caught.value.message == (
            "label_curve.counts asks for 400 training pairs, but the data has 48 usable pairs "
            "and label_curve.heldout=8 keeps 8 of them out: at most 40 can train"
        )
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_real_curve_with_the_smollm2_judge(tiny_llama: Path, tmp_path: Path) -> None:
    """Reward models on 2 and 4 pairs, human- and SmolLM2-labelled, one real TRL step each (on
    the tiny Llama: four SmolLM2 reward models would take twice as long), scored on 4."""
    data = write_pairs(tmp_path / "pairs.jsonl", 12, "helpfulness")
    cfg = compose(
        [data],
        f"label_curve.reward.base_model={tiny_llama}",
        "label_curve.counts=[2,4]",
        "label_curve.heldout=4",
        "label_curve.reward.optim.max_steps=1",
        "label_curve.reward.optim.batch_size=2",
        "label_curve.reward.optim.device=cpu",
        "label_curve.method=full",
    )
    out = tmp_path / "out"
    run_label_curve(cfg, out)
    result = json.loads((out / "label_curve.json").read_text())
    assert len(result["rows"]) == 4
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["heldout"] == 4 for r in result["rows"])
    assert result["judge"]["judge"] == "PairwiseLogprobJudge(smollm2-135m-instruct)"
    assert result["judge"]["pairs"] == 4
    assert (out / "models" / "judge_4" / "log_history.jsonl").is_file()
    assert not (out / "models" / "judge_4" / "model").exists()
    assert (out / "label_curve.png").is_file()
    assert build_report(out).kind == "label_curve"


@pytest.mark.slow
def test_a_head_on_frozen_smollm2_features_learns_an_obvious_preference(tmp_path: Path) -> None:
    """method=head on the real model: answers beat refusals on pairs it never saw, and the
    features are computed once per text however many heads read them."""
    from datasets import Dataset

    from charter.human_prefs import HumanPair
    from charter.trainers.data import Provenance
    from charter.trainers.reward import RewardSettings
    from charter.trainers.reward_probe import FrozenFeatureProbe
    from tests.engine_fixtures import smollm2_dir

    topics = ["spiders", "tea", "bicycles", "rain", "maps", "bread", "clocks", "owls", "glue",
              "kites", "salt", "ice", "ants", "soap", "wool", "moss"]  # fmt: skip

    def pair(i: int, topic: str) -> HumanPair:
        chat = [{"role": "user", "content": f"Tell me one fact about {topic}."}]
        return HumanPair(f"p{i}", chat, f"Here is a fact about {topic}: it is common.",
                         "I'm sorry, I can't help with that request.", "helpfulness")  # fmt: skip

    pairs = [pair(i, t) for i, t in enumerate(topics)]
    train, heldout = pairs[:10], pairs[10:]
    data = Dataset.from_list(
        [{"prompt": p.messages, "chosen": [{"role": "assistant", "content": p.chosen}],
          "rejected": [{"role": "assistant", "content": p.rejected}]} for p in train]
    )  # fmt: skip
    probe = FrozenFeatureProbe(str(smollm2_dir()), max_length=128)
    margins = probe(RewardSettings(), data, Provenance("inline", 10, [], [], []), heldout, tmp_path)
    assert len(margins) == 6 and all(m > 0 for m in margins), margins
    head = json.loads((tmp_path / "head.json").read_text())
    assert head["pairs"] == 10 and len(head["weights"]) == 576
    cached = len(probe._features)
    probe(
        RewardSettings(), data.select(range(4)), Provenance("x", 4, [], [], []), heldout, tmp_path
    )
    assert len(probe._features) == cached  # every text was already seen


def test_cli_a_count_larger_than_the_data_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = write_pairs(tmp_path / "pairs.jsonl", 12, "helpfulness")
    result = subprocess.run(
        [sys.executable, "-c", "from charter.cli import main; main()", "train",
         "experiment=label_curve", f"label_curve.data=['{data}']", "label_curve.heldout=4",
         "label_curve.counts=[4,9]", f"hydra.run.dir={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    said = result.stdout + result.stderr
    assert result.returncode == 2, said
    assert "Traceback" not in said
    assert "label_curve.counts" in said and "at most 8 can train" in said, said
