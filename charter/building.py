"""Turn composed configs into objects: the only place that calls ``hydra.utils.instantiate``.

Classes never see a DictConfig. Errors raised while building (a bad model name, a bad value)
come back as :class:`~charter.errors.InputError` naming the config key, instead of Hydra's
"Error in call to target" wrapper.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from charter.errors import InputError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def package_data(name: str) -> str:
    """Absolute path of a file in ``charter/data`` (the ``${charter_data:NAME}`` resolver)."""
    return str(resources.files("charter") / "data" / name)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("charter_data"):
        OmegaConf.register_new_resolver("charter_data", package_data)


def resolve_path(path: str) -> Path:
    """A user path as given, else relative to the charter checkout (for bundled data)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    bundled = PROJECT_ROOT / p
    return bundled if bundled.exists() else p


def _input_error_in(exc: BaseException) -> InputError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, InputError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """Instantiate ``node`` (found at config ``key``), surfacing user errors plainly."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        inner = _input_error_in(exc)
        if inner is not None:
            raise inner from None
        cause = exc.__cause__ or exc
        raise InputError(f"{type(cause).__name__}: {cause}", field=key) from None


class EngineCache:
    """Load each distinct engine config once, so generator and judge can share one model."""

    def __init__(self) -> None:
        self._engines: dict[str, Any] = {}

    def get(self, node: DictConfig, key: str) -> Any:
        fingerprint = OmegaConf.to_yaml(node, resolve=True)
        if fingerprint not in self._engines:
            self._engines[fingerprint] = build(node, key)
        return self._engines[fingerprint]
