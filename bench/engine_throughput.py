"""Generate and judge throughput: charter on vLLM vs bare ``vllm.LLM`` vs the transformers engine.

Generation: the quickstart prompts, K samples each, through charter's generate stage
(:func:`generate_candidates`) on :class:`VLLMEngine`, and through a bare ``LLM.generate`` of the
very same token ids and sampling parameters on the same loaded model, so their ratio is charter's
overhead (goal <= 1.05); and the same stage on the transformers engine, for vLLM's speed-up.
Judging: the pairwise judge's chats (all pairs of 4 candidates, both orders) scored with
``choice_logprobs`` on both engines.

Every repeat runs every path once, in turn, so all see the same machine load; the prefix cache is
emptied before each run; the table gives medians. vLLM runs in-process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so an idle engine process cannot take CPU from the
transformers runs.

    .venv-vllm/bin/python -m bench.engine_throughput [--prompts 32 --samples 4 --tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from charter.generators.engine import SamplingSettings
from charter.generators.stage import generate_candidates
from charter.records import PromptRecord

MODEL = "smollm2-135m-instruct"


def quickstart_prompts(limit: int) -> list[PromptRecord]:
    """The first ``limit`` bundled quickstart prompts (cycled if more are asked for)."""
    lines = (resources.files("charter.data") / "quickstart_prompts.jsonl").read_text()
    rows = [json.loads(line) for line in lines.splitlines() if line.strip()]
    picked = [rows[i % len(rows)] for i in range(limit)]
    return [
        PromptRecord(f"{r['id']}-{i}", [{"role": "user", "content": r["prompt"]}], f"bench:{i}")
        for i, r in enumerate(picked)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--judge-prompts", type=int, default=8, help="x 6 pairs x 2 orders")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile")
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    from vllm import SamplingParams

    from bench.judge_prefix_sharing import judge_chats
    from charter.generators.rendering import render_chats, request_seed
    from charter.generators.vllm_engine import VLLMEngine

    start = time.perf_counter()
    engine = VLLMEngine(
        MODEL, max_model_len=2048, dtype="float32", kv_cache_memory_gb=1, enforce_eager=args.eager
    )
    startup = time.perf_counter() - start
    print(f"vLLM engine up in {startup:.0f} s", flush=True)
    prompts = quickstart_prompts(args.prompts)
    sampling = SamplingSettings(max_new_tokens=args.tokens, temperature=0.8, top_p=0.95, seed=0)
    chats = judge_chats(num_prompts=args.judge_prompts)
    comparisons = len(chats) // 2

    # The bare run gets exactly what VLLMEngine.generate sends: the same ids and parameters.
    rendered = render_chats(engine.tokenizer, [p.messages for p in prompts], None)
    bare_prompts = [{"prompt_token_ids": ids} for _, ids in rendered]
    bare_params = [
        SamplingParams(
            n=args.samples,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=request_seed(sampling.seed, ids),
            stop_token_ids=engine.stop_token_ids,
        )
        for _, ids in rendered
    ]

    def bare() -> int:
        outs = engine.llm.generate(bare_prompts, bare_params, use_tqdm=False)
        return sum(len(o.token_ids) for out in outs for o in out.outputs)

    def stage(e: Any) -> Callable[[], int]:
        def run() -> int:
            sets, _ = generate_candidates(prompts, e, sampling, args.samples, chunk_size=10**6)
            return sum(c.num_tokens for s in sets for c in s.candidates)

        return run

    def judge(e: Any) -> Callable[[], int]:
        return lambda: len(e.choice_logprobs(chats, ["A", "B"]))

    paths: dict[str, Callable[[], int]] = {
        "bare": bare,
        "charter_vllm": stage(engine),
        "judge_vllm": judge(engine),
    }
    params = None
    if not args.skip_transformers:
        from charter.generators.transformers_engine import TransformersEngine

        reference = TransformersEngine(MODEL, batch_size=32)
        params = sum(p.numel() for p in reference.model.parameters())
        paths |= {"charter_tf": stage(reference), "judge_tf": judge(reference)}

    bare(), paths["judge_vllm"]()  # warm-up: vLLM's first calls pay one-off costs
    times: dict[str, list[float]] = {name: [] for name in paths}
    tokens: dict[str, int] = {}
    for r in range(args.repeats):
        for name, run in paths.items():
            engine.llm.reset_prefix_cache()
            start = time.perf_counter()
            tokens[name] = run()
            times[name].append(time.perf_counter() - start)
            print(f"repeat {r + 1}: {name} {times[name][-1]:.1f} s", flush=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    tps = {name: tokens[name] / med[name] for name in ("bare", "charter_vllm", "charter_tf")
           if name in med}  # fmt: skip

    rows = [
        ("generate: bare vllm.LLM.generate", med["bare"], f"{tps['bare']:.0f} tok/s"),
        (
            "generate: charter stage on VLLMEngine",
            med["charter_vllm"],
            f"{tps['charter_vllm']:.0f} tok/s; overhead x{med['charter_vllm'] / med['bare']:.3f} "
            "(goal <= 1.05)",
        ),
    ]
    if "charter_tf" in med:
        rows.append(
            (
                "generate: charter stage on TransformersEngine",
                med["charter_tf"],
                f"{tps['charter_tf']:.0f} tok/s; "
                f"vLLM x{tps['charter_vllm'] / tps['charter_tf']:.2f} in tok/s",
            )
        )
    for name, label in (("judge_vllm", "VLLMEngine"), ("judge_tf", "TransformersEngine")):
        if name in med:
            extra = (
                f"; vLLM x{med['judge_tf'] / med['judge_vllm']:.2f}" if name == "judge_tf" else ""
            )
            rows.append(
                (
                    f"judge: {label}, {comparisons} comparisons x 2 orders",
                    med[name],
                    f"{comparisons / med[name]:.2f} cmp/s; "
                    f"{1000 * med[name] / comparisons:.0f} ms/cmp{extra}",
                )
            )
    if tokens["charter_vllm"] != tokens["bare"]:
        print("note: charter and bare vLLM sampled different lengths; compare tok/s, not seconds")
    size = f"{params / 1e6:.0f}M params, " if params else ""
    print(
        f"\n{MODEL} ({size}fp32, vLLM {'eager' if args.eager else 'compiled'}, start-up "
        f"{startup:.0f} s); generate: {args.prompts} prompts x n={args.samples} x <= "
        f"{args.tokens} tokens ({tokens['bare']} generated); median of {args.repeats}"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'seconds':>8}  figures")
    for what, seconds, figures in rows:
        print(f"{what:<{width}}  {seconds:>8.2f}  {figures}")


if __name__ == "__main__":
    main()
