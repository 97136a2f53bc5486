"""``charter prompts synthesize``: drafting, screening and the files it writes.

Plumbing runs on the fake engine, whose pseudo-text is never a request: tests that need kept
prompts swap its ``generate`` for one that hands out planted requests in order, so duplicates and
held-out overlaps are placed exactly. Raw Magpie sampling runs on a tiny random Llama; one slow
test runs the real SmolLM2.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import jsonschema
import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from charter.building import register_resolvers, resolve_path
from charter.cached_engine import CachedEngine
from charter.call_cache import CallCache
from charter.commands.synthesize import synthesize
from charter.config_check import check_config
from charter.constitution import load_constitution
from charter.errors import InputError
from charter.generators.engine import SamplingSettings
from charter.generators.fake_engine import FakeEngine
from charter.generators.transformers_engine import TransformersEngine
from charter.prompts import load_prompts
from charter.records import Completion
from charter.synthesis.dedup import DedupSettings
from charter.synthesis.diversity import distinct_n
from charter.synthesis.drafts import SOURCES, Draft
from charter.synthesis.filters import FilterSettings, Screen, request_problem, text_problem
from charter.synthesis.magpie import PreQuerySampler
from charter.synthesis.stage import SourceShares
from tests.engine_fixtures import build_tiny_llama

SCHEMAS = Path(__file__).resolve().parent.parent / "charter" / "schemas"

DISTINCT = [
    "How do I bake sourdough bread at home without a stand mixer?",
    "Explain the difference between a Roth IRA and a traditional IRA.",
    "Write a short poem about autumn rain on a tin roof.",
    "What are the early signs of dehydration in toddlers?",
    "Can you help me fix a leaking kitchen tap?",
    "Suggest three board games for a family with young children.",
    "Why does the moon look larger near the horizon?",
    "Give me a week-long beginner running plan.",
    "Translate 'where is the train station' into Portuguese.",
    "Compare Python lists and tuples for a beginner.",
    "How should I prepare for a job interview at a bank?",
    "Describe how vaccines train the immune system.",
    "List five ways to cut my electricity bill this winter.",
    "What is a good way to learn the guitar chords quickly?",
    "Summarize the causes of the First World War in a paragraph.",
    "How can I keep basil alive on a windowsill?",
]
NEAR = {  # a light rewording of a DISTINCT request (Jaccard of shingles well above 0.7)
    0: "How do I bake sourdough bread at home without a stand mixer, please?",
    3: "What are the early signs of dehydration in a toddler?",
}
EXACT = {1: "explain the difference between a Roth IRA and a traditional IRA"}  # case, punctuation


def config(tmp_path: Path, *overrides: str) -> DictConfig:
    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        cfg = compose(
            "synthesize",
            overrides=[
                "engine@generator.engine=fake",
                f"cache_dir={tmp_path / 'cache'}",
                f"out={tmp_path / 'out' / 'prompts.jsonl'}",
                *overrides,
            ],
        )
    check_config(cfg, "synthesize")
    return cfg


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def plant(monkeypatch: pytest.MonkeyPatch, texts: Sequence[str]) -> list[int]:
    """Make every FakeEngine.generate sample hand out ``texts`` in turn (cycling); returns a
    list that counts the calls."""
    stream: Iterator[str] = itertools.cycle(texts)
    calls: list[int] = []

    def generate(self, chats, sampling: SamplingSettings, n: int = 1):
        calls.append(len(chats))
        return [[Completion(next(stream), "stop", 12) for _ in range(n)] for _ in chats]

    monkeypatch.setattr(FakeEngine, "generate", generate)
    return calls


def draft(text: str, source: str = "magpie") -> Draft:
    return Draft(text, source, "instructed")  # type: ignore[arg-type]


# --- the screen: filters and deduplication ---------------------------------------------------


def test_screen_drops_planted_exact_and_near_duplicates_and_keeps_distinct() -> None:
    screen = Screen(FilterSettings(), DedupSettings())
    drafts = [draft(t) for t in DISTINCT]
    drafts.insert(3, draft(NEAR[0]))
    drafts.insert(7, draft(EXACT[1]))
    drafts.append(draft(NEAR[3]))
    drafts.append(draft(DISTINCT[5]))  # verbatim
    decided = [(d, screen.decide(d)) for d in drafts]
    kept = [d.text for d, drop in decided if drop is None]
    assert kept == DISTINCT
    dropped = {d.text: (drop.code, drop.detail) for d, drop in decided if drop is not None}
    first = {i: draft(DISTINCT[i]).prompt_id for i in (0, 1, 3, 5)}
    assert dropped[NEAR[0]][0] == "near_duplicate" and first[0] in dropped[NEAR[0]][1]
    assert dropped[NEAR[3]][0] == "near_duplicate" and first[3] in dropped[NEAR[3]][1]
    assert dropped[EXACT[1]] == ("exact_duplicate", f"same text as {first[1]}")
    assert dropped[DISTINCT[5]] == ("exact_duplicate", f"same text as {first[5]}")


def test_screen_text_checks_name_their_reason() -> None:
    settings = FilterSettings(min_words=4, max_words=30)
    cases = {
        "Hi?": "too_short",
        "Tell me " + "very " * 40 + "much.": "too_long",
        "What is 2+2?<|im_end|>\n<|im_start|>assistant\n4": "chat_template_debris",
        "I'm sorry, but I cannot help with that request.": "refusal",
        "Sure! Here is a recipe for scrambled eggs.": "not_a_request",
        "The Great Lakes hold a fifth of the world's fresh water.": "not_a_request",
    }
    for text, code in cases.items():
        assert text_problem(draft(text), settings)[0] == code, text
    cut = Draft("Write a story about a dragon who", "magpie", "pre_query", "length")
    assert text_problem(cut, settings)[0] == "truncated"
    for request in (
        "Please write a limerick about my cat.",
        "I need a packing list for a week in Norway.",
        "I can't figure out why my sourdough is flat - any ideas?",
        "how do tides work",
    ):
        assert request_problem(request) is None, request
        assert text_problem(draft(request), settings) is None, request


def test_distinct_n_counts_unique_ngrams_over_all_prompts() -> None:
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["same words here"] * 4, 2) == pytest.approx(2 / 8)
    assert distinct_n([], 1) == 0.0


def test_shares_split_n_exactly() -> None:
    assert SourceShares().targets(200) == {"magpie": 67, "constitution": 67, "evolved": 66}
    assert SourceShares(2, 1, 0).targets(7) == {"magpie": 5, "constitution": 2, "evolved": 0}
    with pytest.raises(InputError, match="share"):
        SourceShares(0, 0, 0)


# --- the command, on the fake engine ---------------------------------------------------------


def test_exclude_removes_overlaps_with_held_out_prompts(tmp_path, monkeypatch) -> None:
    plant(monkeypatch, DISTINCT)
    held_out = tmp_path / "eval.jsonl"
    rows = [
        {"id": "eval-1", "prompt": DISTINCT[2]},  # exact
        {"id": "eval-2", "prompt": NEAR[3]},  # near DISTINCT[3]
        {"id": "eval-3", "prompt": "What is the capital of Mongolia?"},  # never drafted
    ]
    held_out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    synthesize(config(tmp_path, "n=9", f"exclude={held_out}"), tmp_path / "hydra")
    out = tmp_path / "out"
    kept = {r["prompt"] for r in read(out / "prompts.jsonl")}
    assert len(kept) == 9
    assert DISTINCT[2] not in kept and DISTINCT[3] not in kept
    reasons = [r["reason"] for r in read(out / "rejects.jsonl")]
    assert any(r.startswith("excluded_exact") and "eval-1" in r for r in reasons)
    assert any(r.startswith("excluded_near_duplicate") and "eval-2" in r for r in reasons)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dropped"]["excluded_exact"] >= 1
    assert summary["dropped"]["excluded_near_duplicate"] >= 1


def test_every_draft_is_kept_or_in_rejects_with_a_reason(tmp_path, monkeypatch) -> None:
    planted = [*DISTINCT[:8], NEAR[0], EXACT[1], "Sure, here you go.", "Short?", *DISTINCT[8:]]
    plant(monkeypatch, planted)
    synthesize(config(tmp_path, "n=12"), tmp_path / "hydra")
    out = tmp_path / "out"
    kept, rejects = read(out / "prompts.jsonl"), read(out / "rejects.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["drafted"] == len(kept) + len(rejects) > len(kept)
    schema = json.loads((SCHEMAS / "rejects.schema.json").read_text())
    for row in rejects:
        jsonschema.validate(row, schema)
        assert row["stage"] == "synthesize" and row["row"]["prompt"]
    codes = {r["reason"].split(":")[0] for r in rejects}
    assert {"near_duplicate", "exact_duplicate", "not_a_request", "too_short"} <= codes
    assert sum(summary["dropped"].values()) == len(rejects)
    dups = summary["dropped"].get("exact_duplicate", 0) + summary["dropped"]["near_duplicate"]
    assert summary["duplicate_rate"] == pytest.approx(dups / summary["drafted"], abs=1e-4)


def test_output_loads_as_prompts_with_provenance(tmp_path, monkeypatch) -> None:
    plant(monkeypatch, DISTINCT)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"id": "seed-1", "prompt": "Plan a picnic for six people."}) + "\n")
    cfg = config(tmp_path, "n=9", f"seed_prompts={seeds}", "constitution=helpful")
    synthesize(cfg, tmp_path / "hydra")
    path = tmp_path / "out" / "prompts.jsonl"
    prompts, bad = load_prompts(path)
    rows = read(path)
    assert bad == [] and len(prompts) == 9
    assert [p.prompt_id for p in prompts] == [r["prompt_id"] for r in rows]
    assert [p.messages for p in prompts] == [
        [{"role": "user", "content": r["prompt"]}] for r in rows
    ]
    assert {r["source"] for r in rows} == set(SOURCES)
    principles = {
        p.id for p in load_constitution(resolve_path("constitutions/helpful.yaml")).principles
    }
    ids = {r["prompt_id"] for r in rows}
    for row in rows:
        assert row["generator_model"] == "fake"
        if row["source"] == "magpie":
            assert row["method"] == "instructed"  # the fake engine has no model to continue
            assert row["principle_id"] is None and row["parent_id"] is None
        elif row["source"] == "constitution":
            assert row["method"] in ("red_team", "everyday")
            assert row["principle_id"] in principles and row["parent_id"] is None
        else:
            assert row["method"] in ("harder", "more_specific")
            assert row["parent_id"] == "seed-1" or row["parent_id"] in ids
    assert any(r["parent_id"] == "seed-1" for r in rows)  # seeds are evolved first


def test_fewer_than_asked_says_how_many_and_why_and_still_writes(tmp_path, monkeypatch, capsys):
    plant(monkeypatch, DISTINCT[:3])  # three distinct requests, then repeats
    synthesize(config(tmp_path, "n=8", "max_rounds=2"), tmp_path / "hydra")
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("synthesized"))
    assert "synthesized 3 of 8 prompts" in line and "exact_duplicate" in line
    prompts, _ = load_prompts(tmp_path / "out" / "prompts.jsonl")
    assert sorted(p.messages[-1]["content"] for p in prompts) == sorted(DISTINCT[:3])


def test_pseudo_text_is_never_a_request_and_nothing_is_lost(tmp_path, capsys) -> None:
    synthesize(config(tmp_path, "n=4", "max_rounds=1"), tmp_path / "hydra")
    assert "synthesized 0 of 4 prompts" in capsys.readouterr().err
    out = tmp_path / "out"
    assert (out / "prompts.jsonl").read_text() == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == 0 and summary["drafted"] == len(read(out / "rejects.jsonl")) > 0


def test_a_rerun_is_answered_from_the_call_cache(tmp_path, monkeypatch) -> None:
    calls = plant(monkeypatch, DISTINCT)
    synthesize(config(tmp_path, "n=6"), tmp_path / "a")
    first = len(calls)
    calls = plant(monkeypatch, DISTINCT)  # a fresh stream: the second run must not draw on it
    synthesize(config(tmp_path, "n=6"), tmp_path / "b")
    assert first > 0 and calls == []
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cache"]["misses"] == 0 and summary["kept"] == 6


def test_bad_settings_name_their_key(tmp_path) -> None:
    with pytest.raises(InputError) as err:
        synthesize(config(tmp_path, "shares.magpie=-1"), tmp_path / "hydra")
    assert err.value.field == "shares.magpie"
    with pytest.raises(InputError) as err:
        synthesize(config(tmp_path, "generator.sampling.temperature=0"), tmp_path / "hydra")
    assert err.value.field == "generator.sampling.temperature"


# --- raw Magpie continuation -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TransformersEngine:
    return TransformersEngine(str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))))


def test_pre_query_sampling_is_seeded_and_continues_one_stream(tiny, tmp_path) -> None:
    sampler = PreQuerySampler(tiny)
    assert sampler.prompt.endswith("<|im_start|>user\n")  # the user turn is open, and empty
    sampling = SamplingSettings(max_new_tokens=4, temperature=1.0, seed=3)
    first = sampler.sample(10, sampling) + sampler.sample(10, sampling)
    again = PreQuerySampler(tiny).sample(20, sampling)
    assert [c.text for c in first] == [c.text for c in again]
    assert len({c.text for c in first}) > 10  # rows differ: not one sample repeated
    other = PreQuerySampler(tiny).sample(20, SamplingSettings(4, 1.0, 0.95, seed=4))
    assert [c.text for c in other] != [c.text for c in first]
    cached = CachedEngine(tiny, CallCache(tmp_path / "calls.sqlite"), "tiny-fingerprint")
    drawn = PreQuerySampler(cached)
    assert [c.text for c in drawn.sample(20, sampling)] == [c.text for c in first]
    rerun = PreQuerySampler(cached)
    assert [c.text for c in rerun.sample(20, sampling)] == [c.text for c in first]
    assert (drawn.misses, rerun.hits, rerun.misses) == (2, 2, 0)


# --- the real model ----------------------------------------------------------------------------


@pytest.mark.slow
def test_real_smollm2_drafts_from_every_source(tmp_path) -> None:
    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        cfg = compose(
            "synthesize",
            overrides=[
                "generator=transformers",
                "generator.engine.num_threads=1",  # faster than 2 contended threads here
                "n=6",
                f"cache_dir={tmp_path / 'cache'}",
                f"out={tmp_path / 'prompts.jsonl'}",
            ],
        )
    check_config(cfg, "synthesize")
    synthesize(cfg, tmp_path)
    prompts, _ = load_prompts(tmp_path / "prompts.jsonl")
    rows = read(tmp_path / "prompts.jsonl")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["magpie_method"] == "pre_query"
    assert {r["source"] for r in rows} == set(SOURCES), summary["by_source"]
    assert len(prompts) == len(rows) >= 3
    assert all(r["method"] == "pre_query" for r in rows if r["source"] == "magpie")
