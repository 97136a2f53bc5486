"""Shared by the scale benchmarks: a prompts file of any size and ``charter run`` on the fake
engine in a child process, timed, with its peak memory.

Not a benchmark itself (``python -m bench`` lists only the ones in ``bench/__main__.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# the child runs charter's CLI and, at exit, writes its own peak RSS beside the run
_CHILD = """
import atexit, json, resource, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(
    {"max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})))
from charter.cli import main
sys.argv = ["charter", *sys.argv[1:]]
main()
"""


def write_prompts(path: Path, n: int) -> Path:
    """``n`` distinct prompts, built from the quickstart's 40 (ids p0..p{n-1})."""
    source = ROOT / "charter" / "data" / "quickstart_prompts.jsonl"
    base = [json.loads(line)["prompt"] for line in source.read_text().splitlines() if line]
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"p{i}", "prompt": f"{base[i % len(base)]} (#{i})"}) + "\n")
    return path


@dataclass
class Run:
    seconds: float
    max_rss_mb: float
    summary: dict[str, Any]
    run_dir: Path


def fake_run(
    prompts: Path,
    work: Path,
    name: str,
    *,
    code: Path = ROOT,
    samples: int = 4,
    extra: tuple[str, ...] = (),
    popen: bool = False,
) -> Run | subprocess.Popen[str]:
    """``charter run`` of ``prompts`` on the fake engine (generator and judge), call cache on,
    no report or plan, with the charter source at ``code`` (another checkout measures an older
    version side by side). ``popen`` returns the running child instead (to kill it)."""
    run_dir, rss = work / name, work / f"{name}.rss.json"
    args = [
        sys.executable,
        "-c",
        _CHILD,
        str(rss),
        "run",
        "engine@generator.engine=fake",
        "engine@judge.engine=fake",
        f"generator.num_samples={samples}",
        f"prompts.path={prompts}",
        f"cache_dir={work / (name + '-cache')}",
        "report.enabled=false",
        "plan.before_run=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(code)}
    if popen:
        return subprocess.Popen(
            args, cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    start = time.perf_counter()
    done = subprocess.run(args, cwd=code, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"charter run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    max_rss = json.loads(rss.read_text())["max_rss_kb"] / 1024
    return Run(seconds, max_rss, summary, run_dir)
