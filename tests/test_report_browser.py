"""The report in a real browser: headless Chromium (Debian's, not a downloaded one) via Playwright.

The page is opened from disk as a ``file://`` URL, as a user would open it. The tests check what
a reader sees and does: the headline figures, the principle table, filtering the pair table,
expanding a row, and the diff page's flips; and that the page logs no error and runs no script
smuggled in through a response.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from charter.report import write_report
from charter.run_diff import diff_runs
from tests.test_report import (
    PROMPTS,
    edit_principle,
    fake_run,
    most_judged_principle,
    rows,
    shown,
    write_prompts,
)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright); no browser test")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); no browser test")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run A and run B, B judged under A's constitution with one principle's wording edited."""
    root = tmp_path_factory.mktemp("browser_runs")
    prompts = write_prompts(root / "prompts.jsonl")
    before = root / "before.yaml"
    shutil.copy(REPO / "constitutions" / "harmless.yaml", before)
    cache = root / "cache"
    a = fake_run(root / "a", prompts, cache, f"constitution.path={before}")
    after = root / "after.yaml"
    edit_principle(before, after, most_judged_principle(a))
    b = fake_run(root / "b", prompts, cache, f"constitution.path={after}")
    return {"a": a, "b": b}


class Opened:
    """A page opened from disk, with every console error, page error and dialog it raised."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("dialog", self._dialog)
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_load_state("load")

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def visible_rows(self, selector: str) -> list[Any]:
        return [row for row in self.page.locator(selector).all() if row.is_visible()]

    def close(self) -> None:
        assert self.errors == [], self.errors
        assert self.dialogs == [], self.dialogs  # no smuggled script ran
        assert all(url.startswith(("file://", "data:")) for url in self.requests), self.requests
        self.page.close()


def test_run_report_in_chromium(browser, runs, tmp_path):
    run = runs["a"]
    opened = Opened(browser, write_report(run, max_pairs=1000))
    page = opened.page
    summary = json.loads((run / "summary.json").read_text())
    for key, value in (
        ("pairs", summary["pairs"]["pairs"]),
        ("comparisons", summary["judge"]["comparisons"]),
        ("swap_consistency", summary["judge"]["swap_consistency"]),
        ("first_position_rate", summary["judge"]["first_position_rate"]),
        ("mean_margin", summary["pairs"]["mean_margin"]),
    ):
        assert page.locator(f'[data-figure="{key}"] dd').inner_text() == shown(value), key

    judgments = rows(run, "judgments.jsonl")
    per_principle = Counter(j["principle_id"] for j in judgments)
    table = page.locator("#principles tbody tr")
    assert table.count() == len(per_principle)
    for i in range(table.count()):
        row = table.nth(i)
        pid = row.get_attribute("data-principle")
        assert row.locator('[data-col="comparisons"]').inner_text() == str(per_principle[pid])

    assert len(opened.visible_rows("tr.pair-row")) == len(judgments)
    chosen = min(per_principle, key=per_principle.get)  # the rarest, so the filter hides most
    page.select_option("#filter-principle", chosen)
    visible = opened.visible_rows("tr.pair-row")
    assert len(visible) == per_principle[chosen] < len(judgments)
    assert {row.get_attribute("data-principle") for row in visible} == {chosen}
    assert page.locator('[data-count-for="pairs"]').inner_text() == str(per_principle[chosen])

    page.select_option("#filter-kept", "true")
    kept = opened.visible_rows("tr.pair-row")
    pairs = rows(run, "pairs.jsonl")
    assert len(kept) == sum(p["principle_ids"] == [chosen] for p in pairs)
    page.select_option("#filter-kept", "")

    page.select_option("#sort-pairs", "margin-desc")
    margins = [
        float(row.get_attribute("data-margin")) for row in page.locator("#pairs tbody").all()
    ]
    assert margins == sorted(margins, reverse=True)

    first = opened.visible_rows("tr.pair-row")[0]
    details = page.locator("#" + first.locator("button.expand").get_attribute("aria-controls"))
    assert not details.is_visible()
    first.locator("button.expand").click()
    assert details.is_visible()
    texts = {
        c["candidate_id"]: c["text"] for s in rows(run, "candidates.jsonl") for c in s["candidates"]
    }
    for side, key in (("first", "data-first"), ("second", "data-second")):
        shown_text = details.locator(f'[data-side="{side}"] pre').inner_text()
        assert shown_text == texts[first.get_attribute(key)]
    assert details.locator('[data-p="first-order"]').inner_text() not in ("", "n/a")
    page.screenshot(path=str(tmp_path / "run_report.png"), full_page=True)

    # the hostile prompt is on the page, as text
    page.select_option("#filter-principle", "")
    hostile = next(i for i, t in enumerate(PROMPTS) if "<script>" in t)
    row = page.locator(f'tr.pair-row[data-prompt="p{hostile}"]').first
    row.locator("button.expand").click()
    target = page.locator("#" + row.locator("button.expand").get_attribute("aria-controls"))
    assert PROMPTS[hostile] in target.locator(".conversation").inner_text()
    assert page.locator("script").count() == 1
    opened.close()


def test_diff_report_in_chromium_lists_the_engineered_flips(browser, runs, tmp_path):
    a, b = runs["a"], runs["b"]
    opened = Opened(browser, write_report(b, against=a, max_pairs=1000))
    page = opened.page
    edited = most_judged_principle(a)
    edit = page.locator(".principle-edit")
    assert edit.count() == 1 and edit.get_attribute("data-principle") == edited
    assert "Which response is more careful?" in edit.locator(".after").inner_text()

    diff = diff_runs(a, b)
    flips = [c for c in diff.pairs if c.what == "flipped"]
    assert flips
    page.select_option("#filter-what", "flipped")
    page.select_option("#filter-level", "pair")
    visible = opened.visible_rows("tr.change-row")
    listed = {
        (
            r.get_attribute("data-prompt"),
            r.get_attribute("data-first"),
            r.get_attribute("data-second"),
        )
        for r in visible
    }
    assert listed == {(c.prompt_id, c.first, c.second) for c in flips}
    flip = flips[0]
    row = page.locator(
        f'tr.change-row[data-prompt="{flip.prompt_id}"][data-first="{flip.first}"]'
        f'[data-second="{flip.second}"][data-level="pair"]'
    )
    assert flip.before.chosen in row.locator('[data-col="before"]').inner_text()
    assert flip.after.chosen in row.locator('[data-col="after"]').inner_text()
    row.locator("button.expand").click()
    assert page.locator(
        "#" + row.locator("button.expand").get_attribute("aria-controls")
    ).is_visible()
    page.screenshot(path=str(tmp_path / "diff_report.png"), full_page=True)
    opened.close()


def test_plan_section_and_train_curves_in_chromium(browser, runs, tmp_path):
    run = runs["a"]
    opened = Opened(browser, write_report(run))
    page = opened.page
    plan = json.loads((run / "plan.json").read_text())
    section = page.locator("#plan-section")
    assert section.is_visible()
    for stage in ("generate", "judge"):
        row = section.locator(f'tr[data-plan-stage="{stage}"]')
        assert row.locator('[data-col="planned_chats"]').inner_text() == shown(
            plan["stages"][stage]["chats"]
        )
    opened.close()

    # a DPO output as `charter train` leaves it: metrics.json and TRL's per-step log
    out = tmp_path / "dpo"
    out.mkdir()
    log = [
        {"loss": 0.7 - 0.1 * s, "rewards/chosen": 0.05 * s, "rewards/rejected": -0.05 * s,
         "rewards/margins": 0.1 * s, "rewards/accuracies": 1.0, "kl": 0.01 * s,
         "learning_rate": 1e-6, "epoch": s / 4, "step": s}
        for s in range(1, 5)
    ]  # fmt: skip
    (out / "log_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    metrics = {"trainer": "DPOSettings", "losses": [r["loss"] for r in log]}
    (out / "metrics.json").write_text(json.dumps(metrics))
    opened = Opened(browser, write_report(out))
    page = opened.page
    for plot in ("loss", "reward", "kl", "accuracy", "learning_rate"):
        figure = page.locator(f"#plot-log-{plot}")
        assert figure.is_visible() and figure.locator("svg").count() == 1, plot
    assert "rewards/margins" in page.locator("#plot-log-reward figcaption").inner_text()
    assert page.locator("#not-recorded").count() == 0
    page.screenshot(path=str(tmp_path / "train_report.png"), full_page=True)
    opened.close()
