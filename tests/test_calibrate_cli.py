"""`charter calibrate` and `judge.calibration=FILE` through the command line, with the fake engine
and the real small model, and one clear line for each user mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charter.judge_eval.calibration import JudgeSignals, load_calibration
from charter.records import Judgment, from_row
from tests.cli import HUMAN_PREFS, charter, one_error_line

DATA = HUMAN_PREFS
PANDALM = DATA / "pandalm_dev.jsonl"
pytestmark = pytest.mark.skipif(
    not DATA.exists(), reason="needs ../shared/data/human_prefs beside the checkout"
)
FAKE = "engine@judge.engine=fake"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("calibrate")
    result = charter(
        "calibrate",
        f"data={PANDALM}",
        "constitution=helpful",
        "limit=60",
        FAKE,
        "calibration.bootstrap=100",
        f"hydra.run.dir={root / 'cal'}",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    return root / "cal"


def test_calibrate_writes_the_calibration_and_its_figures(fitted: Path) -> None:
    calibration = load_calibration(fitted / "calibration.json")
    assert calibration.n == 60 and calibration.features == ["mean_log_odds", "consistent_log_odds"]
    assert len(calibration.judge_fingerprint) == 64 and len(calibration.data_sha256) == 64
    metrics = json.loads((fitted / "metrics.json").read_text())
    for side in ("before", "after"):
        for key in ("agreement", "length_controlled_agreement", "log_loss", "brier", "ece"):
            m = metrics[side][key]
            assert m["low"] <= m["value"] <= m["high"], (side, key)
    assert (fitted / "reliability.png").stat().st_size > 1000
    assert sum(1 for _ in (fitted / "verdicts.jsonl").open()) == 60


def test_eval_judge_applies_it_and_keeps_the_raw_probability(fitted: Path, tmp_path: Path) -> None:
    result = charter(
        "eval-judge",
        f"data={PANDALM}",
        "constitution=helpful",
        "limit=20",
        "injection_pairs=0",
        FAKE,
        f"judge.calibration={fitted / 'calibration.json'}",
        f"hydra.run.dir={tmp_path / 'ev'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    calibration = load_calibration(fitted / "calibration.json")
    pairs = {json.loads(line)["id"]: json.loads(line) for line in PANDALM.open()}
    rows = [json.loads(line) for line in (tmp_path / "ev" / "verdicts.jsonl").open()]
    for row in rows:
        j = from_row(Judgment, row)
        pair = pairs[row["prompt_id"]]
        expected = calibration.p(
            JudgeSignals.of(j, pair["chosen"], pair["rejected"]), j.principle_id
        )
        assert row["p_a"] == pytest.approx(expected)
        assert row["raw"]["uncalibrated_p_a"] != row["p_a"]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["judge"].endswith(
        "calibrated"
    )


def test_the_judge_stage_applies_it_and_the_card_says_so(fitted: Path, tmp_path: Path) -> None:
    """A calibration fitted under the helpful constitution, used by a run under it."""
    result = charter(
        "run",
        "experiment=smoke",
        "constitution=helpful",
        "engine@generator.engine=fake",
        FAKE,
        f"judge.calibration={fitted / 'calibration.json'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    judgments = [json.loads(line) for line in (tmp_path / "run" / "judgments.jsonl").open()]
    assert judgments and all("uncalibrated_p_a" in j["raw"] for j in judgments)
    assert "## Calibration" in (tmp_path / "run" / "README.md").read_text()


def test_a_calibration_for_another_judge_or_constitution_is_refused(
    fitted: Path, tmp_path: Path
) -> None:
    common = [f"data={PANDALM}", "limit=5", FAKE, f"judge.calibration={fitted}/calibration.json"]
    line = one_error_line(charter("eval-judge", *common, "constitution=harmless", cwd=tmp_path))
    assert "fitted under constitution" in line and "judge.calibration" in line
    other = ("eval-judge", *common, "constitution=helpful", "judge.combine=probability")
    assert "fitted for another judge" in one_error_line(charter(*other, cwd=tmp_path))


def test_user_mistakes_get_one_line(tmp_path: Path) -> None:
    few = charter("calibrate", f"data={PANDALM}", "limit=10", FAKE, cwd=tmp_path)
    line = one_error_line(few)
    assert "10 labelled pairs are too few" in line and "at least 30" in line
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    line = one_error_line(charter("calibrate", f"data={wrong}", FAKE, cwd=tmp_path))
    assert str(wrong) in line and "no usable pairs" in line
    line = one_error_line(charter("calibrate", FAKE, cwd=tmp_path))
    assert "data=FILE" in line and "run_dir=RUN" in line
    missing = tmp_path / "nope.json"
    line = one_error_line(
        charter("eval-judge", f"data={PANDALM}", FAKE, f"judge.calibration={missing}", cwd=tmp_path)
    )
    assert "calibration file not found" in line


def test_calibrate_from_a_reviewed_run(tmp_path: Path) -> None:
    """run_dir=RUN takes the run's human labels against the run's own judgments."""
    run = tmp_path / "run"
    result = charter(
        "run",
        "engine@generator.engine=fake",
        FAKE,
        "generator.num_samples=2",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert charter("review", "export", str(run), "budget=40", cwd=tmp_path).returncode == 0
    queue = [json.loads(line) for line in (run / "review" / "queue.jsonl").open()]
    labels = run / "labels.jsonl"
    labels.write_text(
        "".join(json.dumps({"review_id": q["review_id"], "human_label": "a"}) + "\n" for q in queue)
    )
    assert charter("review", "import", str(run), str(labels), cwd=tmp_path).returncode == 0
    result = charter(
        "calibrate",
        f"run_dir={run}",
        "calibration.min_labels=20",
        f"hydra.run.dir={tmp_path / 'c'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    calibration = load_calibration(tmp_path / "c" / "calibration.json")
    assert calibration.n == len(queue)


@pytest.mark.slow
def test_calibrate_and_apply_on_the_real_model(tmp_path: Path) -> None:
    result = charter(
        "calibrate",
        f"data={PANDALM}",
        "constitution=helpful",
        "limit=12",  # the plumbing on the real model; fits on 30+ rows are tested above
        "calibration.min_labels=12",
        "calibration.folds=3",
        "calibration.bootstrap=100",
        f"hydra.run.dir={tmp_path / 'cal'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    calibration = load_calibration(tmp_path / "cal" / "calibration.json")
    assert "smollm2" in calibration.judge.lower() and calibration.n == 12
    result = charter(
        "eval-judge",
        f"data={PANDALM}",
        "constitution=helpful",
        "limit=4",
        "injection_pairs=0",
        f"judge.calibration={tmp_path / 'cal' / 'calibration.json'}",
        f"hydra.run.dir={tmp_path / 'ev'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "ev" / "verdicts.jsonl").open()]
    pairs = {json.loads(line)["id"]: json.loads(line) for line in PANDALM.open()}
    for row in rows:
        j = from_row(Judgment, row)
        pair = pairs[row["prompt_id"]]
        signals = JudgeSignals.of(j, pair["chosen"], pair["rejected"])
        assert row["p_a"] == pytest.approx(calibration.p(signals, j.principle_id))
        assert row["raw"]["uncalibrated_p_a"] == pytest.approx(signals.raw_p, abs=1e-6)
