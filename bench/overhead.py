"""charter's own cost per comparison, against a floor that makes only the engine calls.

A fake engine (no model: its answers are hashes) stands in for a fast GPU, so what is left is
charter's Python: reading, rendering judge prompts, the call cache (on, fresh each repeat),
checking and writing rows. The floor replays the very engine calls of a run (recorded once) on
the bare fake engine, with nothing around them. Each repeat runs both, side by side; medians.

    .venv/bin/python -m bench overhead [--prompts 10000] [--repeats 3] [--before DIR]

``--before DIR`` also runs an older checkout of charter (e.g. ``git worktree add DIR <commit>``)
in the same repeats, for the before/after figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.scale_runs import fake_run, write_prompts
from charter.constitution import load_constitution
from charter.generators.engine import SamplingSettings
from charter.generators.fake_engine import FakeEngine
from charter.generators.stage import generate_candidates
from charter.judges.pairwise import PairwiseLogprobJudge
from charter.judges.stage import judge_candidates
from charter.prompts import load_prompts

ROOT = Path(__file__).resolve().parents[1]


class Recorder(FakeEngine):
    """The fake engine, keeping every call's arguments for the floor to replay."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list, object]] = []

    def generate(self, chats, sampling, n=1):
        self.calls.append(("generate", list(chats), (sampling, n)))
        return super().generate(chats, sampling, n)

    def choice_logprobs(self, chats, choices):
        self.calls.append(("choice_logprobs", list(chats), list(choices)))
        return super().choice_logprobs(chats, choices)

    def count_tokens(self, chats):
        # the judge's context check asks the engine (a tokenizer, for a real one) too
        self.calls.append(("count_tokens", list(chats), None))
        return super().count_tokens(chats)


def record_calls(prompts_path: Path, samples: int, chunk: int) -> list:
    """The engine calls of a default run (harmless constitution, all pairs), in order."""
    engine = Recorder()
    prompts, _ = load_prompts(prompts_path)
    sampling = SamplingSettings(max_new_tokens=64, temperature=0.8, top_p=0.95, seed=0)
    sets, _ = generate_candidates(prompts, engine, sampling, samples, chunk_size=chunk)
    constitution = load_constitution(ROOT / "constitutions" / "harmless.yaml")
    judge_candidates(sets, PairwiseLogprobJudge(engine), constitution, seed=0, chunk_size=chunk)
    return engine.calls


def floor_seconds(calls: list) -> dict[str, float]:
    """Seconds the bare fake engine takes for the recorded calls: generating, and judging (its
    choice scores and the token counts of the context check)."""
    bare = FakeEngine()
    spent = {"generate": 0.0, "judge": 0.0}
    for kind, chats, extra in calls:
        start = time.perf_counter()
        if kind == "generate":
            bare.generate(chats, *extra)
        elif kind == "choice_logprobs":
            bare.choice_logprobs(chats, extra)
        else:
            bare.count_tokens(chats)
        spent["generate" if kind == "generate" else "judge"] += time.perf_counter() - start
    return spent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="charter-overhead-") as tmp:
        work = Path(tmp)
        prompts = write_prompts(work / "prompts.jsonl", args.prompts)
        calls = record_calls(prompts, args.samples, 32)
        versions = {"now": ROOT} | ({"before": args.before} if args.before else {})
        judge_s: dict[str, list[float]] = {v: [] for v in versions}
        total_s: dict[str, list[float]] = {v: [] for v in versions}
        floor: list[float] = []
        judge_floor_s: list[float] = []
        comparisons = 0
        for rep in range(args.repeats):
            spent = floor_seconds(calls)
            floor.append(spent["generate"] + spent["judge"])
            judge_floor_s.append(spent["judge"])
            for version, code in versions.items():
                run = fake_run(prompts, work, f"{version}-{rep}", code=code, samples=args.samples)
                comparisons = run.summary["judge"]["comparisons"]
                judge_s[version].append(run.summary["judge"]["seconds"])
                total_s[version].append(run.summary["run"]["seconds"])
        all_floor, judge_floor = statistics.median(floor), statistics.median(judge_floor_s)
        print(
            f"{args.prompts} prompts x K={args.samples} (fake engine, call cache on): "
            f"{comparisons} comparisons, each in both orders; medians of {args.repeats}"
        )
        print(
            f"floor (the same engine calls, bare): {all_floor:.1f} s for generate + judge, "
            f"{judge_floor:.1f} s of it judging (choice scores and token counts)"
        )
        print(
            "version | judge stage s | comparisons/s | charter's own us per comparison "
            "(judge stage - its floor) | whole run s | run / floor"
        )
        for version in versions:
            j, t = statistics.median(judge_s[version]), statistics.median(total_s[version])
            own = statistics.median(
                (a - b) / comparisons * 1e6
                for a, b in zip(judge_s[version], judge_floor_s, strict=True)
            )
            print(
                f"{version} | {j:.1f} | {comparisons / j:,.0f} | {own:.0f} | {t:.1f}"
                f" | {t / all_floor:.1f}x"
            )
        if args.before:
            now = statistics.median(total_s["now"])
            then = statistics.median(total_s["before"])
            print(f"whole run, before / now: {then / now:.1f}x faster now")


if __name__ == "__main__":
    main()
