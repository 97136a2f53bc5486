"""Running the ``charter`` command as a user would: a fresh process, its output captured.

Also where the tests find the human-labelled pairs beside the checkout (``../shared``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HUMAN_PREFS = Path(__file__).resolve().parents[2] / "shared" / "data" / "human_prefs"

SMALL_FAKE_RUN = (
    "experiment=smoke",
    "prompts.limit=9",
    "generator.num_samples=4",
    "chunk_size=5",
    "engine@generator.engine=fake",
    "engine@judge.engine=fake",
    "report.enabled=false",
    "plan.before_run=false",
)
"""``charter run`` overrides for a run of seconds: 9 prompts x 4 samples on the fake engine,
judged in calls of 5, no report or plan (the tests that compare such runs' bytes)."""


def charter(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``charter ARGS...`` in ``cwd``; the caller asserts on the return code and output."""
    return subprocess.run(
        [sys.executable, "-c", "from charter.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``error:`` line of a run that failed on a user's mistake (exit 2, no
    traceback); fails the test otherwise."""
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    return errors[0]
