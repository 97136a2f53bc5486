"""A few of the fuzzed mistakes through the real command line: one ``error:`` line and exit 2, or
a finished run whose rejects say why; never a traceback, never a half-written file.

A process each costs seconds, so there are only a few, and they all start at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import one_error_line
from tests.fuzz.fuzzing import TALLY, half_written

FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake", "experiment=smoke"]
QUIET = ["report=false", "plan.before_run=false"]

PROMPTS = (
    b'{"id": "a", "prompt": "Say hello."}\n'
    b'{"id": "b", "prompt": "\\ud800 half a surrogate pair"}\n'
    b'{"id": "c", "prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n"
    b"\xff\xfe not UTF-8\n"
    b'{"id": "d", "prompt": "Name a colour."}\n'
)


def _cases(root: Path) -> dict[str, list[str]]:
    """Each case's arguments, its files written under ``root / name``."""
    (root / "rows").mkdir()
    (root / "rows" / "prompts.jsonl").write_bytes(PROMPTS)
    (root / "combine").mkdir()
    (root / "group").mkdir()
    return {
        "combine": ["run", *FAKE, *QUIET, "judge.combine=banana"],
        "group": ["run", *FAKE, *QUIET, "judge=banana"],
        "rows": [
            "run",
            *FAKE,
            *QUIET,
            f"prompts.path={root / 'rows' / 'prompts.jsonl'}",
            f"hydra.run.dir={root / 'rows' / 'run'}",
        ],
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple]]:
    """``{case: (completed process, its folder)}``, the processes run side by side."""
    root = tmp_path_factory.mktemp("cli")
    started = {
        name: subprocess.Popen(
            [sys.executable, "-c", "from charter.cli import main; main()", *args],
            cwd=root / name,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in _cases(root).items()
    }
    done = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=300)
        done[name] = (subprocess.CompletedProcess(process.args, process.returncode, out, err), root)
    yield done


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("combine", "[judge.combine]: must be one of 'log_odds', 'probability'; got 'banana'"),
        ("group", "Could not find 'judge/banana'; available: cascade"),
    ],
)
def test_a_bad_override_is_one_line_before_any_work(
    finished: dict[str, tuple], case: str, says: str
) -> None:
    result, root = finished[case]
    TALLY["command line"]["tried"] += 1
    line = one_error_line(result)
    TALLY["command line"]["clear_error"] += 1
    assert says in line, line
    assert not list((root / case).glob("outputs/*/*/candidates.jsonl")), "work began"


def test_broken_prompt_rows_become_rejects_and_the_run_finishes(
    finished: dict[str, tuple],
) -> None:
    result, root = finished["rows"]
    TALLY["command line"]["tried"] += 1
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "Traceback" not in out, out
    run, prompts = root / "rows" / "run", root / "rows" / "prompts.jsonl"
    rejects = [json.loads(line) for line in (run / "rejects.jsonl").open()]
    read = {r["source"]: r["reason"] for r in rejects if r["stage"] == "generate"}
    assert set(read) == {f"{prompts}:{n}" for n in (2, 3, 4)}, read
    assert all(reason.strip() for reason in read.values())
    TALLY["command line"]["rejected"] += 1
    bad = half_written(run)
    TALLY["command line"]["half_written"] += len(bad)
    assert not bad
