"""Tournament (merge sort) and knockout ranking against all pairs: comparisons, seconds, agreement.

Samples K responses for a few quickstart prompts once, then judges the same candidates with every
scheme and the same judge, rotating which goes first in each repeat, with the call cache off. It
prints the comparison and time ratios, how often each scheme picks the same best and worst
candidate as all pairs, and Kendall's tau between their orders (1 = identical rankings).

    .venv/bin/python -m bench.ranking_cost [--prompts 4] [--samples 4 8 16] [--engine fake]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

from charter.constitution import load_constitution
from charter.generators.engine import SamplingSettings
from charter.generators.fake_engine import FakeEngine
from charter.generators.stage import generate_candidates
from charter.generators.transformers_engine import TransformersEngine
from charter.judges.pairwise import PairwiseLogprobJudge
from charter.judges.stage import judge_candidates
from charter.prompts import load_prompts

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "charter" / "data" / "quickstart_prompts.jsonl"
CONSTITUTION = ROOT / "constitutions" / "harmless.yaml"


def kendall_tau(x: list[str], y: list[str]) -> float:
    """Rank correlation of two orders of the same items."""
    pos_x = {c: i for i, c in enumerate(x)}
    pos_y = {c: i for i, c in enumerate(y)}
    pairs = list(itertools.combinations(x, 2))
    if not pairs:
        return 1.0
    concordant = sum((pos_x[a] - pos_x[b]) * (pos_y[a] - pos_y[b]) > 0 for a, b in pairs)
    return (2 * concordant - len(pairs)) / len(pairs)


SCHEMES = ("all_pairs", "tournament", "knockout")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--engine", choices=("real", "fake"), default="real")
    args = parser.parse_args(argv)
    engine = (
        FakeEngine()
        if args.engine == "fake"
        else TransformersEngine("smollm2-135m-instruct", batch_size=32)
    )
    judge = PairwiseLogprobJudge(engine)
    constitution = load_constitution(CONSTITUTION)
    prompts, _ = load_prompts(PROMPTS, limit=args.prompts)
    print(f"engine: {args.engine}; {args.prompts} prompts; judge: pairwise, both orders")
    print("against all pairs: comparisons, median seconds, and how often the scheme picks the")
    print("same best and worst candidate; Kendall tau of the whole order (knockout orders only")
    print("its two ends, so its tau is not comparable)")
    print("K | scheme | comparisons | ratio | seconds | ratio | same best | same worst | tau")
    for k in args.samples:
        sampling = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=0.8, seed=0)
        sets, _ = generate_candidates(prompts, engine, sampling, k)
        seconds: dict[str, list[float]] = {s: [] for s in SCHEMES}
        results = {}
        for rep in range(args.repeats):
            order = SCHEMES[rep % len(SCHEMES) :] + SCHEMES[: rep % len(SCHEMES)]  # rotate
            for scheme in order:
                start = time.perf_counter()
                results[scheme] = judge_candidates(
                    sets, judge, constitution, seed=0, ranking=scheme
                )
                seconds[scheme].append(time.perf_counter() - start)
        n_all = len(results["all_pairs"][0])
        t_all = statistics.median(seconds["all_pairs"])
        for scheme in SCHEMES:
            n = len(results[scheme][0])
            t = statistics.median(seconds[scheme])
            orders = [
                (a.order, b.order)
                for a, b in zip(results["all_pairs"][1], results[scheme][1], strict=True)
            ]
            same_best = sum(a[0] == b[0] for a, b in orders) / len(orders)
            same_worst = sum(a[-1] == b[-1] for a, b in orders) / len(orders)
            tau = statistics.mean(kendall_tau(a, b) for a, b in orders)
            print(
                f"{k} | {scheme} | {n} | {n / n_all:.2f} | {t:.2f} | {t / t_all:.2f} "
                f"| {same_best:.2f} | {same_worst:.2f} | {tau:.2f}"
            )


if __name__ == "__main__":
    main()
