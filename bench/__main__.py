"""`make bench`: run every benchmark in this folder, each printing its own table.

Benchmarks print ratios measured side by side in one run (medians of repeats), never absolute
pass/fail thresholds: machines are noisy, ratios travel. A benchmark whose backend is missing
(vLLM) says so and is skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time

BENCHMARKS = (
    ("judge_prefix_sharing", "judge scoring with and without shared-prefix KV reuse", None),
    ("rerun_after_edit", "rerun after editing one principle vs a full run", None),
    ("ranking_cost", "tournament ranking vs all pairs: comparisons, time, agreement", None),
    ("judge_trust", "judges raw vs calibrated, cascades, PPI label-accuracy estimates", None),
    ("engine_throughput", "vLLM vs bare vLLM vs transformers", "vllm"),
    ("ray_streaming", "Ray Data streaming vs the local executor, fake engine: overhead", "ray"),
    ("fuzz", "bad inputs tried and how each ended (tests/fuzz at 20x, random seed)", None),
    ("overhead", "charter's own cost per comparison against the bare engine calls", None),
    ("memory", "peak memory at 10k and 100k prompts, and a kill -9 mid-run resumed", None),
)


def main(argv: list[str] | None = None) -> int:
    wanted = set(argv if argv is not None else sys.argv[1:])
    for name, what, needs in BENCHMARKS:
        if wanted and name not in wanted:
            continue
        print(f"\n=== bench.{name}: {what}", flush=True)
        if needs and importlib.util.find_spec(needs) is None:
            print(f"skipped: needs {needs} (see the README for installing it)", flush=True)
            continue
        start = time.perf_counter()
        importlib.import_module(f"bench.{name}").main([])
        print(f"({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
