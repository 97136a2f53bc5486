"""Time a full ``charter run`` against a rerun after editing one principle, as a ratio.

Each repeat starts from an empty call cache: a full run (8 quickstart prompts x 4 samples, all
pairs judged in both orders), then the same run with one principle's comparison text edited,
in a new run directory sharing the cache. The rerun recomputes only the comparisons that drew
the edited principle; everything else (sampling included) comes from the cache. Both times are
``run_all`` in this process, so they include loading the model and publishing the dataset but
not Python's start-up.

    .venv/bin/python -m bench.rerun_after_edit [--repeats 3] [--engine real|fake] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from hydra import compose, initialize_config_module

from charter.building import register_resolvers
from charter.commands.run import run_all
from charter.generators.model_files import default_cache_dir

CONSTITUTION = Path(__file__).resolve().parents[1] / "constitutions" / "harmless.yaml"


def _edit(src: Path, dest: Path, principle: str | None) -> str:
    """Copy the constitution with one principle's comparison reworded; return its id."""
    data = yaml.safe_load(src.read_text())
    target = (
        data["principles"][0]
        if principle is None
        else next(p for p in data["principles"] if p["id"] == principle)
    )
    target["comparison"] = "Reading both replies closely: " + target["comparison"]
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(target["id"])


def _timed_run(overrides: list[str], run_dir: Path) -> tuple[float, dict]:
    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        cfg = compose("run", overrides=overrides)
    start = time.perf_counter()
    run_all(cfg, run_dir)
    seconds = time.perf_counter() - start
    return seconds, json.loads((run_dir / "summary.json").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine", choices=("real", "fake"), default="real")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (real engine)")
    parser.add_argument("--principle", default=None, help="id to edit (default: the first)")
    args = parser.parse_args(argv)
    base = [
        "experiment=quickstart",
        f"prompts.limit={args.prompts}",
        f"generator.num_samples={args.samples}",
        f"generator.sampling.max_new_tokens={args.max_new_tokens}",
    ]
    if args.engine == "fake":
        base += ["engine@generator.engine=fake", "engine@judge.engine=fake"]
    else:
        models = default_cache_dir()  # where the model is converted, apart from the bench cache
        for role in ("generator", "judge"):
            base += [
                f"{role}.engine.cache_dir={models}",
                f"{role}.engine.num_threads={args.threads}",
            ]
    with tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp:
        # untimed: the first run alone would pay for lazy imports and a cold file cache
        warm = [*base, f"cache_dir={tmp}/cache", "prompts.limit=1", "generator.num_samples=2"]
        _timed_run(warm, Path(tmp) / "warm-up")
    times: dict[str, list[float]] = {"full": [], "rerun": []}
    stages: dict[str, list[dict[str, float]]] = {"full": [], "rerun": []}
    recomputed = ""
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp:
            root = Path(tmp)
            common = [*base, f"cache_dir={root / 'cache'}"]
            seconds, full = _timed_run(
                [*common, f"constitution.path={CONSTITUTION}"], root / "full"
            )
            times["full"].append(seconds)
            edited = _edit(CONSTITUTION, root / "edited.yaml", args.principle)
            seconds, rerun = _timed_run(
                [*common, f"constitution.path={root / 'edited.yaml'}"], root / "rerun"
            )
            times["rerun"].append(seconds)
            for name, summary in (("full", full), ("rerun", rerun)):
                stages[name].append(
                    {s: summary[s]["seconds"] for s in ("generate", "judge")}
                    | {
                        "model calls": summary["generate"]["cache"]["misses"]
                        + summary["judge"]["cache"]["misses"]
                    }
                )
            misses = rerun["judge"]["cache"]["misses"] // 2
            recomputed = (
                f"edited {edited!r}: {misses} of {full['judge']['comparisons']} comparisons "
                f"recomputed, {rerun['generate']['cache']['misses']} prompts resampled"
            )
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"engine: {args.engine}; {args.prompts} prompts x {args.samples} samples; {recomputed}")
    for name, t in times.items():
        print(f"{name:>6}: median {med[name]:.2f} s  ({', '.join(f'{x:.2f}' for x in t)})")
        print(f"        last repeat: {stages[name][-1]}")
    print(f"rerun / full: {med['rerun'] / med['full']:.3f}")


if __name__ == "__main__":
    main()
