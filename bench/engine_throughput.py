"""Generate and judge throughput: charter on vLLM vs bare ``vllm.LLM`` vs the transformers engine.

Generation: the quickstart prompts, K samples each, through charter's generate stage
(:func:`generate_candidates`) on :class:`VLLMEngine`, and through a bare ``LLM.generate`` of the
very same token ids and sampling parameters on the same loaded model, so their ratio is charter's
overhead (goal <= 1.05); then the transformers engine on the same stage for the speed-up.
Judging: the pairwise judge's chats (all pairs of 4 candidates, both orders) scored with
``choice_logprobs`` on both engines. Runs are interleaved, the prefix cache is emptied before
each, and the table gives medians of ``--repeats``.

    .venv-vllm/bin/python -m bench.engine_throughput [--prompts 32 --samples 4 --tokens 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from importlib import resources

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


def timed(fn: Callable[[], object], before: Callable[[], object] = lambda: None) -> float:
    """Seconds one call of ``fn`` takes, after ``before`` (not timed)."""
    before()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn: Callable[[], object], repeats: int, before: Callable[[], object]) -> float:
    return statistics.median(timed(fn, before) for _ in range(repeats))


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

    from bench.judge_prefix_sharing import judge_chats
    from charter.generators.vllm_engine import VLLMEngine

    start = time.perf_counter()
    engine = VLLMEngine(
        MODEL, max_model_len=2048, dtype="float32", kv_cache_memory_gb=1, enforce_eager=args.eager
    )
    startup = time.perf_counter() - start
    prompts = quickstart_prompts(args.prompts)
    sampling = SamplingSettings(max_new_tokens=args.tokens, temperature=0.8, top_p=0.95, seed=0)
    reset = engine.llm.reset_prefix_cache

    # The bare run gets exactly what VLLMEngine.generate would send: same ids, same params.
    from vllm import SamplingParams

    from charter.generators.rendering import render_chats, request_seed

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

    def charter_stage(e: object) -> int:
        sets, _ = generate_candidates(prompts, e, sampling, args.samples, chunk_size=len(prompts))
        return sum(c.num_tokens for s in sets for c in s.candidates)

    reset()
    tokens = bare()  # also the warm-up: first calls pay one-off costs
    reset()
    if charter_stage(engine) != tokens:  # same ids, params and seeds: the same samples
        print("warning: charter and bare vLLM sampled different lengths; ratio is approximate")
    rows: list[tuple[str, float, str]] = []
    bare_s, charter_s = [], []
    for _ in range(args.repeats):  # interleaved: both paths see the same machine load
        bare_s.append(timed(bare, reset))
        charter_s.append(timed(lambda: charter_stage(engine), reset))
    t_bare, t_charter = statistics.median(bare_s), statistics.median(charter_s)
    rows.append(("generate: bare vllm.LLM.generate", t_bare, f"{tokens / t_bare:.0f} tok/s"))
    rows.append(
        (
            "generate: charter stage on VLLMEngine",
            t_charter,
            f"{tokens / t_charter:.0f} tok/s; overhead x{t_charter / t_bare:.3f} (goal <= 1.05)",
        )
    )

    chats = judge_chats(num_prompts=args.judge_prompts)
    comparisons = len(chats) // 2

    def judge_vllm() -> None:
        engine.choice_logprobs(chats, ["A", "B"])

    judge_vllm()  # warm-up
    t_judge = median_time(judge_vllm, args.repeats, reset)
    rows.append(
        (
            f"judge: VLLMEngine, {comparisons} comparisons x 2 orders",
            t_judge,
            f"{comparisons / t_judge:.2f} cmp/s; {1000 * t_judge / comparisons:.0f} ms/cmp",
        )
    )

    params = None
    if not args.skip_transformers:
        from charter.generators.transformers_engine import TransformersEngine

        reference = TransformersEngine(MODEL, batch_size=32)
        params = sum(p.numel() for p in reference.model.parameters())
        tf_tokens = charter_stage(reference)  # also the warm-up
        t_tf = median_time(lambda: charter_stage(reference), args.repeats, lambda: None)
        rows.append(
            (
                "generate: charter stage on TransformersEngine",
                t_tf,
                f"{tf_tokens / t_tf:.0f} tok/s; vLLM speed-up "
                f"x{(tokens / t_charter) / (tf_tokens / t_tf):.2f} in tok/s",
            )
        )

        def judge_tf() -> None:
            reference.choice_logprobs(chats, ["A", "B"])

        t_judge_tf = median_time(judge_tf, args.repeats, lambda: None)
        rows.append(
            (
                "judge: TransformersEngine, same chats",
                t_judge_tf,
                f"{comparisons / t_judge_tf:.2f} cmp/s; "
                f"{1000 * t_judge_tf / comparisons:.0f} ms/cmp; vLLM x{t_judge_tf / t_judge:.2f}",
            )
        )

    size = f"{params / 1e6:.0f}M params, " if params else ""
    print(
        f"\n{MODEL} ({size}fp32, {'eager' if args.eager else 'compiled'}); vLLM start-up "
        f"{startup:.0f} s; generate: {args.prompts} prompts x n={args.samples} x <= "
        f"{args.tokens} tokens ({tokens} generated); median of {args.repeats}"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'seconds':>8}  figures")
    for what, seconds, figures in rows:
        print(f"{what:<{width}}  {seconds:>8.2f}  {figures}")


if __name__ == "__main__":
    main()
