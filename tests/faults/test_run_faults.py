"""Faults during ``charter run``, injected in a child process (``fault_driver.py``).

Each case ends in one of two ways, and both are checked: the run finishes with outputs
byte-identical to an undisturbed run, or it stops with one clear line (or is killed) and
``charter run run_dir=DIR`` then finishes it to those same outputs. No row is lost or duplicated
(the outputs are the same bytes) and no temp file is left behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from charter.call_cache import CACHE_FILE, CallCache

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("fault_driver.py")
FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake"]
# 6 prompts x 4 samples: 2 generate calls, 36 comparisons in 6 judge calls
SIZE = ["experiment=smoke", "prompts.limit=6", "generator.num_samples=4", "chunk_size=5"]
OUTPUTS = ("candidates.jsonl", "judgments.jsonl", "rankings.jsonl", "pairs.jsonl", "rejects.jsonl")
KILL_POINTS = (
    *(f"kill:generate:{n}" for n in (1, 2)),
    *(f"kill:choice_logprobs:{n}" for n in range(1, 7)),
    *(f"kill:replace:{name}" for name in (*OUTPUTS, "pairs.parquet", "README.md")),
    "kill:publish",
)
"""Every place a SIGKILL can land that leaves something different behind."""


def args_for(run: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "run",
        *SIZE,
        *FAKE,
        f"cache_dir={cache}",
        f"hydra.run.dir={run}",
        "report=false",
        *extra,
    ]


def start(
    args: list[str], cwd: Path, fault: str = "", engine: str = "fake"
) -> subprocess.Popen[str]:
    env = {**os.environ, "FAULT": fault, "FAULT_ENGINE": engine, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(DRIVER), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out + err


def resume(run: Path, cwd: Path) -> None:
    code, out = wait(start(["run", f"run_dir={run}"], cwd))
    assert code == 0, out


def assert_same_outputs(run: Path, baseline: Path) -> None:
    for name in (*OUTPUTS, "README.md"):
        assert (run / name).read_bytes() == (baseline / name).read_bytes(), name
    leftovers = [p.name for p in run.iterdir() if p.name.endswith((".tmp", ".old"))]
    assert leftovers == []


def one_line(out: str, starts: str) -> str:
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith(starts)]
    assert len(lines) == 1, out
    return lines[0]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("baseline")
    code, out = wait(start(args_for(root / "run", root / "cache"), root))
    assert code == 0, out
    return root / "run"


def kill_points(count: int, seed: int) -> list[str]:
    """A seeded sample of kill points (all of them in ``python -m bench faults``)."""
    return random.Random(seed).sample(KILL_POINTS, count)


@pytest.mark.parametrize("fault", kill_points(4, seed=17))
def test_sigkill_then_resume_gives_identical_outputs(
    tmp_path: Path, baseline: Path, fault: str
) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    code, out = wait(start(args_for(run, cache), tmp_path, fault))
    assert code == -signal.SIGKILL, out
    resume(run, tmp_path)
    assert_same_outputs(run, baseline)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_ends_at_a_chunk_boundary_and_says_how_to_resume(
    tmp_path: Path, baseline: Path, signum: int, status: int
) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    proc = start(args_for(run, cache), tmp_path, "slow:0.3")
    deadline = time.monotonic() + 120
    while not (run / "candidates.jsonl").exists():  # generation done, judging under way
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signum)
    code, out = wait(proc)
    assert code == status, out
    line = one_line(out, "stopped by")
    assert signal.Signals(signum).name in line and f"run_dir={run}" in line
    assert not (run / "judgments.jsonl").exists()  # stopped inside the judge stage
    resume(run, tmp_path)
    assert_same_outputs(run, baseline)


@pytest.mark.parametrize(
    "fault", ["enospc:judgments.jsonl", "enospc:candidates.jsonl", "cache-full:3"]
)
def test_a_full_disk_is_one_line_and_the_run_resumes(
    tmp_path: Path, baseline: Path, fault: str
) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    code, out = wait(start(args_for(run, cache), tmp_path, fault))
    assert code == 2, out
    line = one_line(out, "error:")
    assert "no space left" in line and f"run_dir={run}" in line
    name = fault.split(":")[1]
    if name.endswith(".jsonl"):
        assert not (run / name).exists() and not list(run.glob(f".{name}.*"))
    resume(run, tmp_path)
    assert_same_outputs(run, baseline)


def test_a_full_disk_in_a_background_commit_is_one_line_and_the_run_resumes(
    tmp_path: Path, baseline: Path
) -> None:
    """The cache commits on a thread of its own; its failure is raised by the next store, in
    the stage's thread: one line, exit 2, and the rows it held are not lost to the resume."""
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = args_for(run, cache, "call_cache_commit_s=0.000001")
    code, out = wait(start(args, tmp_path, "commit-full:1"))
    assert code == 2, out
    line = one_line(out, "error:")
    assert "no space left" in line and f"run_dir={run}" in line
    resume(run, tmp_path)
    assert_same_outputs(run, baseline)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_cache_never_changes_the_outputs(
    tmp_path: Path, baseline: Path, damage: str
) -> None:
    cache = tmp_path / "cache"
    code, out = wait(start(args_for(tmp_path / "first", cache), tmp_path))
    assert code == 0, out
    db = cache / CACHE_FILE
    with sqlite3.connect(db) as con:  # fold the WAL in, so truncating cuts real pages
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = db.read_bytes()
    db.write_bytes(
        b"this is not a database" * 100 if damage == "garbage" else data[: len(data) // 2]
    )
    run = tmp_path / "run"
    code, out = wait(start(args_for(run, cache), tmp_path))
    if code == 2:  # damage found only when read: one line, then a run with the file moved aside
        assert "damaged" in one_line(out, "error:")
        db.replace(tmp_path / "aside.sqlite")
        resume(run, tmp_path)
    else:
        assert code == 0, out
        assert "was damaged" in out and list(cache.glob("calls.sqlite.damaged-*"))
    assert_same_outputs(run, baseline)


def test_a_cache_locked_for_a_while_is_waited_for(tmp_path: Path, baseline: Path) -> None:
    cache = tmp_path / "cache"
    CallCache(cache / CACHE_FILE)  # create it
    held = threading.Event()

    def hold() -> None:
        con = sqlite3.connect(cache / CACHE_FILE, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")  # another writer, holding the write lock for 3 s
        held.set()
        time.sleep(3)
        con.execute("COMMIT")
        con.close()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    code, out = wait(start(args_for(tmp_path / "run", cache), tmp_path))
    holder.join()
    assert code == 0, out
    assert_same_outputs(tmp_path / "run", baseline)


def test_a_cache_locked_too_long_is_one_line(tmp_path: Path) -> None:
    from charter.run_faults import survived

    cache = CallCache(tmp_path / CACHE_FILE, timeout_s=0.2, commit_every_s=0)
    con = sqlite3.connect(tmp_path / CACHE_FILE, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(SystemExit) as stop, survived(tmp_path / "run", resumable=True):
            cache.put_many([("k", 1)], kind="generate", model="m")
    finally:
        con.execute("COMMIT")
    assert stop.value.code == 2


def test_two_runs_sharing_one_cache_at_once_both_match(tmp_path: Path, baseline: Path) -> None:
    cache = tmp_path / "cache"
    procs = [start(args_for(tmp_path / name, cache), tmp_path, "slow:0.05") for name in "ab"]
    for proc in procs:
        code, out = wait(proc)
        assert code == 0, out
    for name in "ab":
        assert_same_outputs(tmp_path / name, baseline)
    entries = CallCache(cache / CACHE_FILE).summary().entries
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    # no call stored twice: one entry per distinct generate chat and judge chat
    assert entries == summary["generate"]["candidate_sets"] + 2 * summary["judge"]["comparisons"]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["kill:choice_logprobs:2"])
def test_the_real_model_killed_mid_stage_resumes_to_identical_outputs(
    tmp_path: Path, fault: str
) -> None:
    """The same through SmolLM2: its calls are cached as they return, so a resumed run is the
    undisturbed one, byte for byte."""
    size = ["experiment=smoke", "prompts.limit=2", "generator.num_samples=2", "chunk_size=1"]
    base = ["run", *size, "report=false"]
    clean, run = tmp_path / "clean", tmp_path / "run"
    code, out = wait(
        start(
            [*base, f"cache_dir={tmp_path / 'c1'}", f"hydra.run.dir={clean}"],
            tmp_path,
            engine="transformers",
        )
    )
    assert code == 0, out
    args = [*base, f"cache_dir={tmp_path / 'c2'}", f"hydra.run.dir={run}"]
    code, out = wait(start(args, tmp_path, fault, engine="transformers"))
    assert code == -signal.SIGKILL, out
    resume(run, tmp_path)
    assert_same_outputs(run, clean)
