"""Generate and judge throughput: charter on vLLM vs bare ``vllm.LLM`` vs the transformers engine.

Generation: quickstart prompts, K samples each, through charter's generate stage
(:func:`generate_candidates`) on :class:`VLLMEngine`, and through a bare ``LLM.generate`` of the
very same token ids and sampling parameters on the same loaded model, so their ratio is charter's
overhead (goal <= 1.05); and the same stage on the transformers engine, for vLLM's speed-up.
Judging: the candidates charter just generated, paired as the judge stage pairs them, judged by
the pairwise log-prob judge (one scoring pass per order) and by the chain-of-thought judge (a
generated critique, then a scoring pass), on the same engine: their cost ratio per comparison.

Every repeat runs every path once, in turn, so all see the same machine load; the prefix cache is
emptied before each run; the table gives medians. vLLM runs in-process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so an idle engine process cannot take CPU from the
transformers runs.

CPU (the default): the embedded SmolLM2-135M in fp32. GPU (``--gpu``): a randomly initialised
model of a realistic size built from a config (``--random llama-1.2b`` by default; no large
weights can be brought to the GPU machine), bf16, every response run to a fixed length
(``ignore_eos``), so tokens/s can be held against the device's memory bandwidth (decode) and
FLOP/s (prefill). Its *labels* are noise; only its speed means anything.

    .venv-vllm/bin/python -m bench.engine_throughput [--prompts 16 --samples 4 --tokens 32]
    python -m bench.engine_throughput --gpu --prompts 256 --tokens 256 --judge-prompts 32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from charter.generators.engine import SamplingSettings
from charter.generators.stage import generate_candidates
from charter.records import PromptRecord

MODEL = "smollm2-135m-instruct"
CONSTITUTION = Path(__file__).resolve().parents[1] / "constitutions" / "harmless.yaml"
# Random-weight architectures of realistic sizes, with SmolLM2's tokenizer (49,152 tokens).
RANDOM_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny": (  # a CPU check that the random path works, not a benchmark
        "llama",
        dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=32),
    ),
    "qwen2-0.4b": (  # Qwen2.5-0.5B's body; the smaller vocabulary takes ~90M off
        "qwen2",
        dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
             num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    ),
    "llama-1.2b": (  # Llama-3.2-1B's body
        "llama",
        dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
             num_attention_heads=32, num_key_value_heads=8, head_dim=64,
             tie_word_embeddings=True),
    ),
}  # fmt: skip


def quickstart_prompts(limit: int) -> list[PromptRecord]:
    """The first ``limit`` bundled quickstart prompts (cycled if more are asked for)."""
    lines = (resources.files("charter.data") / "quickstart_prompts.jsonl").read_text()
    rows = [json.loads(line) for line in lines.splitlines() if line.strip()]
    picked = [rows[i % len(rows)] for i in range(limit)]
    return [
        PromptRecord(f"{r['id']}-{i}", [{"role": "user", "content": r["prompt"]}], f"bench:{i}")
        for i, r in enumerate(picked)
    ]


def build_random_model(shape: str, dest: Path, dtype: str) -> Path:
    """Save a randomly initialised ``shape`` model with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from charter.generators.model_files import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(MODEL)))
    kind, sizes = RANDOM_SHAPES[shape]
    config = AutoConfig.for_model(
        kind,
        **sizes,
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype=dtype,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=getattr(torch, dtype))
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    return dest


def parameter_count(folder: Path) -> int:
    """Parameters of the model in ``folder``, counted on the meta device (nothing loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(folder)))
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--judge-prompts", type=int, default=2, help="x K(K-1)/2 comparisons")
    parser.add_argument("--critique-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--gpu", action="store_true", help="bf16 on CUDA, random weights")
    parser.add_argument("--random", choices=sorted(RANDOM_SHAPES), default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    shape = args.random or ("llama-1.2b" if args.gpu else None)

    from vllm import SamplingParams

    from charter.constitution import load_constitution
    from charter.generators.model_files import resolve_model
    from charter.generators.rendering import render_chats, request_seed
    from charter.generators.vllm_engine import VLLMEngine
    from charter.judges.chain_of_thought import PairwiseCoTJudge
    from charter.judges.pairwise import PairwiseLogprobJudge
    from charter.judges.stage import build_comparisons

    dtype = "bfloat16" if args.gpu else "float32"
    scratch = tempfile.TemporaryDirectory(prefix="charter-bench-")
    folder = (
        build_random_model(shape, Path(scratch.name) / shape, dtype)
        if shape
        else resolve_model(MODEL)
    )
    model = str(folder) if shape else MODEL
    memory: dict[str, Any] = (
        {"gpu_memory_utilization": 0.85, "kv_cache_memory_gb": None}
        if args.gpu
        else {"kv_cache_memory_gb": 1}
    )
    start = time.perf_counter()
    engine = VLLMEngine(
        model,
        max_model_len=2048,
        dtype=dtype,
        enforce_eager=args.eager,
        ignore_eos=shape is not None,  # random weights: a fixed output length
        **memory,
    )
    startup = time.perf_counter() - start
    print(f"vLLM engine up in {startup:.0f} s", flush=True)
    prompts = quickstart_prompts(args.prompts)
    sampling = SamplingSettings(max_new_tokens=args.tokens, temperature=0.8, top_p=0.95, seed=0)

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
            stop_token_ids=[] if engine.ignore_eos else engine.stop_token_ids,
            ignore_eos=engine.ignore_eos,
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

    # Judge what charter generated: the judge stage's pairs of the first prompts' candidates.
    sets, _ = generate_candidates(
        prompts[: args.judge_prompts], engine, sampling, args.samples, chunk_size=10**6
    )
    comparisons, _ = build_comparisons(sets, load_constitution(CONSTITUTION), seed=0)

    def judge(j: Any) -> Callable[[], int]:
        return lambda: len(j.judge(comparisons))

    paths: dict[str, Callable[[], int]] = {
        "bare": bare,
        "charter_vllm": stage(engine),
        "judge_vllm": judge(PairwiseLogprobJudge(engine)),
        "cot_vllm": judge(PairwiseCoTJudge(engine, critique_tokens=args.critique_tokens)),
    }
    if not args.skip_transformers:
        from charter.generators.transformers_engine import TransformersEngine

        device = {"device": "cuda", "dtype": "bfloat16"} if args.gpu else {}
        reference = TransformersEngine(model, batch_size=32, **device)
        paths |= {
            "charter_tf": stage(reference),
            "judge_tf": judge(PairwiseLogprobJudge(reference)),
        }

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
    print_table(args, shape, folder, startup, comparisons, times, tokens)
    scratch.cleanup()


def print_table(
    args: argparse.Namespace,
    shape: str | None,
    folder: Path,
    startup: float,
    comparisons: list[Any],
    times: dict[str, list[float]],
    tokens: dict[str, int],
) -> None:
    """The medians, ratios and rates, with what was measured on what."""
    med = {name: statistics.median(t) for name, t in times.items()}
    tps = {n: tokens[n] / med[n] for n in ("bare", "charter_vllm", "charter_tf") if n in med}
    cmp = len(comparisons)
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
        speedup = tps["charter_vllm"] / tps["charter_tf"]
        rows.append(
            (
                "generate: charter stage on TransformersEngine",
                med["charter_tf"],
                f"{tps['charter_tf']:.0f} tok/s; vLLM x{speedup:.2f} in tok/s",
            )
        )
    for name, label, extra in (
        ("judge_vllm", "pairwise log-prob judge, VLLMEngine", ""),
        ("cot_vllm", "chain-of-thought judge, VLLMEngine", "cot"),
        ("judge_tf", "pairwise log-prob judge, TransformersEngine", "tf"),
    ):
        if name not in med:
            continue
        note = ""
        if extra == "cot":
            note = f"; x{med['cot_vllm'] / med['judge_vllm']:.1f} the pairwise cost"
        elif extra == "tf":
            note = f"; vLLM x{med['judge_tf'] / med['judge_vllm']:.2f}"
        rows.append(
            (
                f"judge: {label}",
                med[name],
                f"{cmp / med[name]:.2f} cmp/s; {1000 * med[name] / cmp:.0f} ms/cmp{note}",
            )
        )
    if tokens["charter_vllm"] != tokens["bare"]:
        print("note: charter and bare vLLM sampled different lengths; compare tok/s, not seconds")
    params = parameter_count(folder)
    dtype = "bf16" if args.gpu else "fp32"
    weights_gb = params * (2 if args.gpu else 4) / 1e9
    what = f"random-init {shape} (labels are noise; fixed output length)" if shape else MODEL
    device = "CPU"
    if args.gpu:
        import torch

        device = torch.cuda.get_device_name()
    print(
        f"\n{what}: {params / 1e6:.0f}M params, {dtype}, {weights_gb:.2f} GB of weights; "
        f"{device}; vLLM {'eager' if args.eager else 'compiled'}, start-up {startup:.0f} s\n"
        f"generate: {args.prompts} prompts x n={args.samples} x <= {args.tokens} tokens "
        f"({tokens['bare']} generated); judge: {cmp} comparisons x 2 orders, chain-of-thought "
        f"critiques <= {args.critique_tokens} tokens; median of {args.repeats} "
        f"({time.strftime('%Y-%m-%d')})"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'seconds':>8}  figures")
    for label, seconds, figures in rows:
        print(f"{label:<{width}}  {seconds:>8.2f}  {figures}")


if __name__ == "__main__":
    main()
