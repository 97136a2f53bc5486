"""Peak memory of ``charter run`` as the prompt count grows, and a kill -9 mid-run resumed.

Fake engine (no model), call cache on, K=4. Each size runs in a fresh child process that
reports its own peak RSS. Then a run of ``--kill-prompts`` prompts is killed with SIGKILL in
the middle of its judge stage, resumed with ``charter run run_dir=...``, and its outputs are
compared byte for byte with the uninterrupted run of the same size.

    .venv/bin/python -m bench memory [--sizes 10000 100000] [--kill-prompts 100000]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.scale_runs import ROOT, fake_run, write_prompts

OUTPUTS = ("candidates.jsonl", "judgments.jsonl", "rankings.jsonl", "pairs.jsonl", "rejects.jsonl")


def kill_mid_judge(prompts: Path, work: Path, name: str) -> float:
    """Start a run, SIGKILL it once its judge stage has begun (the candidates are written),
    then resume it; the seconds it ran before the kill."""
    child = fake_run(prompts, work, name, popen=True)
    run_dir = work / name
    start = time.perf_counter()
    while not (run_dir / "candidates.jsonl").exists():
        if child.poll() is not None:
            raise RuntimeError("the run ended before it could be killed")
        time.sleep(0.2)
    time.sleep(max(2.0, (time.perf_counter() - start) * 0.5))  # well into judging
    child.send_signal(signal.SIGKILL)
    child.wait()
    ran = time.perf_counter() - start
    resumed = subprocess.run(
        [sys.executable, "-c", "from charter.cli import main; main()", "run",
         f"run_dir={run_dir}", "engine@generator.engine=fake", "engine@judge.engine=fake",
         f"cache_dir={work / (name + '-cache')}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if resumed.returncode != 0:
        raise RuntimeError(f"resume failed:\n{resumed.stderr[-2000:]}")
    return ran


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--kill-prompts", type=int, default=100_000)
    parser.add_argument("--before", type=Path, default=None, help="an older checkout, at 10k")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="charter-memory-") as tmp:
        work = Path(tmp)
        print("prompts | comparisons | seconds | peak RSS MB | ratio to the smallest")
        peaks: dict[int, float] = {}
        runs = {}
        for n in args.sizes:
            prompts = write_prompts(work / f"prompts-{n}.jsonl", n)
            run = fake_run(prompts, work, f"run-{n}")
            runs[n] = run
            peaks[n] = run.max_rss_mb
            ratio = run.max_rss_mb / peaks[args.sizes[0]]
            comparisons = run.summary["judge"]["comparisons"]
            print(f"{n} | {comparisons} | {run.seconds:.0f} | {run.max_rss_mb:.0f} | {ratio:.2f}")
        if args.before:
            n = args.sizes[0]
            old = fake_run(work / f"prompts-{n}.jsonl", work, "before", code=args.before)
            print(f"{n} (before: {args.before}) | | {old.seconds:.0f} | {old.max_rss_mb:.0f} |")
        if args.kill_prompts:
            n = args.kill_prompts
            prompts = work / f"prompts-{n}.jsonl"
            if n not in runs:
                write_prompts(prompts, n)
                runs[n] = fake_run(prompts, work, f"run-{n}")
            ran = kill_mid_judge(prompts, work, f"killed-{n}")
            same = [
                (work / f"killed-{n}" / f).read_bytes() == (runs[n].run_dir / f).read_bytes()
                for f in (*OUTPUTS, "README.md")
            ]
            summary = json.loads((work / f"killed-{n}" / "summary.json").read_text())
            print(
                f"kill -9 after {ran:.0f} s of a {n}-prompt run, then resumed: "
                f"{sum(same)}/{len(same)} output files byte-identical to the uninterrupted "
                f"run; the resume's judge cache hits/misses: {summary['judge']['cache']}"
            )


if __name__ == "__main__":
    main()
