"""``charter audit``: the held-out check, the files it writes, what it refuses and parses.

The engineered case: a fake judge whose verdict depends only on a marker word per principle.
Under the constitution it prefers the reply with "shiny", which people rejected on half the
pairs. Candidate X prefers "xmark", placed with people's choice on every held-in pair and against
it on every held-out pair (it fits only the held-in split); candidate Y prefers "ymark", placed
with people's choice on every disagreement and against it on a few held-in agreements (so X ranks
first held-in). Only Y may be picked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from charter.audit.disagreements import is_held_out
from charter.audit.labelled import load_labelled
from charter.audit.propose import Proposal, ProposalSettings, candidates_from, parse_principles
from charter.audit.score import ScoreSettings
from charter.building import build, register_resolvers
from charter.commands.audit import audit
from charter.config_check import check_config
from charter.constitution import load_constitution, validate_constitution
from charter.errors import InputError
from charter.generators import fake_engine
from charter.generators.fake_engine import FakeEngine
from charter.records import Chat, Completion

ROOT = Path(__file__).resolve().parents[1]
N_PAIRS = 60
SEED = 0
FRACTION = 0.3

CONSTITUTION = """\
name: test
version: "1"
description: Two principles that both prefer the shiny reply.
principles:
  # the first principle
  - id: p-one
    comparison: Which response is better (BASE one)?
    critique_request: Critique it.
    revision_request: Revise it.

  - id: p-two
    comparison: Which response is better (BASE two)?
    critique_request: Critique it.
    revision_request: Revise it.
"""

ONLY_HELD_IN = """Here is my principle:
```yaml
id: only-fits-held-in
comparison: Which response has the XQ quality?
critique_request: Point out where the response lacks the XQ quality.
revision_request: Rewrite the response so that it has the XQ quality.
```
"""
HELPS_EVERYWHERE = (
    'Sure. {"id": "helps-everywhere", "comparison": "Which response has the YQ quality?", '
    '"critique_request": "Point out where it lacks YQ.", '
    '"revision_request": "Rewrite it to have YQ."} Hope this helps!'
)
UNKNOWN_KEY = """id: bad-key
comparison: Which response is kinder?
descripton: a typo the schema refuses
critique_request: Point out unkindness.
revision_request: Rewrite it kindly.
"""
REPEATS_X = ONLY_HELD_IN.replace("only-fits-held-in", "x-again")
PROPOSALS = (ONLY_HELD_IN, HELPS_EVERYWHERE, UNKNOWN_KEY, REPEATS_X)


def _response(chat: Chat, tag: str) -> str:
    found = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", chat[1]["content"], re.DOTALL)
    assert found, "the judge template changed its response tags"
    return found.group(1)


def marker_score(chat: Chat, choice: str) -> float:
    """Prefer the response with the principle's marker; no marker or both: a tie."""
    question = chat[1]["content"].splitlines()[0]
    marker = "xmark" if "XQ" in question else "ymark" if "YQ" in question else "shiny"
    has = {letter: marker in _response(chat, f"response_{letter}") for letter in "AB"}
    if has["A"] == has["B"]:
        return 0.0
    return 3.0 if has[choice] else 0.0


def _pair(i: int, *, disagreement: bool) -> dict:
    held_out = is_held_out(f"pair-{i:03d}", SEED, FRACTION)
    chosen, rejected = [f"<<c{i:03d}>>"], [f"<<r{i:03d}>>"]
    (rejected if disagreement else chosen).append("shiny")
    (rejected if held_out else chosen).append("xmark")
    y_against = not disagreement and not held_out and i % 4 == 1
    (rejected if y_against else chosen).append("ymark")
    return {
        "id": f"pair-{i:03d}",
        "prompt": f"question {i}",
        "chosen": " ".join(chosen),
        "rejected": " ".join(rejected),
    }


def _write_data(path: Path, *, disagreements: bool) -> Path:
    rows = [_pair(i, disagreement=disagreements and i % 2 == 0) for i in range(N_PAIRS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(*overrides: str) -> DictConfig:
    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        return compose("audit", overrides=["engine@judge.engine=fake", *overrides])


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> list[Chat]:
    """The fake engine judges by marker and proposes PROPOSALS in turn; returns the proposer's
    chats."""
    seen: list[Chat] = []

    def generate(self, chats: Sequence[Chat], sampling, n: int = 1) -> list[list[Completion]]:
        out = []
        for chat in chats:
            start = len(seen) * n
            seen.append(chat)
            texts = [PROPOSALS[(start + k) % len(PROPOSALS)] for k in range(n)]
            out.append([Completion(t, "stop", len(t.split())) for t in texts])
        return out

    monkeypatch.setattr(fake_engine, "hash_score", marker_score)
    monkeypatch.setattr(FakeEngine, "generate", generate)
    return seen


def _run(tmp_path: Path, *, disagreements: bool = True, extra: Sequence[str] = ()) -> Path:
    constitution = tmp_path / "mine.yaml"
    constitution.write_text(CONSTITUTION)
    data = _write_data(tmp_path / "labels.jsonl", disagreements=disagreements)
    out = tmp_path / "out"
    out.mkdir()
    cfg = config(
        f"data={data}",
        f"constitution.path={constitution}",
        f"cache_dir={tmp_path / 'cache'}",
        f"seed={SEED}",
        f"scoring.held_out_fraction={FRACTION}",
        "proposal.candidates=4",
        "proposal.per_call=2",
        "proposal.prefill=''",
        "scoring.top_k=2",
        *extra,
    )
    audit(cfg, out)
    return out


def test_held_out_check_vetoes_a_candidate_that_only_fits_held_in(tmp_path, scripted):
    out = _run(tmp_path)
    result = json.loads((out / "audit.json").read_text())
    ranking = {f["id"]: f for f in result["ranking"]}
    x, y = ranking["only-fits-held-in"], ranking["helps-everywhere"]
    # X is the better fit held-in, and both are checked on the held-out split ...
    assert result["best_by_held_in"] == "only-fits-held-in"
    assert x["held_in"]["add"]["gain"]["value"] > y["held_in"]["add"]["gain"]["value"] > 0
    assert result["shortlist"] == ["only-fits-held-in", "helps-everywhere"]
    # ... where X loses agreement and Y gains it with its whole interval above 0
    assert x["held_out"]["add"]["gain"]["value"] < 0
    assert y["held_out"]["add"]["gain"]["low"] > 0
    assert result["selected"] == "helps-everywhere"
    assert not x["selected"] and y["selected"]


def test_proposer_never_sees_a_held_out_pair(tmp_path, scripted):
    _run(tmp_path)
    shown = " ".join(m["content"] for chat in scripted for m in chat)
    ids = [f"pair-{i:03d}" for i in range(N_PAIRS)]
    held_out = [int(i[-3:]) for i in ids if is_held_out(i, SEED, FRACTION)]
    assert scripted and held_out
    for i in held_out:
        assert f"<<c{i:03d}>>" not in shown and f"<<r{i:03d}>>" not in shown
    held_in_wrong = [i for i in range(0, N_PAIRS, 2) if i not in held_out]
    assert any(f"<<c{i:03d}>>" in shown for i in held_in_wrong)


def test_proposed_yaml_validates_and_the_users_file_is_untouched(tmp_path, scripted):
    out = _run(tmp_path)
    assert (tmp_path / "mine.yaml").read_text() == CONSTITUTION
    assert validate_constitution(out / "proposed.yaml") == []
    proposed = load_constitution(out / "proposed.yaml")
    assert [p.id for p in proposed.principles] == ["p-one", "p-two", "helps-everywhere"]
    assert "# the first principle" in (out / "proposed.yaml").read_text()  # comments kept
    diff = (out / "proposed.diff").read_text()
    assert "+  - id: helps-everywhere" in diff
    assert not [line for line in diff.splitlines() if line.startswith("-") and line[:3] != "---"]


def test_bad_and_repeated_candidates_go_to_rejects_with_reasons(tmp_path, scripted):
    out = _run(tmp_path)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    reasons = {r["row"]["parsed"]["id"]: r["reason"] for r in rejects if "parsed" in r["row"]}
    assert "descripton" in reasons["bad-key"] and "not a valid principle" in reasons["bad-key"]
    assert "same question as candidate 'only-fits-held-in'" in reasons["x-again"]
    result = json.loads((out / "audit.json").read_text())
    assert (result["proposals"], result["candidates"], result["rejected"]) == (4, 2, 2)


def test_no_disagreements_is_one_line_and_no_proposal(tmp_path, scripted, capsys):
    out = _run(tmp_path, disagreements=False)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "no disagreements" in printed[0]
    assert not scripted  # the proposer was never asked
    assert not (out / "proposed.yaml").exists()


def test_held_out_check_positive_is_looser_than_interval(tmp_path, scripted):
    out = _run(tmp_path, extra=["scoring.held_out_check=positive"])
    assert json.loads((out / "audit.json").read_text())["selected"] == "helps-everywhere"


def test_split_is_a_stable_hash_of_the_id():
    ids = [f"row-{i}" for i in range(2000)]
    first = [is_held_out(i, 7, 0.25) for i in ids]
    assert first == [is_held_out(i, 7, 0.25) for i in reversed(ids)][::-1]
    assert 0.2 < sum(first) / len(first) < 0.3
    assert first != [is_held_out(i, 8, 0.25) for i in ids]  # the seed moves it


@pytest.mark.parametrize(
    "text",
    [
        "```yaml\nid: a-b\ncomparison: Which?\ncritique_request: c\nrevision_request: r\n```",
        'I think {"id": "a-b", "comparison": "Which?", "critique_request": "c", '
        '"revision_request": "r"} works.',
        "- id: a-b\n  comparison: Which?\n  critique_request: c\n  revision_request: r\n",
        "principles:\n  - id: a-b\n    comparison: Which?\n    critique_request: c\n"
        "    revision_request: r\n",
        "id: a-b\ncomparison: Which?\ncritique_request: c\nrevision_request: r\n\nThis principle "
        "matters because: it does.",
        "```yaml\nid: a-b\ncomparison: Which?\ncritique_request: c\nrevision_request: r",
    ],
)
def test_parse_principles_reads_the_forms_models_write(text):
    [found] = parse_principles(text)
    assert found == {
        "id": "a-b",
        "comparison": "Which?",
        "critique_request": "c",
        "revision_request": "r",
    }


def test_unparseable_and_colliding_proposals():
    constitution = load_constitution(ROOT / "constitutions" / "helpful.yaml")
    texts = [
        "I cannot think of a principle.",
        "id: concise\ncomparison: Which reply is warmer?\ncritique_request: c\nrevision_request: r",
        "id: Not An Id\ncomparison: Which?\ncritique_request: c\nrevision_request: r",
    ]
    proposals = [Proposal(0, k, t, ()) for k, t in enumerate(texts)]
    candidates, rejects = candidates_from(proposals, constitution, weight=1.0)
    assert [c.principle.id for c in candidates] == ["concise-2"]  # an existing id is renamed
    assert "no principle in YAML or JSON form" in rejects[0].reason
    assert "id" in rejects[1].reason and "not a valid principle" in rejects[1].reason


def test_config_composes_and_its_targets_build():
    cfg = config("data=x.jsonl")
    check_config(cfg, "audit")
    assert isinstance(build(cfg.proposal, "proposal"), ProposalSettings)
    settings = build(cfg.scoring, "scoring")
    assert isinstance(settings, ScoreSettings) and settings.held_out_check == "interval"
    with pytest.raises(Exception, match="held_out_fraction"):
        build(config("data=x", "scoring.held_out_fraction=1.5").scoring, "scoring")


def test_a_reviewed_runs_human_labels_are_the_pairs(tmp_path):
    def row(k: int, source: str) -> dict:
        return {
            "prompt": [{"role": "user", "content": f"q{k}"}],
            "chosen": [{"role": "assistant", "content": f"good {k}"}],
            "rejected": [{"role": "assistant", "content": f"bad {k}"}],
            "chosen_id": f"p{k}/0",
            "rejected_id": f"p{k}/1",
            "label_source": source,
            "constitution_sha256": "abc",
        }

    (tmp_path / "reviewed").mkdir()
    rows = [row(0, "human"), row(1, "judge"), row(2, "human")]
    (tmp_path / "reviewed" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, rejects, _, sha = load_labelled(None, tmp_path, None)
    assert [(p.id, p.chosen, p.rejected) for p in pairs] == [
        ("p0/0|p0/1", "good 0", "bad 0"),
        ("p2/0|p2/1", "good 2", "bad 2"),
    ]
    assert pairs[0].messages == [{"role": "user", "content": "q0"}] and sha == "abc"
    with pytest.raises(InputError, match="one of data=FILE"):
        load_labelled(None, None, None)


@pytest.mark.slow
def test_real_model_writes_the_audit_files(tmp_path):
    """SmolLM2-135M judges and proposes on 12 PandaLM pairs; the candidates may be poor."""
    out = tmp_path / "out"
    out.mkdir()
    before = (ROOT / "constitutions" / "helpful.yaml").read_bytes()
    cfg = config(
        f"data={ROOT.parent / 'shared/data/human_prefs/pandalm_dev.jsonl'}",
        "engine@judge.engine=transformers",
        "constitution=helpful",
        "limit=12",
        "proposal.candidates=2",
        "proposal.examples_per_prompt=2",
        "proposal.example_chars=200",
        "proposal.sampling.max_new_tokens=96",
        "scoring.top_k=1",
    )
    audit(cfg, out)
    result = json.loads((out / "audit.json").read_text())
    assert result["n"]["pairs"] == 12 and (out / "verdicts.jsonl").exists()
    if result["disagreements"]["held_in"]:
        assert (out / "rejects.jsonl").exists() or (out / "candidates.jsonl").exists()
        assert result["proposals"] == 2
    if result["selected"]:
        assert validate_constitution(out / "proposed.yaml") == []
    assert (ROOT / "constitutions" / "helpful.yaml").read_bytes() == before
