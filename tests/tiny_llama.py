"""A tiny random Llama for trainer tests, built once per test session.

Every TRL trainer step on it takes well under two seconds on CPU, so each trainer can run a real
optimisation step in the fast suite. Its outputs are noise; tests check plumbing (the loss moves,
the saved model reloads), never quality.

Usage in a test module::

    from tests.tiny_llama import tiny_llama  # noqa: F401  (the fixture)

    def test_step(tiny_llama: Path): ...
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine_fixtures import build_tiny_llama

_BUILT: dict[Path, Path] = {}


def tiny_llama_dir(base: Path) -> Path:
    """Build (once per ``base`` per session) and return a folder holding the tiny Llama.

    The model has hidden size 64, 2 layers, head_dim 32 and SmolLM2's tokenizer and chat template
    (taken from the converted embedded model), so chat formatting matches the real model.
    """
    base = Path(base)
    if base not in _BUILT:
        dest = base / "tiny-llama"
        if not (dest / "config.json").is_file():
            dest.mkdir(parents=True, exist_ok=True)
            build_tiny_llama(dest)
        _BUILT[base] = dest
    return _BUILT[base]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session-wide path of the tiny random Llama (see :func:`tiny_llama_dir`)."""
    return tiny_llama_dir(tmp_path_factory.mktemp("tiny-llama-model"))
