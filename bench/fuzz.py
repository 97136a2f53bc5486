"""Bad inputs tried, and how each ended: the fuzz suite (``tests/fuzz``) at 20 times its CI budget.

Runs the same Hypothesis properties as the tests, from a random seed (printed, to reproduce a
run), and counts per target how every input ended: a success, rows rejected with a reason, one
clear error line (exit 2 at the command line), or a traceback; and the half-written files left
behind. The last two must be 0. The command-line cases run a few real ``charter`` processes.

    .venv/bin/python -m bench fuzz
    .venv/bin/python -m bench.fuzz [--seed N] [--ci]   # --ci: the tests' own fixed budget
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = (
    ("tried", "inputs"),
    ("success", "success"),
    ("rejected", "rejects"),
    ("clear_error", "clear error"),
    ("traceback", "traceback"),
    ("half_written", "half-written"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: random)")
    parser.add_argument("--ci", action="store_true", help="the CI budget, not 20x")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    profile = "ci" if args.ci else "long"
    os.environ["CHARTER_FUZZ"] = profile  # read when tests/fuzz/fuzzing.py is first imported
    if "tests.fuzz.fuzzing" in sys.modules:
        raise SystemExit("bench.fuzz must run before the fuzz tests are imported")
    print(f"profile {profile}, seed {seed}; to reproduce a failure:", flush=True)
    print(f"  CHARTER_FUZZ={profile} python -m pytest tests/fuzz --hypothesis-seed={seed}")

    import pytest

    sys.path.insert(0, str(ROOT))
    start = time.perf_counter()
    status = pytest.main(
        [
            str(ROOT / "tests" / "fuzz"),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--hypothesis-seed={seed}",
            "-W",
            "ignore::hypothesis.errors.HypothesisWarning",
        ]
    )
    seconds = time.perf_counter() - start

    from tests.fuzz.fuzzing import TALLY

    width = max([len("target"), *map(len, TALLY)])
    header = f"{'target':<{width}}  " + "  ".join(f"{title:>12}" for _, title in COLUMNS)
    print(f"\n{header}\n{'-' * len(header)}")
    totals = {key: 0 for key, _ in COLUMNS}
    for target in sorted(TALLY):
        counts = TALLY[target]
        cells = "  ".join(f"{counts[key]:>12,}" for key, _ in COLUMNS)
        print(f"{target:<{width}}  {cells}")
        for key, _ in COLUMNS:
            totals[key] += counts[key]
    print("-" * len(header))
    print(f"{'total':<{width}}  " + "  ".join(f"{totals[key]:>12,}" for key, _ in COLUMNS))
    print(
        f"\n{totals['tried']:,} bad inputs in {seconds:.0f} s; tracebacks {totals['traceback']} "
        f"(must be 0), half-written files {totals['half_written']} (must be 0); "
        f"pytest exit status {int(status)}"
    )
    return 0 if status == 0 and not totals["traceback"] and not totals["half_written"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
