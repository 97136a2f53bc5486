"""`charter publish`: the exact upload folder, a local target, export formats, and no leaks.

A fake-engine run (seconds) stands in for a real one here; tests/test_review.py publishes a
real-model run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets import load_dataset

from charter.errors import InputError
from charter.publishing import PublishSettings, build_upload_folder, prompt_split, publish

FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake"]
TOKEN = "hf_charter_test_secret_0123456789"


def charter(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from charter.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 prompts x 3 samples with the fake engine: 12 pairs to split."""
    root = tmp_path_factory.mktemp("publish_run")
    args = ["run", "experiment=smoke", *FAKE, "prompts.limit=12", "generator.num_samples=3"]
    result = charter(*args, f"hydra.run.dir={root / 'run'}", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "run"


@pytest.fixture
def run(fake_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(fake_run, tmp_path / "run"))


def pairs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "pairs.jsonl").open()]


def all_text(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_dry_run_writes_the_exact_upload_folder_and_no_token(run: Path) -> None:
    result = charter(
        "publish", str(run), "repo_id=org/name", "dry_run=true", "test_fraction=0.3",
        cwd=run.parent, HF_TOKEN=TOKEN,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = run / "upload"
    assert str(folder) in result.stdout
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert names == [
        "README.md",
        "charter_config.yaml",
        "constitution.yaml",
        "data/test.parquet",
        "data/train.parquet",
    ]
    splits = {
        s: load_dataset("parquet", data_files=str(folder / f"data/{s}.parquet"), split="train")
        for s in ("train", "test")
    }
    assert len(splits["train"]) + len(splits["test"]) == len(pairs(run)) == 12
    assert len(splits["test"]) > 0
    train_prompts = {json.dumps(p, sort_keys=True) for p in splits["train"]["prompt"]}
    test_prompts = {json.dumps(p, sort_keys=True) for p in splits["test"]["prompt"]}
    assert not train_prompts & test_prompts
    card = (folder / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    files = {f["split"]: f["path"] for f in header["configs"][0]["data_files"]}
    assert files == {"train": "data/train.parquet", "test": "data/test.parquet"}
    assert "constitution sha256" in card
    constitution = (folder / "constitution.yaml").read_bytes()
    assert hashlib.sha256(constitution).hexdigest() == pairs(run)[0]["constitution_sha256"]
    config = yaml.safe_load((folder / "charter_config.yaml").read_text())
    assert config["experiment_name"] == "smoke" and "${" not in json.dumps(config)
    assert TOKEN.encode() not in all_text(folder) + result.stdout.encode() + result.stderr.encode()
    # publish writes the upload folder only: no Hydra output dir or log beside the run
    assert not (run.parent / ".hydra").exists() and not (run.parent / "charter.log").exists()


def test_local_target_loads_with_datasets_by_its_card(run: Path, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    message = publish(run, PublishSettings(repo_id="org/name", target=str(hub)))
    dest = hub / "org" / "name"
    assert message == f"published org/name to local target {dest}"
    # load_dataset on the folder reads the card's configs header, as the Hub does
    loaded = load_dataset(str(dest))
    assert set(loaded) == {"train", "test"}
    assert sum(len(s) for s in loaded.values()) == 12
    assert (dest / "constitution.yaml").exists() and TOKEN.encode() not in all_text(dest)


def test_upload_without_network_fails_in_one_line_and_leaks_nothing(run: Path) -> None:
    result = charter(
        "publish", str(run), "repo_id=org/name", cwd=run.parent, HF_TOKEN=TOKEN,
        HF_HUB_OFFLINE="1",
    )  # fmt: skip
    assert result.returncode == 2
    out = result.stdout + result.stderr
    assert "could not publish to the Hub" in out and "nothing was uploaded" in out
    assert "Traceback" not in out and TOKEN not in out
    assert (run / "upload" / "data" / "train.parquet").exists()  # the folder is whole
    assert not list(run.glob(".upload.*"))  # and no temp folder is left
    with pytest.raises(InputError, match="no Hub token: set CHARTER_NO_SUCH_TOKEN"):
        publish(run, PublishSettings(repo_id="org/name", token_env="CHARTER_NO_SUCH_TOKEN"))


@pytest.mark.parametrize("fmt", ["openrlhf", "verl", "jsonl"])
def test_export_formats_have_the_keys_their_trainers_read(run: Path, fmt: str) -> None:
    folder = build_upload_folder(run, PublishSettings(repo_id="o/n", format=fmt, test_fraction=0))
    suffix = "jsonl" if fmt == "jsonl" else "parquet"
    builder = "json" if fmt == "jsonl" else "parquet"
    rows = load_dataset(builder, data_files=str(folder / f"data/train.{suffix}"), split="train")
    assert not (folder / "data" / f"test.{suffix}").exists()
    source = pairs(run)
    assert len(rows) == len(source)
    first, original = rows[0], source[0]
    if fmt == "openrlhf":
        assert set(rows.column_names) == {"prompt", "chosen", "rejected", "margin", "prompt_id"}
        assert first["prompt"] == original["prompt"] and first["chosen"] == original["chosen"]
    elif fmt == "verl":
        assert {"prompt", "chosen", "rejected"} <= set(rows.column_names)
        assert first["prompt"] == original["prompt"][-1]["content"]
        assert first["chosen"] == original["chosen"][0]["content"]
        assert first["rejected"] == original["rejected"][0]["content"]
    else:
        assert first["p_chosen"] == original["p_chosen"]
        assert first["constitution_sha256"] == original["constitution_sha256"]


def test_split_is_by_prompt_content_and_near_the_fraction() -> None:
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(2000)]
    test = [p for p in prompts if prompt_split(p, 0.2) == "test"]
    assert 320 < len(test) < 480
    assert all(prompt_split(p, 0.2) == "test" for p in test)  # deterministic
    assert all(prompt_split(p, 0.0) == "train" for p in prompts)


def test_bad_settings_and_a_changed_constitution_are_user_errors(run: Path) -> None:
    with pytest.raises(InputError, match="repo_id must be ORG/NAME"):
        PublishSettings(repo_id="no-slash")
    with pytest.raises(InputError, match="unknown format"):
        PublishSettings(repo_id="o/n", format="csv")
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    edited = run / "edited.yaml"
    source = Path(config["constitution"]["path"])
    if not source.is_absolute():
        source = Path(__file__).resolve().parents[1] / source
    edited.write_text(source.read_text() + "\n# edited\n")
    config["constitution"]["path"] = str(edited)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(InputError, match="constitution changed since the run"):
        build_upload_folder(run, PublishSettings(repo_id="o/n", dry_run=True))
    assert not (run / "upload").exists()


def test_a_revision_run_publishes_its_sft_rows_as_a_second_config(tmp_path: Path) -> None:
    args = ["run", "experiment=cai_sl", *FAKE, "prompts.limit=10", "revise.verify=false"]
    result = charter(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    folder = build_upload_folder(
        run, PublishSettings(repo_id="org/cai", dry_run=True, test_fraction=0.3)
    )
    sft_rows = [json.loads(line) for line in (run / "sft.jsonl").open()]
    header = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
    assert [c["config_name"] for c in header["configs"]] == ["default", "sft"]
    sft = load_dataset(str(folder), "sft")
    assert sum(len(sft[s]) for s in sft) == len(sft_rows) > 0
    assert {"prompt", "completion", "revision_chain"} <= set(sft["train"].column_names)
    # a prompt's SFT row and its pairs land in the same split
    test_prompts = {json.dumps(r["prompt"]) for r in load_dataset(str(folder))["test"]}
    if "test" in sft:
        assert {json.dumps(r["prompt"]) for r in sft["test"]} >= test_prompts


class FakeHub:
    """``huggingface_hub.HfApi`` over an in-memory Hub: repo -> files, one commit at a time.

    ``fail_uploads`` uploads fail midway: the client has sent part of the files when the
    connection drops, so (as on the Hub) the commit never lands.
    """

    repos: dict[str, dict[str, bytes]] = {}
    fail_uploads = 0
    deleted: list[str] = []

    def __init__(self, token: str | None = None) -> None:
        assert token == TOKEN

    def repo_exists(self, repo_id: str, *, repo_type: str | None = None) -> bool:
        return repo_id in self.repos

    def create_repo(self, repo_id: str, *, repo_type: str | None = None, **_: object) -> str:
        assert repo_id not in self.repos  # the Hub answers 409 here
        self.repos[repo_id] = {".gitattributes": b""}
        return repo_id

    def delete_repo(self, repo_id: str, *, repo_type: str | None = None, **_: object) -> None:
        FakeHub.deleted.append(repo_id)
        self.repos.pop(repo_id, None)

    def upload_folder(self, *, repo_id: str, folder_path: str, **_: object) -> None:
        files = {
            str(p.relative_to(folder_path)): p.read_bytes()
            for p in sorted(Path(folder_path).rglob("*"))
            if p.is_file()
        }
        if FakeHub.fail_uploads:
            FakeHub.fail_uploads -= 1
            raise ConnectionError(f"connection reset after {len(files) // 2} files ({TOKEN})")
        self.repos[repo_id] |= files


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> type[FakeHub]:
    import huggingface_hub

    monkeypatch.setattr(FakeHub, "repos", {})
    monkeypatch.setattr(FakeHub, "deleted", [])
    monkeypatch.setattr(FakeHub, "fail_uploads", 0)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return FakeHub


def test_a_failed_upload_leaves_no_repo_it_created_and_a_rerun_completes(
    run: Path, hub: type[FakeHub]
) -> None:
    hub.fail_uploads = 1
    with pytest.raises(InputError) as failure:
        publish(run, PublishSettings(repo_id="org/new"))
    assert hub.repos == {} and hub.deleted == ["org/new"]  # no empty repo is left behind
    message = str(failure.value)
    assert "\n" not in message and TOKEN not in message and "connection reset" in message
    assert "the repo it created was deleted" in message
    assert publish(run, PublishSettings(repo_id="org/new")).startswith("published org/new")
    folder = run / "upload"
    sent = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert set(hub.repos["org/new"]) == sent | {".gitattributes"}


def test_a_failed_upload_to_an_existing_repo_leaves_it_as_it_was(
    run: Path, hub: type[FakeHub]
) -> None:
    hub.repos["org/old"] = {"README.md": b"earlier"}
    hub.fail_uploads = 1
    with pytest.raises(InputError, match="nothing was uploaded; the complete folder"):
        publish(run, PublishSettings(repo_id="org/old"))
    assert hub.repos == {"org/old": {"README.md": b"earlier"}} and hub.deleted == []
