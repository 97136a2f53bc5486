"""The cycle collector's youngest generation is collected less often while a command runs, and
its thresholds are put back afterwards (see :mod:`charter.gc_pacing`)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import charter.commands.run as run_commands
from charter.cli import main
from charter.gc_pacing import YOUNGEST, fewer_collections


@pytest.fixture
def thresholds():
    """The test's own starting thresholds, restored whatever happens."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_the_youngest_threshold_is_raised_inside_and_put_back_after(thresholds) -> None:
    with fewer_collections():
        assert gc.get_threshold() == (YOUNGEST, 10, 10)  # the older generations keep theirs
    assert gc.get_threshold() == (700, 10, 10)
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("a failing command")
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_or_automatic_collection_off_is_left_alone(thresholds) -> None:
    for chosen in [(10**6, 10, 10), (0, 10, 10)]:
        gc.set_threshold(*chosen)
        with fewer_collections():
            assert gc.get_threshold() == chosen
        assert gc.get_threshold() == chosen


def _record_thresholds(monkeypatch) -> dict[str, list[int]]:
    """Wrap each stage of ``charter run`` to note the youngest threshold it ran under."""
    seen: dict[str, list[int]] = {}

    def noting(name, task):
        def noted(*args, **kwargs):
            seen.setdefault(name, []).append(gc.get_threshold()[0])
            return task(*args, **kwargs)

        return noted

    stages = tuple((name, noting(name, task)) for name, task in run_commands.STAGE_TASKS)
    monkeypatch.setattr(run_commands, "STAGE_TASKS", stages)
    return seen


@pytest.mark.parametrize(
    "engines",
    [
        pytest.param(["engine@generator.engine=fake", "engine@judge.engine=fake"], id="fake"),
        # the embedded SmolLM2 through transformers
        pytest.param([], id="real-model", marks=pytest.mark.slow),
    ],
)
def test_a_run_works_through_its_stages_under_the_raised_threshold(
    tmp_path: Path, monkeypatch, thresholds, engines: list[str]
) -> None:
    seen = _record_thresholds(monkeypatch)
    run_dir = tmp_path / "run"
    main(
        [
            "run",
            "experiment=smoke",
            "prompts.limit=1",
            *engines,
            "report.enabled=false",
            "plan.before_run=false",
            f"cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert seen == {"generate": [YOUNGEST], "judge": [YOUNGEST], "pairs": [YOUNGEST]}
    assert gc.get_threshold() == (700, 10, 10)  # put back when the command returns
    assert (run_dir / "candidates.jsonl").read_text().count("\n") == 1
    assert (run_dir / "judgments.jsonl").exists()
