"""Time the judge's ``choice_logprobs`` with and without shared-prefix KV reuse on SmolLM2.

Builds the chats the pairwise judge sends for 8 quickstart prompts x 4 candidates (~45 words
each): all 6 pairs per prompt, both orders, 96 chats. One loaded engine scores them with
``share_prefixes`` off and on, interleaved, median of 3.

    .venv/bin/python -m bench.judge_prefix_sharing [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from importlib import resources
from pathlib import Path

import torch

from charter.constitution import load_constitution
from charter.generators.prefix_scoring import plan_segments
from charter.generators.transformers_engine import TransformersEngine
from charter.judges.pairwise import PairwiseLogprobJudge
from charter.judges.stage import build_comparisons
from charter.records import Candidate, CandidateSet, Chat

MODEL = "smollm2-135m-instruct"
CONSTITUTION = Path(__file__).resolve().parents[1] / "constitutions" / "helpful.yaml"
_SENTENCES = [
    "Here is a short answer that covers the main points you asked about.",
    "First, gather everything you need and read the steps once before you begin.",
    "The key idea is to keep things simple and check your work as you go.",
    "Most people find that a little preparation saves a lot of time later on.",
    "If anything is unclear, it is worth asking someone with more experience.",
    "Be careful with safety, and stop if something feels wrong or unexpected.",
    "In short, the process is easy once you have tried it a couple of times.",
    "You can adjust the amounts to taste, depending on what you have at home.",
    "Note that the details vary between sources, so treat this as a rough guide.",
    "A common mistake is rushing the last step, which tends to spoil the result.",
]


def judge_chats(num_prompts: int = 8, num_candidates: int = 4, words: int = 45) -> list[Chat]:
    """The judge chats for ``num_prompts`` quickstart prompts, all pairs, both orders."""
    rng = random.Random(0)
    lines = (resources.files("charter.data") / "quickstart_prompts.jsonl").read_text()
    prompts = [json.loads(line) for line in lines.splitlines()[:num_prompts]]
    sets = []
    for p in prompts:
        candidates = []
        for k in range(num_candidates):
            text: list[str] = []
            while len(text) < words:
                text.extend(rng.choice(_SENTENCES).split())
            candidates.append(
                Candidate(f"{p['id']}/{k}", " ".join(text[:words]) + ".", "stop", words)
            )
        messages = [{"role": "user", "content": p["prompt"]}]
        sets.append(CandidateSet(p["id"], messages, candidates, MODEL, {"seed": 0}))
    comparisons, _ = build_comparisons(sets, load_constitution(CONSTITUTION), seed=0)
    judge = PairwiseLogprobJudge(engine=_NoEngine())
    return [judge.chat(c, swapped=s) for c in comparisons for s in (False, True)]


class _NoEngine:
    """Enough of an engine for :meth:`PairwiseLogprobJudge.chat`, which never calls it."""

    model_id = "none"
    context_length = 0


def _timed(
    engine: TransformersEngine, chats: list[Chat], share: bool
) -> tuple[float, list[dict[str, float]]]:
    engine.share_prefixes = share
    start = time.perf_counter()
    scores = engine.choice_logprobs(chats, ["A", "B"])
    return time.perf_counter() - start, scores


def main(argv: list[str] | None = None) -> None:
    """Print both timings, their ratio and the largest score difference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = TransformersEngine(MODEL, batch_size=args.batch_size)
    chats = judge_chats()
    ids = [ids for _, ids in engine._render(chats)]
    segments = plan_segments(ids, [1] * len(ids), engine.min_shared_prefix)
    run = sum(len(s.tokens) for s in segments)
    total = sum(map(len, ids))
    print(f"{len(chats)} chats, {total / len(ids):.0f} tokens on average")
    print(f"shared prefixes leave {run} of {total} tokens to run ({run / total:.0%})")
    times: dict[str, list[float]] = {"unshared": [], "shared": []}
    results = {}
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        for name in times:
            seconds, results[name] = _timed(engine, chats, share=name == "shared")
            times[name].append(seconds)
            print(f"{name:>8}: {seconds:.2f} s", flush=True)
    worst = max(
        abs(s[c] - u[c])
        for s, u in zip(results["shared"], results["unshared"], strict=True)
        for c in s
    )
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:>8}: median {med[name]:.2f} s  ({', '.join(f'{x:.2f}' for x in t)})")
    print(f"speed-up: {med['unshared'] / med['shared']:.2f}x; max |dlogp| = {worst:.2e}")


if __name__ == "__main__":
    main()
