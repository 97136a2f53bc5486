"""Publish a run's pairs: build the exact folder a Hub dataset repo gets, then upload it.

The folder is built first, whole, in a temp dir renamed into place, so what a dry run shows is
byte for byte what an upload sends, and a failed build leaves nothing behind:

    README.md            the run's dataset card, its header pointing at the split files
    data/train.parquet   the pairs whose prompt hashes into train (format=trl|openrlhf|verl)
    data/test.parquet    the rest (``test_fraction`` of prompts); ``.jsonl`` for format=jsonl
    sft/train.parquet    a critique/revision run's SFT rows (``sft.jsonl``), split the same way,
    sft/test.parquet     as the card's second config, ``sft``; absent for other runs
    constitution.yaml    the constitution file the run used (its sha256 must match the pairs')
    charter_config.yaml  the run's composed config (``.hydra/config.yaml``), resolved

Splits go by a hash of the prompt's messages, not by row, so every pair of one prompt lands in
the same split and a prompt never leaks from train into test. The upload uses
``huggingface_hub`` with the token from the environment (``HF_TOKEN`` by default); the token is
passed to the client only, never printed, logged or written. Any failure to reach the Hub ends
in one line naming the repo, and the Hub is left as it was: a folder upload is a single commit,
and a repo this call created is deleted again if the commit fails, so a rerun starts clean.

Only the run's own files go into the folder: a source that resolves outside the run directory
(a symlink, or a ``..`` on the way) is refused, the folder holds no links when it is uploaded,
and ``out`` never replaces a folder that is not an upload folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from charter import run_files
from charter.building import register_resolvers, resolve_path
from charter.constitution import load_constitution
from charter.errors import InputError
from charter.exports import ExportFormat, check_format, export_row, file_suffix
from charter.jsonl import atomic_dir, read_jsonl, write_jsonl_atomic
from charter.review_audit import card_section

REVIEWED_PAIRS = Path("reviewed") / "pairs.jsonl"
"""Pairs with human review labels merged in (``charter review import``); preferred when present."""
UPLOAD_NAMES = frozenset({"README.md", "data", "sft", "constitution.yaml", "charter_config.yaml"})
"""What a folder built by :func:`build_upload_folder` holds at its top level."""


@dataclass(frozen=True)
class PublishSettings:
    """What ``charter publish`` does with a run.

    Args:
        repo_id: ``ORG/NAME`` of the Hub dataset repo.
        private: create the repo private (only when it does not exist yet).
        dry_run: build the upload folder and stop.
        format: the data files' row shape: ``trl`` (default), ``openrlhf``, ``verl``, ``jsonl``.
        test_fraction: share of prompts (by hash) in the test split; 0 writes train only.
        out: where to build the upload folder; None means ``RUN_DIR/upload``.
        target: a local folder standing in for the Hub: the folder is copied to
            ``TARGET/ORG/NAME`` instead of uploaded (for tests and air-gapped handoffs).
        token_env: the environment variable holding the Hub token.
    """

    repo_id: str
    private: bool = False
    dry_run: bool = False
    format: str = "trl"
    test_fraction: float = 0.1
    out: str | None = None
    target: str | None = None
    token_env: str = "HF_TOKEN"

    def __post_init__(self) -> None:
        parts = str(self.repo_id).split("/")
        if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
            raise InputError(f"repo_id must be ORG/NAME, got {self.repo_id!r}", field="repo_id")
        if not 0.0 <= self.test_fraction < 1.0:
            raise InputError(
                f"test_fraction must be in [0, 1), got {self.test_fraction}", field="test_fraction"
            )
        check_format(self.format)


def prompt_split(prompt: list[dict[str, str]], test_fraction: float) -> str:
    """``"test"`` for a ``test_fraction`` share of prompts, else ``"train"``, by content hash.

    The hash is of the messages themselves (sorted-key JSON), so the same prompt gets the same
    split in every run and under every prompt id.
    """
    digest = hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def in_run(run_dir: Path, path: Path) -> Path:
    """``path``, once it is known to stay inside ``run_dir`` when links and ``..`` are followed.

    Whatever a run directory links to would otherwise be read and published as the run's own
    (a README.md linked to a secret, say), so such a source is refused.
    """
    if not path.resolve().is_relative_to(run_dir.resolve()):
        raise InputError(
            "refusing to publish a file that leads outside the run directory (a symlink or "
            "'..'); copy it into the run instead",
            file=str(path),
        )
    return path


def pairs_source(run_dir: Path) -> Path:
    """The pairs to publish: the human-reviewed ones if the run has them, else ``pairs.jsonl``."""
    reviewed = run_dir / REVIEWED_PAIRS
    if reviewed.exists():
        return in_run(run_dir, reviewed)
    path = run_dir / run_files.PAIRS
    if not path.exists():
        raise InputError(
            f"no pairs to publish; run `charter pairs run_dir={run_dir}` first", file=str(path)
        )
    return in_run(run_dir, path)


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The run's composed config, resolved (``${...}`` filled in) where it can be."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        raise InputError("not a charter run directory (no .hydra/config.yaml)", file=str(path))
    in_run(run_dir, path)
    register_resolvers()
    cfg = OmegaConf.load(path)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that only made sense inside the run: keep it as written
        resolved = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(resolved, dict)
    return resolved


def _constitution_file(run_dir: Path, config: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    """The run's constitution file, checked against the hash in its pairs."""
    raw = (config.get("constitution") or {}).get("path")
    if not raw:
        raise InputError("the run's config names no constitution.path", file=str(run_dir))
    path = resolve_path(str(raw))
    constitution = load_constitution(path)
    used = {r.get("constitution_sha256") for r in rows} - {None}
    if used and used != {constitution.sha256}:
        raise InputError(
            f"constitution changed since the run: file sha256 {constitution.sha256[:12]}, pairs "
            f"made with {', '.join(sorted(s[:12] for s in used))}; restore the file or rerun",
            file=str(path),
        )
    return path


def upload_card(
    card: str,
    data_files: dict[str, str],
    counts: dict[str, int],
    fmt: str,
    reviewed: int = 0,
    sft: dict[str, tuple[str, int]] | None = None,
    accuracy: dict[str, Any] | None = None,
) -> str:
    """The run's card with its Hub header pointing at the split files, plus a files section.

    ``sft`` maps split -> (file, rows) of a critique/revision run's SFT data: a second config.
    """
    header: dict[str, Any] = {}
    body = card
    if card.startswith("---\n"):
        end = card.find("\n---\n", 4)
        if end != -1:
            header = yaml.safe_load(card[4:end]) or {}
            body = card[end + 5 :]
    header["configs"] = [
        {
            "config_name": "default",
            "data_files": [{"split": s, "path": p} for s, p in data_files.items()],
        }
    ]
    if sft:
        header["configs"].append(
            {
                "config_name": "sft",
                "data_files": [{"split": s, "path": p} for s, (p, _) in sft.items()],
            }
        )
    files = [
        "",
        "## Splits and files",
        "",
        f"Row format: `{fmt}`. Prompts are split by a hash of their messages, so all pairs of one",
        "prompt share a split.",
        "",
        "| split | file | pairs |",
        "|---|---|---|",
        *(f"| {s} | `{p}` | {counts[s]} |" for s, p in data_files.items()),
        "",
        "`constitution.yaml` is the constitution the judge used and `charter_config.yaml` the full",
        "configuration of the run.",
        "",
    ]
    if sft:
        files += [
            "The `sft` config holds the SFT rows (TRL's `prompt`/`completion`, the chain in",
            "`revision_chain`), split by the same prompt hash:",
            "",
            "| split | file | rows |",
            "|---|---|---|",
            *(f"| {s} | `{p}` | {n} |" for s, (p, n) in sft.items()),
            "",
        ]
    if reviewed:
        files += [
            f"{reviewed} of {sum(counts.values())} pairs carry a human label",
            "(`label_source: human`; the judge's pick is kept in `judge_chosen_id`),",
            "the rest the judge's label (`label_source: judge`). See `charter review`.",
            "",
        ]
    files += card_section(accuracy)
    head = yaml.safe_dump(header, sort_keys=False).strip()
    return f"---\n{head}\n---\n{body.rstrip()}\n" + "\n".join(files)


def _write_split(rows: list[dict[str, Any]], path: Path, fmt: ExportFormat, like: Any) -> None:
    if fmt == "jsonl":
        write_jsonl_atomic(path, rows)
        return
    from datasets import Dataset

    # empty splits keep the columns of the full table, so both files share one schema
    table = Dataset.from_list(rows) if rows else like.select([])
    table.to_parquet(str(path))


def _write_sft(run_dir: Path, folder: Path, test_fraction: float) -> dict[str, tuple[str, int]]:
    """Split a revision run's ``sft.jsonl`` like the pairs and write it as Parquet under
    ``folder/sft``; return split -> (file, rows), empty for runs without SFT data."""
    from datasets import Dataset

    source = run_dir / run_files.SFT
    rows = [row for _, row in read_jsonl(in_run(run_dir, source))] if source.exists() else []
    if not rows:  # no revision run, or every revision was dropped: no sft/ folder at all
        return {}
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for row in rows:
        splits[prompt_split(row["prompt"], test_fraction)].append(row)
    (folder / "sft").mkdir()
    written = {}
    for split, split_rows in splits.items():
        if split_rows:
            Dataset.from_list(split_rows).to_parquet(str(folder / "sft" / f"{split}.parquet"))
            written[split] = (f"sft/{split}.parquet", len(split_rows))
    return written


def _accuracy_estimate(run_dir: Path) -> dict[str, Any] | None:
    """The label-accuracy estimate of ``charter review import``, if the run was reviewed."""
    report = run_dir / REVIEWED_PAIRS.parent / "report.json"
    if not report.exists():
        return None
    return json.loads(in_run(run_dir, report).read_text(encoding="utf-8")).get("accuracy_estimate")


def build_upload_folder(run_dir: Path, settings: PublishSettings) -> Path:
    """Build the folder a Hub repo gets (see the module docstring) and return its path.

    Raises:
        InputError: the run has no pairs, card or config, or its constitution file changed.
    """
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    fmt = check_format(settings.format)
    source = pairs_source(run_dir)
    rows = [row for _, row in read_jsonl(source)]
    card_path = run_dir / "README.md"
    if not card_path.exists():
        raise InputError(
            f"no dataset card; run `charter pairs run_dir={run_dir}` first", file=str(card_path)
        )
    in_run(run_dir, card_path)
    config = _run_config(run_dir)
    constitution = _constitution_file(run_dir, config, rows)
    exported = [export_row(r, fmt) for r in rows]
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for row, out in zip(rows, exported, strict=True):
        splits[prompt_split(row["prompt"], settings.test_fraction)].append(out)
    if settings.test_fraction == 0:
        splits.pop("test")
    suffix = file_suffix(fmt)
    data_files = {s: f"data/{s}.{suffix}" for s in splits}
    folder = Path(settings.out) if settings.out else run_dir / "upload"
    _check_replaceable(folder)
    like = Dataset.from_list(exported) if exported and fmt != "jsonl" else None
    with atomic_dir(folder) as tmp:
        (tmp / "data").mkdir()
        for split, split_rows in splits.items():
            _write_split(split_rows, tmp / data_files[split], fmt, like)
        counts = {s: len(r) for s, r in splits.items()}
        reviewed = sum(r.get("label_source") == "human" for r in rows)
        sft = _write_sft(run_dir, tmp, settings.test_fraction)
        card = upload_card(
            card_path.read_text(encoding="utf-8"),
            data_files,
            counts,
            fmt,
            reviewed,
            sft,
            _accuracy_estimate(run_dir),
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
        shutil.copyfile(constitution, tmp / "constitution.yaml")
        (tmp / "charter_config.yaml").write_text(
            yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
    return folder


def _check_replaceable(folder: Path) -> None:
    """Refuse to build over anything but an earlier upload folder: building replaces it whole,
    and ``out=..`` or ``out=~`` must not take a user's files with it."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise InputError(
            "exists and is not an upload folder; choose a new folder", file=str(folder)
        )
    strangers = sorted(p.name for p in folder.iterdir() if p.name not in UPLOAD_NAMES)
    if strangers:
        raise InputError(
            f"exists and holds files an upload folder does not ({', '.join(strangers[:3])}); "
            "choose a new folder",
            file=str(folder),
        )


def _check_no_links(folder: Path) -> None:
    """Uploads follow links; the folder must hold only its own plain files and folders."""
    for path in folder.rglob("*"):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise InputError(
                "refusing to upload a link or special file from the upload folder",
                file=str(path),
            )


def copy_to_target(folder: Path, target: str, repo_id: str) -> Path:
    """Publish to a local folder standing in for the Hub: ``TARGET/ORG/NAME``, replaced whole."""
    _check_no_links(folder)
    dest = Path(target).expanduser() / repo_id
    with atomic_dir(dest) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
    return dest


def upload(folder: Path, settings: PublishSettings) -> str:
    """Upload ``folder`` to the dataset repo as one commit, creating the repo if needed.

    A repo this call creates is deleted again if the upload fails, so a failure never leaves an
    empty repo behind and a rerun starts as the first try did; a repo that existed is left as it
    was (the commit either lands whole or not at all).

    Returns:
        the dataset's URL.

    Raises:
        InputError: no token, or the Hub could not be reached or refused; one line, without the
            token.
    """
    _check_no_links(folder)
    token = os.environ.get(settings.token_env) or None
    if token is None:
        raise InputError(
            f"no Hub token: set {settings.token_env} (or dry_run=true to only build the folder)",
            field=settings.token_env,
        )
    created = False
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        created = _create_if_missing(api, settings)
        api.upload_folder(
            repo_id=settings.repo_id,
            repo_type="dataset",
            folder_path=str(folder),
            commit_message="charter publish",
        )
    except BaseException as exc:  # network, auth, offline mode: all end the same way for the user
        left = _undo_create(api, settings.repo_id) if created else "nothing was uploaded"
        if not isinstance(exc, Exception):  # Ctrl-C: the repo is cleaned up, the stop goes on
            raise
        raise InputError(
            f"could not publish to the Hub ({_reason(exc, token)}); {left}; the complete folder "
            f"is at {folder}, rerun to publish it",
            field="repo_id",
        ) from None
    return f"https://huggingface.co/datasets/{settings.repo_id}"


def _create_if_missing(api: Any, settings: PublishSettings) -> bool:
    """Create the dataset repo unless it exists; True only if this call created it."""
    from huggingface_hub.errors import HfHubHTTPError

    if api.repo_exists(settings.repo_id, repo_type="dataset"):
        return False
    try:
        api.create_repo(settings.repo_id, repo_type="dataset", private=settings.private)
    except HfHubHTTPError as exc:
        # created by someone else in between: theirs, never to be deleted on our failure
        if exc.response is not None and exc.response.status_code == 409:
            return False
        raise
    return True


def _reason(exc: BaseException, token: str) -> str:
    """An exception's type and first line, with the token masked should the client echo it."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}".replace(token, "***")


def _undo_create(api: Any, repo_id: str) -> str:
    """Delete the repo this upload created; say what is left on the Hub."""
    try:
        api.delete_repo(repo_id, repo_type="dataset", missing_ok=True)
    except Exception:
        return f"nothing was uploaded, but the empty repo {repo_id} it created could not be deleted"
    return "nothing was uploaded and the repo it created was deleted"


def publish(run_dir: Path, settings: PublishSettings) -> str:
    """``charter publish``: build the folder, then stop (dry run), copy (target) or upload.

    Returns:
        one line saying where the dataset went.
    """
    folder = build_upload_folder(run_dir, settings)
    if settings.dry_run:
        return f"dry run: upload folder for {settings.repo_id} written to {folder}"
    if settings.target:
        dest = copy_to_target(folder, settings.target, settings.repo_id)
        return f"published {settings.repo_id} to local target {dest}"
    return f"published {settings.repo_id}: {upload(folder, settings)}"
