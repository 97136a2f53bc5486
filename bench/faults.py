"""Faults injected into fake-engine runs, counted: the long version of ``tests/faults``.

Every case runs ``charter run`` in a child process with one fault (``tests/faults/
fault_driver.py``), resumes it where it stopped, and compares the outputs with an undisturbed
run's bytes. Cases: SIGKILL at every point that leaves something different behind and at random
moments from outside, SIGTERM and Ctrl-C at random moments, a full disk while each output file
is written and on each of the first call-cache writes, a damaged cache, and runs sharing a cache.

    .venv/bin/python -m bench faults [--seed 0] [--random 10]

It prints how many faults were injected, how many runs recovered byte-identically, how many
stopped with one clear line, and the tracebacks and lost or duplicated rows (both must be 0).
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.faults.test_run_faults import (
    KILL_POINTS,
    OUTPUTS,
    args_for,
    start,
    wait,
)


def _rows(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def _check(run: Path, baseline: Path) -> tuple[bool, int]:
    """(byte-identical, rows lost or duplicated) over the JSONL outputs and the card."""
    same, off = True, 0
    for name in (*OUTPUTS, "README.md"):
        a, b = _rows(run / name), _rows(baseline / name)
        if a != b:
            same = False
            off += len(set(b) ^ set(a)) + abs(len(a) - len(b))
    leftovers = [p for p in run.iterdir() if p.name.endswith((".tmp", ".old"))]
    return same and not leftovers, off


def _outside(args: list[str], cwd: Path, run: Path, signum: int, delay: float) -> tuple[int, str]:
    """Start a slowed run and send ``signum`` ``delay`` seconds after generation finished."""
    proc = start(args, cwd, "slow:0.1")
    deadline = time.monotonic() + 120
    while not (run / "candidates.jsonl").exists() and proc.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signum)
    return wait(proc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench faults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random", type=int, default=10, help="outside signals of each kind")
    opts = parser.parse_args(argv)
    rng = random.Random(opts.seed)
    root = Path(tempfile.mkdtemp(prefix="charter-faults-"))
    base_code, out = wait(start(args_for(root / "baseline", root / "base-cache"), root))
    assert base_code == 0, out
    baseline = root / "baseline"

    cases: list[tuple[str, str, float]] = [(p, "inside", 0.0) for p in KILL_POINTS]
    for kind in ("SIGKILL", "SIGTERM", "SIGINT"):
        cases += [(kind, "outside", rng.uniform(0.0, 0.6)) for _ in range(opts.random)]
    cases += [(f"enospc:{name}", "inside", 0.0) for name in OUTPUTS]
    cases += [(f"cache-full:{n}", "inside", 0.0) for n in range(1, 9)]
    cases += [("damaged-cache", "inside", 0.0), ("shared-cache", "inside", 0.0)]

    counts: Counter[str] = Counter()
    failures: list[str] = []
    for i, (fault, where, delay) in enumerate(cases):
        case = root / f"case{i:03d}"
        run, cache = case / "run", case / "cache"
        case.mkdir()
        args = args_for(run, cache)
        if where == "outside":
            code, out = _outside(args, case, run, signal.Signals[fault], delay)
        elif fault == "damaged-cache":
            code, out = wait(start(args_for(case / "first", cache), case))
            db = cache / "calls.sqlite"
            with sqlite3.connect(db) as con:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
            code, out = wait(start(args, case))
            if code == 2:
                db.replace(case / "aside.sqlite")
        elif fault == "shared-cache":
            other = start(args_for(case / "other", cache), case, "slow:0.05")
            code, out = wait(start(args, case, "slow:0.05"))
            wait(other)
        else:
            code, out = wait(start(args, case, fault))
        counts["faults injected"] += 1
        counts["tracebacks"] += "Traceback" in out
        clear = [line for line in out.splitlines() if line.startswith(("error:", "stopped by"))]
        if code not in (0, -signal.SIGKILL):
            counts["stopped with one clear line"] += len(clear) == 1
        if code != 0:
            resumed, more = wait(start(["run", f"run_dir={run}"], case))
            counts["tracebacks"] += "Traceback" in more
            if resumed != 0:
                failures.append(f"{fault}: resume exited {resumed}")
        same, off = _check(run, baseline)
        counts["recovered byte-identically"] += same
        counts["rows lost or duplicated"] += off
        if not same:
            failures.append(f"{fault} ({where}, {delay:.2f} s): outputs differ")
    kept = f"; scratch folder kept: {root}" if failures else ""
    if not failures:
        shutil.rmtree(root, ignore_errors=True)
    print(f"seed {opts.seed}; {len(cases)} cases{kept}")
    for key in (
        "faults injected",
        "recovered byte-identically",
        "stopped with one clear line",
        "tracebacks",
        "rows lost or duplicated",
    ):
        print(f"  {key:<28} {counts[key]}")
    for failure in failures:
        print(f"  FAILED {failure}")
