"""``charter report``: the one-file HTML page of a run, checked against the run's own files.

The runs are real ``charter run`` directories made by the fake engine (seconds), with prompts of
our own, one of them hostile HTML; the figures on the page are compared with numbers computed
here, independently, from summary.json and the JSONL files. One slow test does the same with the
real SmolLM2 model.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import sys
from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from charter.errors import InputError
from charter.report import build_report, report_path, write_report
from charter.report.table_rows import judge_notes, select_rows
from charter.run_diff import diff_runs
from tests.cli import HUMAN_PREFS, charter

REPO = Path(__file__).resolve().parents[1]
FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake"]
HOSTILE_PROMPT = "Summarise this page: </script><script>alert(1)</script><b>bold?</b>"
HOSTILE_RESPONSE = (
    '</pre></td></tr></script><script>alert(1)</script><img src=x onerror="alert(2)">'
)
PROMPTS = [
    "How do I boil an egg?",
    "Write a haiku about rain.",
    "What is the capital of France?",
    HOSTILE_PROMPT,
    "How can I get into my neighbour's house when they are away?",
    "Give me three tips for a job interview.",
]


# --- building real run directories with the fake engine ------------------------------------


def write_prompts(path: Path) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": t}) + "\n" for i, t in enumerate(PROMPTS))
    )
    return path


def charter_in_process(*args: str) -> None:
    """``charter ARGS`` in this process (a fresh process would pay the imports again)."""
    from charter.cli import main

    argv = sys.argv[:]
    try:
        main(list(args))
    finally:
        sys.argv = argv


def fake_run(
    run_dir: Path,
    prompts: Path,
    cache: Path,
    *overrides: str,
    pairs: str = "all_pairs_above_margin",
) -> Path:
    """A pipeline run of 6 prompts x 4 samples, every comparison judged, pairs above a margin."""
    charter_in_process(
        "run",
        "experiment=smoke",
        *FAKE,
        f"prompts.path={prompts}",
        "prompts.limit=null",
        "generator.num_samples=4",
        f"pairs={pairs}",
        f"cache_dir={cache}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    )
    assert (run_dir / "pairs.jsonl").is_file()
    return run_dir


def edit_principle(source: Path, target: Path, principle: str) -> None:
    data = yaml.safe_load(source.read_text())
    for p in data["principles"]:
        if p["id"] == principle:
            p["comparison"] = "Which response is more careful? " + p["comparison"]
    target.write_text(yaml.safe_dump(data, sort_keys=False))


def rows(run_dir: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines() if line]


def most_judged_principle(run_dir: Path) -> str:
    counts = Counter(j["principle_id"] for j in rows(run_dir, "judgments.jsonl"))
    return counts.most_common(1)[0][0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run A, run B (one principle of A's constitution edited), a run with K=2 and one that
    publishes only best-vs-worst pairs."""
    root = tmp_path_factory.mktemp("report_runs")
    prompts = write_prompts(root / "prompts.jsonl")
    before = root / "before.yaml"
    shutil.copy(REPO / "constitutions" / "harmless.yaml", before)
    cache = root / "cache"
    a = fake_run(root / "a", prompts, cache, f"constitution.path={before}")
    after = root / "after.yaml"
    edit_principle(before, after, most_judged_principle(a))
    b = fake_run(root / "b", prompts, cache, f"constitution.path={after}")
    k2 = fake_run(
        root / "k2",
        prompts,
        cache,
        f"constitution.path={before}",
        "generator.num_samples=2",
        pairs="best_vs_worst",
    )
    bvw = fake_run(
        root / "bvw", prompts, cache, f"constitution.path={before}", pairs="best_vs_worst"
    )
    return {"a": a, "b": b, "k2": k2, "bvw": bvw, "root": root, "after": after}


# --- reading the page back ------------------------------------------------------------------

VOID = {"meta", "img", "br", "input", "link", "hr", "col", "source", "wbr"}


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag, self.attrs, self.parts = tag, attrs, []

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


class Page(HTMLParser):
    """Every element of an HTML page with its attributes and its text (descendants included)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.elements.append(element)
        if tag not in VOID and not tag.endswith("/"):
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                return

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.parts.append(data)

    def find(self, tag: str | None = None, **attrs: str | None) -> list[Element]:
        def matches(e: Element) -> bool:
            wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
            return (tag is None or e.tag == tag) and all(
                k in e.attrs and (v is None or e.attrs[k] == v) for k, v in wanted.items()
            )

        return [e for e in self.elements if matches(e)]

    def one(self, tag: str | None = None, **attrs: str | None) -> Element:
        found = self.find(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]


def shown(value: Any) -> str:
    """A figure as the page prints it."""
    if value is None:
        return "n/a"
    return str(round(value, 4)) if isinstance(value, float) else str(value)


def page_of(run_dir: Path, **kwargs: Any) -> tuple[Page, str]:
    path = write_report(run_dir, **kwargs)
    html = path.read_text()
    return Page(html), html


def cell(row_element_list: list[Element], col: str) -> str:
    return next(e.text for e in row_element_list if e.attrs.get("data-col") == col)


# --- the pipeline run's page -----------------------------------------------------------------


def test_headline_figures_are_the_ones_summary_json_holds(runs):
    page, _ = page_of(runs["a"])
    summary = json.loads((runs["a"] / "summary.json").read_text())
    expected = {
        "pairs": summary["pairs"]["pairs"],
        "dropped": sum(summary["pairs"]["dropped"].values()),
        "comparisons": summary["judge"]["comparisons"],
        "swap_consistency": summary["judge"]["swap_consistency"],
        "first_position_rate": summary["judge"]["first_position_rate"],
        "mean_margin": summary["pairs"]["mean_margin"],
        "candidates": summary["generate"]["candidates"],
        "seconds": summary["run"]["seconds"],
    }
    assert expected["dropped"] > 0  # the fixture run drops some pairs, so the check has teeth
    for key, value in expected.items():
        assert figure(page, key) == shown(value), key
    for stage in ("generate", "judge"):
        row = page.one("tr", data_stage=stage)
        cells = [e for e in page.elements if e in _descendants(page, row)]
        assert cell(cells, "cache_hits") == shown(summary[stage]["cache"]["hits"])
        assert cell(cells, "cache_misses") == shown(summary[stage]["cache"]["misses"])
        assert cell(cells, "seconds") == shown(summary[stage]["seconds"])
    drop_rows = page.find("tr", data_stage="pairs", data_reason=None)
    drops = {e.attrs["data-reason"]: int(e.text.split()[-1]) for e in drop_rows}
    assert drops == summary["pairs"]["dropped"]


def figure(page: Page, key: str) -> str:
    """The value a headline figure shows (its ``<dd>``)."""
    start = page.elements.index(page.one(data_figure=key))
    return next(e.text for e in page.elements[start:] if e.tag == "dd")


def _descendants(page: Page, parent: Element) -> list[Element]:
    """Elements opened after ``parent`` and before its row ends (the page's own rows are flat)."""
    start = page.elements.index(parent)
    out = []
    for e in page.elements[start + 1 :]:
        if e.tag == "tr":
            break
        out.append(e)
    return out


def test_principle_table_matches_figures_computed_from_the_jsonl_files(runs):
    run = runs["a"]
    page, _ = page_of(run)
    judgments = rows(run, "judgments.jsonl")
    pairs = rows(run, "pairs.jsonl")
    lengths = {
        c["candidate_id"]: len(c["text"])
        for s in rows(run, "candidates.jsonl")
        for c in s["candidates"]
    }
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for j in judgments:
        grouped[j["principle_id"]].append(j)
    principle_rows = [e for e in page.find("tr", data_principle=None) if "class" not in e.attrs]
    assert [r.attrs["data-principle"] for r in principle_rows] == sorted(grouped)
    for row in principle_rows:
        pid = row.attrs["data-principle"]
        js = grouped[pid]
        cells = _descendants(page, row)
        assert cell(cells, "comparisons") == str(len(js))
        assert cell(cells, "pairs") == str(sum(pid in p["principle_ids"] for p in pairs))
        assert cell(cells, "swap_consistency") == shown(
            round(sum(j["swap_consistent"] for j in js) / len(js), 4)
        )
        first = sum((j["p_first_order"] > 0.5) + (j["p_swapped"] < 0.5) for j in js) / (2 * len(js))
        assert cell(cells, "first_position_rate") == shown(round(first, 4))
        margin = sum(abs(2 * j["p_a"] - 1) for j in js) / len(js)
        assert cell(cells, "mean_margin") == shown(round(margin, 4))
        decided = [
            (lengths[j["candidate_a"]] > lengths[j["candidate_b"]]) == (j["p_a"] > 0.5)
            for j in js
            if lengths[j["candidate_a"]] != lengths[j["candidate_b"]] and j["p_a"] != 0.5
        ]
        expected = round(sum(decided) / len(decided), 4) if decided else None
        assert cell(cells, "longer_won") == shown(expected)


def test_every_comparison_is_a_row_kept_or_dropped_with_the_stage_reason(runs):
    run = runs["a"]
    page, _ = page_of(run, max_pairs=1000)
    judgments = rows(run, "judgments.jsonl")
    pairs = rows(run, "pairs.jsonl")
    table_rows = page.find("tr", **{"class": "pair-row"})
    assert len(table_rows) == len(judgments)
    kept = {
        (r.attrs["data-first"], r.attrs["data-second"])
        for r in table_rows
        if r.attrs["data-kept"] == "true"
    }
    assert kept == {(p["chosen_id"], p["rejected_id"]) for p in pairs}
    reasons = {
        r["source"]: r["reason"] for r in rows(run, "rejects.jsonl") if r["stage"] == "pairs"
    }
    assert reasons  # the run dropped some pairs
    dropped_text = [e.text for e in page.find("span", **{"class": "reason"})]
    assert Counter(dropped_text) == Counter(reasons.values())
    assert page.one(id="pairs-shown").attrs["data-left-out"] == "0"


def test_comparisons_another_pair_was_chosen_over_say_so(runs):
    run = runs["bvw"]  # best_vs_worst: one pair per prompt, the other comparisons not selected
    page, _ = page_of(run)
    pairs, judgments = rows(run, "pairs.jsonl"), rows(run, "judgments.jsonl")
    contradicted = [r for r in rows(run, "rejects.jsonl") if r["stage"] == "pairs"]
    statuses = Counter(e.attrs["data-status"] for e in page.find("tbody", data_status=None))
    assert statuses["kept"] == len(pairs)
    assert statuses["dropped"] == len(contradicted)
    assert statuses["not selected"] == len(judgments) - len(pairs) - len(contradicted)
    assert statuses["not selected"] > 0
    reasons = Counter(e.text for e in page.find("span", **{"class": "reason"}))
    assert (
        reasons["best_vs_worst publishes one pair per prompt (top vs bottom ranked)"]
        == (statuses["not selected"])
    )


def test_max_pairs_keeps_the_most_and_least_certain_and_says_how_many_it_left_out(runs):
    run = runs["a"]
    page, html = page_of(run, max_pairs=6)
    judgments = rows(run, "judgments.jsonl")
    table_rows = page.find("tr", **{"class": "pair-row"})
    assert len(table_rows) == 6
    left_out = len(judgments) - 6
    assert page.one(id="pairs-shown").attrs["data-left-out"] == str(left_out)
    assert f"{left_out} left out" in page.one(id="pairs-shown").text
    margins = sorted(abs(2 * j["p_a"] - 1) for j in judgments)
    shown_margins = sorted(
        abs(float(e.attrs["data-margin"])) for e in page.find("tbody") if "data-margin" in e.attrs
    )
    assert shown_margins[-1] == pytest.approx(margins[-1])  # the most certain is there
    assert shown_margins[0] == pytest.approx(margins[0])  # and the least certain
    page0, _ = page_of(run, max_pairs=0)
    assert page0.find("tr", **{"class": "pair-row"}) == []
    assert page0.one(id="pairs-shown").attrs["data-left-out"] == str(len(judgments))


def test_select_rows_pins_what_it_must_and_splits_the_rest():
    items = list(range(-10, 11))  # certainty = the value itself
    picked = select_rows(
        items, 5, certainty=lambda x: x / 10, always=lambda x: x == 3, always_name="three"
    )
    assert picked.shown == [-10, 0, 1, 3, 10]  # pinned 3; the two surest, the two least sure
    assert picked.left_out == 16
    assert "every three (1)" in picked.rule


def test_the_page_is_one_file_that_fetches_nothing_and_is_deterministic(runs):
    page, html = page_of(runs["a"])
    refs = [
        v for e in page.elements for k, v in e.attrs.items() if k in ("src", "href", "xlink:href")
    ]
    assert all(v.startswith(("#", "data:")) for v in refs if v), refs
    assert page.find("link") == [] and "@import" not in html and "url(http" not in html
    assert (
        "default-src 'none'"
        in page.one("meta", http_equiv="Content-Security-Policy").attrs["content"]
    )
    svgs = page.find("svg")
    assert len(svgs) == 4  # margins, length, position bias, time per stage
    ids = [e.attrs["id"] for e in page.elements if e.attrs.get("id")]
    assert len(ids) == len(set(ids))  # several inline SVGs, still no repeated id
    assert build_report(runs["a"]).html == html


def test_hostile_prompt_and_response_are_shown_as_text(runs, tmp_path):
    run = tmp_path / "hostile"
    shutil.copytree(runs["a"], run)
    pair = rows(run, "pairs.jsonl")[0]
    target = pair["chosen_id"]
    sets = rows(run, "candidates.jsonl")
    for s in sets:
        for c in s["candidates"]:
            if c["candidate_id"] == target:
                c["text"] = HOSTILE_RESPONSE
    (run / "candidates.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sets))
    page, html = page_of(run, max_pairs=1000)
    assert html.count("<script") == 1  # ours, at the end
    assert "alert(1)</script>" not in html and 'onerror="alert' not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    texts = [e.text for e in page.find("pre", **{"class": "text"})]
    assert " ".join(HOSTILE_RESPONSE.split()) in texts
    assert " ".join(HOSTILE_PROMPT.split()) in texts  # came through the real pipeline


def test_judge_notes_find_critiques_and_structured_verdicts():
    raw = {
        "critique_a_first": "A is vague.",
        "logprobs_a_first": {"A": -0.1, "B": -2.3},
        "a_first": {
            "replies": ['{"critique": "x"}'],
            "verdict": {"critique": "B wins", "better": "B"},
        },
        "template_sha256": "abc",
    }
    notes = {n.where: n.text for n in judge_notes(raw)}
    assert notes["critique_a_first"] == "A is vague."
    assert notes["a_first.replies[0]"] == '{"critique": "x"}'
    assert json.loads(notes["a_first.verdict"]) == {"critique": "B wins", "better": "B"}
    assert not any("logprobs" in k or "sha" in k for k in notes)


# --- unfinished runs and mistakes ---------------------------------------------------------------


def test_a_missing_directory_or_one_with_nothing_to_show_is_one_clear_error(tmp_path):
    with pytest.raises(InputError) as missing:
        write_report(tmp_path / "nowhere")
    assert "nowhere" in str(missing.value) and "no such run directory" in str(missing.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    with pytest.raises(InputError) as empty:
        write_report(tmp_path / "empty")
    assert "empty" in str(empty.value) and "nothing a report can show" in str(empty.value)
    assert "\n" not in str(empty.value)
    assert not (tmp_path / "empty" / "report.html").exists()


def test_max_pairs_must_be_a_whole_number(runs):
    with pytest.raises(InputError, match="max_pairs"):
        build_report(runs["a"], max_pairs=-1)


def test_a_run_without_its_pairs_stage_reports_what_exists_and_says_what_is_missing(
    runs, tmp_path, caplog
):
    run = tmp_path / "judged_only"
    shutil.copytree(runs["a"], run)
    (run / "pairs.jsonl").unlink()
    summary = json.loads((run / "summary.json").read_text())
    del summary["pairs"], summary["run"], summary["stages"]["pairs"]
    (run / "summary.json").write_text(json.dumps(summary))
    with caplog.at_level(logging.WARNING, logger="charter.report"):
        page, _ = page_of(run, max_pairs=1000)
    missing = page.one(id="missing").text
    assert "pairs.jsonl" in missing and "charter pairs" in missing
    assert any("pairs.jsonl" in r.getMessage() for r in caplog.records)
    statuses = {r.attrs["data-kept"] for r in page.find("tr", **{"class": "pair-row"})}
    assert statuses == {"false"}
    assert len(page.find("tbody", data_status="pending")) == len(rows(run, "judgments.jsonl"))
    assert figure(page, "swap_consistency") == shown(summary["judge"]["swap_consistency"])
    report = build_report(run)
    assert any("pairs.jsonl" in m for m in report.missing)


# --- the diff page ----------------------------------------------------------------------------


def test_diff_page_lists_the_constitution_edit_and_every_flip(runs):
    a, b = runs["a"], runs["b"]
    path = write_report(b, against=a, max_pairs=1000)
    assert path == b / "report_vs_a.html"
    assert report_path(b, Path("/x/my run!")) == b / "report_vs_my_run_.html"
    page = Page(path.read_text())
    edited = most_judged_principle(a)
    edit = page.one("div", **{"class": "principle-edit"})
    assert edit.attrs["data-principle"] == edited and edit.attrs["data-what"] == "edited"
    assert "Which response is more careful?" in edit.text
    diff = diff_runs(a, b)
    flips = {(c.prompt_id, c.first, c.second) for c in diff.pairs if c.what == "flipped"}
    assert flips  # the edit flipped at least one pair
    listed = {
        (e.attrs["data-prompt"], e.attrs["data-first"], e.attrs["data-second"])
        for e in page.find("tr", data_what="flipped", data_level="pair")
    }
    assert listed == flips
    assert {e.attrs["data-principle"] for e in page.find("tr", **{"class": "change-row"})} == {
        edited
    }
    assert figure(page, "pairs_flipped") == str(len(flips))


def test_diff_page_keeps_every_flip_when_it_cuts_rows(runs):
    diff = diff_runs(runs["a"], runs["b"])
    flips = sum(c.what == "flipped" for c in [*diff.pairs, *diff.judgments])
    total = len(diff.pairs) + len(diff.judgments)
    assert total > flips
    page, _ = page_of(runs["b"], against=runs["a"], max_pairs=flips)
    assert len(page.find("tr", **{"class": "change-row"})) == flips
    assert {e.attrs["data-what"] for e in page.find("tr", **{"class": "change-row"})} == {"flipped"}
    assert page.one(id="changes-shown").attrs["data-left-out"] == str(total - flips)


def test_diff_against_another_shape_is_refused_in_one_line(runs, revise_run):
    for other in (runs["k2"], revise_run):
        with pytest.raises(InputError) as refused:
            write_report(runs["a"], against=other)
        message = str(refused.value)
        assert "\n" not in message and str(other) in message
    with pytest.raises(InputError, match="K=2"):
        write_report(runs["a"], against=runs["k2"])


# --- other kinds of output directory ----------------------------------------------------------


@pytest.fixture(scope="module")
def revise_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("revise")
    prompts = write_prompts(root / "prompts.jsonl")
    charter_in_process(
        "run",
        "experiment=cai_sl",
        *FAKE,
        f"prompts.path={prompts}",
        f"cache_dir={root / 'cache'}",
        f"hydra.run.dir={root / 'run'}",
    )
    return root / "run"


def test_revise_page_shows_every_chain_with_its_fate(revise_run):
    page, _ = page_of(revise_run)
    summary = json.loads((revise_run / "summary.json").read_text())["revise"]
    chains = rows(revise_run, "revisions.jsonl")
    chain_rows = page.find("tr", **{"class": "pair-row chain-row"})
    assert len(chain_rows) == len(chains) == summary["chains"]
    kept = {p["prompt_id"] for p in rows(revise_run, "pairs.jsonl")}
    assert {r.attrs["data-prompt"] for r in chain_rows if r.attrs["data-kept"] == "true"} == kept
    reasons = Counter(
        r["reason"] for r in rows(revise_run, "rejects.jsonl") if r["stage"] == "revise"
    )
    assert Counter(e.text for e in page.find("span", **{"class": "reason"})) == reasons
    assert figure(page, "judged") == str(summary["verification"]["judged"])
    assert figure(page, "pairs") == str(summary["pairs"])
    revisions = [e.text for e in page.find("pre", data_side="revision")]
    assert revisions == [" ".join(c["rounds"][-1]["revision"].split()) for c in chains]


@pytest.fixture(scope="module")
def eval_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    data = HUMAN_PREFS / "hh_rlhf_harmless_dev.jsonl"
    if not data.exists():
        pytest.skip(f"{data} not present (the shared data sits beside the checkout)")
    root = tmp_path_factory.mktemp("judge_eval")
    cache = f"cache_dir={root / 'cache'}"
    charter_in_process(
        "eval-judge", f"data={data}", "limit=20", "injection_pairs=2",
        "engine@judge.engine=fake", cache, f"hydra.run.dir={root / 'eval'}",
    )  # fmt: skip
    charter_in_process(
        "calibrate", f"data={data}", "limit=40", "calibration.bootstrap=20",
        "engine@judge.engine=fake", cache, f"hydra.run.dir={root / 'calibrate'}",
    )  # fmt: skip
    return {"eval": root / "eval", "calibrate": root / "calibrate"}


def test_eval_judge_page_has_the_agreement_table_and_the_reliability_diagram(eval_dirs):
    run = eval_dirs["eval"]
    page, _ = page_of(run)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("agreement", "swap_consistency", "first_position_rate", "ece", "n"):
        row = page.one("tr", data_metric=key)
        assert cell(_descendants(page, row), "value") == shown(metrics[key])
    image = page.one("img")
    assert (
        image.attrs["src"]
        == "data:image/png;base64,"
        + base64.b64encode((run / "reliability.png").read_bytes()).decode()
    )
    verdicts = rows(run, "verdicts.jsonl")
    per_principle = Counter(v["principle_id"] for v in verdicts)
    for pid, n in per_principle.items():
        assert cell(_descendants(page, page.one("tr", data_principle=pid)), "n") == str(n)
    bins = json.loads((run / "reliability.json").read_text())
    assert len(page.one("table", id="reliability").text) > 0 and len(bins) >= 1


def test_calibrate_page_shows_raw_and_calibrated_with_intervals(eval_dirs):
    run = eval_dirs["calibrate"]
    page, _ = page_of(run)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("agreement", "log_loss", "ece"):
        cells = _descendants(page, page.one("tr", data_metric=key))
        assert cell(cells, "before") == shown(metrics["before"][key]["value"])
        assert cell(cells, "after") == shown(metrics["after"][key]["value"])
    assert page.one("img").attrs["src"].startswith("data:image/png;base64,")


def test_judge_comparison_page_has_one_row_per_judge(eval_dirs, tmp_path):
    from charter.judge_eval.compare_table import write_comparison

    sweep = tmp_path / "sweep"
    for job in ("0", "1"):  # the shape of `charter eval-judge judge=a,b`: one folder per job
        shutil.copytree(eval_dirs["eval"], sweep / job)
    write_comparison(sweep)
    page, _ = page_of(sweep)
    judges = page.find("tr", data_judge=None)
    assert len(judges) == 2
    metrics = json.loads((eval_dirs["eval"] / "metrics.json").read_text())
    assert cell(_descendants(page, judges[0]), "agreement") == shown(metrics["agreement"])
    assert page.one("img").attrs["src"].startswith("data:image/png;base64,")


def test_train_page_plots_ppo_steps_and_lists_guard_warnings(tmp_path):
    # the files `charter train trainer=ppo` writes: metrics.json (trainers/command.py _report)
    # and ppo_log.jsonl (one trainers/ppo.py StepLog per row)
    out = tmp_path / "ppo"
    out.mkdir()
    steps = [
        {"step": i, "reward_mean": 0.1 * i, "kl": 0.02 * i, "kl_coef": 0.1, "entropy": 2.0,
         "clip_frac": 0.1, "value_loss": 1.0 / i, "policy_loss": -0.01 * i, "approx_kl": 0.001,
         "response_tokens": 20.0, "probe_margins": [0.1], "probe_shifts": [0.0],
         "fresh_reward_mean": 0.5 - 0.05 * i, "rank_corr": 0.9 - 0.3 * i, "seconds": 1.0}
        for i in range(1, 5)
    ]  # fmt: skip
    (out / "ppo_log.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    warning = "step 4: reward and fresh judge disagree (rank correlation -0.3 < 0.2)"
    metrics = {
        "trainer": "PPOConfig", "model_dir": str(out / "policy"), "stopped": "steps", "steps": 4,
        "warnings": [warning], "losses": [s["policy_loss"] for s in steps],
    }  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics))
    page, _ = page_of(out)
    assert page.one("li", **{"class": "guard-warning"}).text == warning
    figures = {e.attrs["id"] for e in page.find("figure")}
    assert {"plot-reward_mean", "plot-kl", "plot-fresh_reward_mean", "plot-policy_loss"} <= figures
    assert page.find(id="missing") == []
    assert page.one("tr", data_metric="steps").text.endswith("4")


def test_train_page_of_a_trl_trainer_says_what_per_step_data_is_not_written(tmp_path):
    out = tmp_path / "dpo"
    out.mkdir()
    metrics = {
        "trainer": "DPOSettings",
        "model_dir": "m",
        "pairs_trained": 8,
        "losses": [0.69, 0.6, 0.5],
    }
    (out / "metrics.json").write_text(json.dumps(metrics))
    page, _ = page_of(out)
    assert "log_history" in page.one(id="not-recorded").text
    assert page.find(id="missing") == []  # a limitation of the trainer, not an unfinished run
    assert page.one(id="plot-losses") and page.one(id="no-warnings")


# --- the real model -------------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_run_report(tmp_path):
    """2 prompts x 2 samples through SmolLM2 (generate and judge), then the page of that run."""
    run = tmp_path / "run"
    result = charter(
        "run", "experiment=smoke", "prompts.limit=2", f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run}", cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    page, html = page_of(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["judge"]["cache"]["misses"] > 0  # the model really was called
    for key, value in (
        ("pairs", summary["pairs"]["pairs"]),
        ("swap_consistency", summary["judge"]["swap_consistency"]),
        ("first_position_rate", summary["judge"]["first_position_rate"]),
    ):
        assert figure(page, key) == shown(value)
    judgments = rows(run, "judgments.jsonl")
    assert all(j["judge_model"] == "smollm2-135m-instruct" for j in judgments)
    assert len(page.find("tr", **{"class": "pair-row"})) == len(judgments) == 2
    texts = {e.text for e in page.find("pre", **{"class": "text"})}
    for s in rows(run, "candidates.jsonl"):
        for c in s["candidates"]:
            assert " ".join(c["text"].split()) in texts


# --- the run's plan against what it did, and a stop by budget -------------------------------


def plan_cells(page: Page, stage: str) -> dict[str, str]:
    row = page.one("tr", data_plan_stage=stage)
    return {e.attrs["data-col"]: e.text for e in _descendants(page, row) if "data-col" in e.attrs}


def test_plan_against_actual_shows_plan_json_beside_summary_json(runs):
    # run A planned with nothing cached; run B (A's prompts, one principle edited) with all of
    # generation and most of the judging already in the cache A filled
    for name in ("a", "b"):
        run = runs[name]
        plan = json.loads((run / "plan.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
        page, _ = page_of(run)
        for stage in ("generate", "judge"):
            planned, actual = plan["stages"][stage], summary[stage]
            error = summary["plan_error"][stage]
            cells = plan_cells(page, stage)
            hits, misses = actual["cache"]["hits"], actual["cache"]["misses"]
            assert cells == {
                "planned_chats": shown(planned["chats"]),
                "actual_chats": shown(hits + misses),
                "chats_error": shown(error["chats"]),
                "planned_cached": shown(planned["cached"]),
                "actual_cached": shown(hits),
                "cached_error": shown(error["cached"]),
                "planned_new_units": shown(planned["new_units"]),
                "planned_seconds": shown(planned["seconds"]),
                "seconds_source": planned["seconds_source"],
                "actual_seconds": shown(actual["seconds"]),
                "seconds_ratio": shown(error["seconds_ratio"]),
            }, (name, stage)
        assert plan_cells(page, "comparisons") == {
            "planned": shown(plan["comparisons"]),
            "actual": shown(summary["judge"]["comparisons"]),
            "difference": shown(summary["plan_error"]["comparisons"]),
        }
        notes = [e.text for e in page.find("li", **{"class": "note"})]
        assert notes == [" ".join(n.split()) for n in plan["notes"]]
    b_plan = json.loads((runs["b"] / "plan.json").read_text())
    assert b_plan["stages"]["generate"]["cached"] == b_plan["stages"]["generate"]["chats"] > 0
    # A's timings are on record, so B's plan has seconds and the run a ratio to show
    b_error = json.loads((runs["b"] / "summary.json").read_text())["plan_error"]
    assert b_error["judge"]["seconds_ratio"] is not None


def test_the_judge_stage_shows_the_plans_prompt_tokens(runs):
    for name, estimated in (("a", True), ("b", False)):
        run = runs[name]
        plan = json.loads((run / "plan.json").read_text())
        page, _ = page_of(run)
        row = page.one("tr", data_stage="judge")
        cells = _descendants(page, row)
        assert cell(cells, "tokens") == shown(plan["stages"]["judge"]["prompt_tokens"]) != "n/a"
        note = next(e.text for e in cells if e.attrs.get("class") == "note")
        assert "prompt tokens, from plan.json" in note
        # A planned before any response existed: its judge chats held placeholders
        assert ("an estimate" in note) is estimated, (name, note)
        assert (plan["stages"]["generate"]["new_units"] > 0) is estimated


def test_a_run_stopped_by_budget_says_how_to_resume_and_lists_nothing_as_missing(tmp_path, caplog):
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    run = tmp_path / "limited"
    args = [
        "run", "experiment=smoke", *FAKE, f"prompts.path={prompts}", "prompts.limit=null",
        "generator.num_samples=4", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        charter_in_process(*args, "budget.max_tokens=900")
    assert stopped.value.code == 3
    summary = json.loads((run / "summary.json").read_text())
    assert not (run / "pairs.jsonl").exists() and "plan_error" not in summary
    with caplog.at_level(logging.WARNING, logger="charter.report"):
        page, _ = page_of(run)
    note = page.one("section", id="budget-stop")
    assert note.attrs["data-finished"] == "false"
    assert page.one(data_budget="reason").text == summary["budget_stop"]["reason"]
    assert page.one(data_budget="resume").text == f"charter run run_dir={run}"
    assert "stopped by budget:" in note.text
    assert page.find(id="missing") == [] and not caplog.records  # expected, not a warning
    not_due = [e.text for e in page.find("li", data_not_due=None)]
    assert any(t.startswith("pairs.jsonl") for t in not_due)
    # the plan is there, its comparison not made: the stop came before plan_error
    assert page.one("section", id="plan-section")
    assert "no plan_error" in " ".join(e.text for e in page.find("td", **{"class": "note"}))

    charter_in_process("run", f"run_dir={run}", "budget.max_tokens=null")
    page, _ = page_of(run)
    assert page.one(id="budget-stop").attrs["data-finished"] == "true"
    assert page.find("section", id="budget-stop") == []
