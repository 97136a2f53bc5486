"""Security checks: a token never reaches a file or the terminal, and ``charter publish`` sends
only the run's own files.

The canary run talks to the scripted OpenAI-compatible server of tests/faults/openai_server.py on
127.0.0.1, with canary keys in every environment variable an engine or the Hub client reads, and
then every byte the commands wrote (the run directory with its .hydra dumps, charter.log,
report.html, README.md and summary.json, the call cache, plan.json, the upload folder) and
printed is searched for the canaries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from charter.errors import InputError
from charter.publishing import PublishSettings, build_upload_folder, publish
from tests.cli import one_error_line
from tests.faults.openai_server import FaultScript, openai_run_args, serve

GENERATOR_KEY = "sk-canary-generator-4f1c9a0e7b"
JUDGE_KEY = "sk-canary-judge-8d2e6b1f3c"
HUB_TOKEN = "hf_canary_hub_5a7c2e9d1b"
CANARIES = (GENERATOR_KEY, JUDGE_KEY, HUB_TOKEN)
KEY_ENV = "CHARTER_CANARY_KEY"


def charter(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from charter.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )


@pytest.fixture(scope="module")
def script() -> FaultScript:
    return FaultScript(top_logprobs=[("A", -0.4), ("B", -1.2)])


@pytest.fixture(scope="module")
def base_url(script: FaultScript) -> Iterator[str]:
    yield from serve(script)


@pytest.fixture(scope="module")
def canary_run(
    base_url: str, script: FaultScript, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """A run, its plan, a dry-run publish and a failed upload, all with canaries in the env;
    returns the folder everything was written to and all they printed."""
    root = tmp_path_factory.mktemp("canary")
    env = {KEY_ENV: GENERATOR_KEY, "OPENAI_API_KEY": JUDGE_KEY, "HF_TOKEN": HUB_TOKEN}
    args = openai_run_args(
        base_url, root, f"generator.engine.api_key_env={KEY_ENV}", f"cache_dir={root / 'cache'}"
    )
    printed = []
    run = charter(*args, cwd=root, **env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    plan_args = openai_run_args(base_url, root / "plan", *args[-2:])
    plan = charter("plan", *plan_args[1:], cwd=root, **env)
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-2000:]
    dry = charter("publish", str(root / "run"), "repo_id=org/name", "dry_run=true", cwd=root, **env)
    assert dry.returncode == 0, dry.stderr[-2000:]
    offline = charter(
        "publish", str(root / "run"), "repo_id=org/name", cwd=root, HF_HUB_OFFLINE="1", **env
    )
    assert "could not publish to the Hub" in one_error_line(offline)
    for result in (run, plan, dry, offline):
        printed += [result.stdout, result.stderr]
    # the canaries were in play: the server got each engine's key
    auth = {s["auth"] for s in script.seen}
    assert auth == {f"Bearer {GENERATOR_KEY}", f"Bearer {JUDGE_KEY}"}
    return root, "\n".join(printed)


def test_no_token_is_written_or_printed(canary_run: tuple[Path, str]) -> None:
    root, printed = canary_run
    written = [p for p in root.rglob("*") if p.is_file()]
    names = {p.relative_to(root).as_posix() for p in written}
    expected = {
        "run/.hydra/config.yaml",
        "run/.hydra/overrides.yaml",
        "run/charter.log",
        "run/report.html",
        "run/README.md",
        "run/summary.json",
        "run/upload/README.md",
        "run/upload/charter_config.yaml",
        "cache/calls.sqlite",
    }
    assert expected <= names, sorted(names)
    assert any(n.startswith("plan/") and n.endswith("plan.json") for n in names), sorted(names)
    leaks = [
        (p.relative_to(root).as_posix(), c)
        for p in written
        for c in CANARIES
        if c.encode() in p.read_bytes()
    ]
    leaks += [("terminal", c) for c in CANARIES if c in printed]
    assert leaks == [], f"{len(written)} files scanned"


@pytest.fixture
def run_copy(canary_run: tuple[Path, str], tmp_path: Path) -> Path:
    return Path(shutil.copytree(canary_run[0] / "run", tmp_path / "run", symlinks=True))


SECRET = "outside-the-run: do not publish"


@pytest.mark.parametrize(
    "link",
    ["README.md", "pairs.jsonl", ".hydra/config.yaml", "reviewed/pairs.jsonl", "reviewed"],
)
def test_publish_refuses_a_source_that_leads_outside_the_run(run_copy: Path, link: str) -> None:
    outside = run_copy.parent / "outside"
    outside.mkdir()
    source = run_copy / link
    if link == "reviewed":  # reviewed -> .. makes reviewed/pairs.jsonl the file beside the run
        shutil.copyfile(run_copy / "pairs.jsonl", run_copy.parent / "pairs.jsonl")
        source.symlink_to("..", target_is_directory=True)
    else:  # the same bytes, but from outside: publishing would succeed and send them
        original = run_copy / ("pairs.jsonl" if link.startswith("reviewed/") else link)
        target = outside / Path(link).name
        shutil.copyfile(original, target)
        source.parent.mkdir(exist_ok=True)
        source.unlink(missing_ok=True)
        source.symlink_to(target)
    with pytest.raises(InputError, match="leads outside the run directory"):
        build_upload_folder(run_copy, PublishSettings(repo_id="org/name", dry_run=True))


def test_publish_refuses_in_one_line_from_the_command_line(run_copy: Path) -> None:
    (run_copy.parent / "secret.md").write_text(SECRET)
    (run_copy / "README.md").unlink()
    (run_copy / "README.md").symlink_to(run_copy.parent / "secret.md")
    result = charter("publish", str(run_copy), "repo_id=org/name", "dry_run=true", cwd=run_copy)
    assert "leads outside the run directory" in one_error_line(result)
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("out", ["..", ".", "../elsewhere"])
def test_publish_never_builds_over_a_folder_that_is_not_an_upload_folder(
    run_copy: Path, out: str
) -> None:
    (run_copy.parent / "elsewhere").mkdir()
    (run_copy.parent / "elsewhere" / "notes.txt").write_text("mine")
    before = sorted(p.name for p in run_copy.iterdir())
    with pytest.raises(InputError, match="not an upload folder|holds files an upload folder"):
        publish(run_copy, PublishSettings(repo_id="o/n", dry_run=True, out=str(run_copy / out)))
    assert sorted(p.name for p in run_copy.iterdir()) == before
    assert (run_copy.parent / "elsewhere" / "notes.txt").read_text() == "mine"


def test_publish_rebuilds_its_own_upload_folder(run_copy: Path) -> None:
    first = build_upload_folder(run_copy, PublishSettings(repo_id="o/n", dry_run=True))
    again = build_upload_folder(run_copy, PublishSettings(repo_id="o/n", dry_run=True))
    assert first == again and (again / "README.md").exists()


def test_upload_refuses_a_link_in_the_upload_folder(run_copy: Path, tmp_path: Path) -> None:
    folder = build_upload_folder(run_copy, PublishSettings(repo_id="o/n", dry_run=True))
    (tmp_path / "secret.txt").write_text(SECRET)
    (folder / "data" / "extra.txt").symlink_to(tmp_path / "secret.txt")
    from charter.publishing import copy_to_target

    with pytest.raises(InputError, match="refusing to upload a link"):
        copy_to_target(folder, str(tmp_path / "hub"), "o/n")
    assert not (tmp_path / "hub").exists()
