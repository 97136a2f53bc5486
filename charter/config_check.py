"""Check a composed config's values before a command runs any stage.

Hydra accepts any value for any key (``judge.combine=banana``, ``chunk_size=0``), and the mistake
used to surface much later, deep inside a stage, as a traceback. Here every value is checked
against what will read it, so a bad one stops the command at once with one line naming the key:

- keys under a ``_target_`` node are checked against the type hints of the class they configure
  (``Literal`` choices, ``int``, ``float``, ``bool``, ``str``, ``X | None``, lists and tuples);
- plain keys the commands read themselves (``seed``, ``chunk_size``, ``prompts.limit``, ...) are
  checked against :data:`PLAIN_KEYS`, which also holds the ranges a type hint cannot state.

Interpolations are resolved first, so ``seed=${nope}`` is reported on the key that holds it.
Ranges the classes check themselves (``Budget``, ``PromptFields``) are left to them.
"""

from __future__ import annotations

import importlib
import inspect
import math
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from charter.errors import InputError
from charter.generators.model_files import check_model_name


@dataclass(frozen=True)
class Expect:
    """What one plain key must hold: a type, an optional range or set of choices, maybe null."""

    kind: type
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False

    def problem(self, value: Any) -> str | None:
        """Why ``value`` does not fit, or None if it does."""
        if value is None:
            return None if self.nullable else f"must be {self.describe()}, not null"
        if self.choices:
            ok = isinstance(value, str) and value in self.choices
        else:
            ok = _fits(value, self.kind)
            ok = ok and (self.minimum is None or value >= self.minimum)
            ok = ok and (self.maximum is None or value <= self.maximum)
        return None if ok else _mismatch(self.describe(), value, self.kind is str)

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        text = _describe(self.kind)
        low, high = _number(self.minimum), _number(self.maximum)
        if low is not None and high is not None:
            text += f" from {low} to {high}"
        elif low is not None:
            text += f" >= {low}"
        return text + (" or null" if self.nullable else "")


def _number(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


PLAIN_KEYS: dict[str, Expect] = {
    "seed": Expect(int, minimum=0, maximum=2**32 - 1),  # what numpy and torch all take
    "chunk_size": Expect(int, minimum=1),
    "stream_window": Expect(int, minimum=1),
    "experiment_name": Expect(str),
    "run_dir": Expect(str, nullable=True),
    "cache_dir": Expect(str, nullable=True),
    "call_cache": Expect(bool),
    "call_cache_commit_s": Expect(float, minimum=0),
    "limit": Expect(int, minimum=1, nullable=True),
    "principle": Expect(str, nullable=True),
    "injection_pairs": Expect(int, minimum=0),
    "fresh_judge": Expect(bool),
    "data": Expect(str, nullable=True),
    "action": Expect(str, choices=("export", "import")),
    "file": Expect(str, nullable=True),
    "prompts.path": Expect(str),
    "prompts.limit": Expect(int, minimum=1, nullable=True),
    "judge.calibration": Expect(str, nullable=True),
    "constitution.path": Expect(str),
    "generator.num_samples": Expect(int, minimum=1),
    "generator.sampling.max_new_tokens": Expect(int, minimum=1),
    "generator.sampling.temperature": Expect(float, minimum=0),
    "generator.sampling.top_p": Expect(float, minimum=0, maximum=1),
    "pairs.min_margin": Expect(float, minimum=0, maximum=1),
    "plan.before_run": Expect(bool),
    "plan.probe": Expect(bool),
    "report.enabled": Expect(bool),
    "report.max_pairs": Expect(int, minimum=0),
}
"""Keys the commands read directly (or whose range no type hint states), by dotted path; each is
checked only where the command's config has it."""

_LOCAL_ENGINES = (
    "charter.generators.transformers_engine.TransformersEngine",
    "charter.generators.vllm_engine.VLLMEngine",
)
"""Engines whose ``model`` names files on this machine, so a missing one is refused up front
(an OpenAI-compatible engine's ``model`` is whatever its server calls the model)."""

STAGE_KEYS = ("principle_per", "ranking", "principle_aggregation")
"""Top-level keys handed to :func:`~charter.judges.stage.judge_candidates` as they are: checked
against its parameter hints, so a choice added there (``principle_per=all``) is accepted here."""

NESTED_MAPPINGS = ("prompts.fields", "generator.sampling", "generator.engine", "judge.engine")
"""Config nodes below the top level that every command reading them expects as a mapping."""

BUILT_NODES = (
    "generator.engine",
    "generator.sampling",
    "judge",
    "judge.engine",
    "pairs",
    "executor",
    "queue",
    "publish",
    "calibration",
    "revise",
    "trainer",
)
"""Nodes the commands build with :func:`~charter.building.build`, where present: each needs its
``_target_`` (``~generator.sampling._target_`` would hand a stage a config, not settings)."""

PROMPT_FIELDS = ("id", "prompt", "messages", "system")


def check_config(cfg: DictConfig, config_name: str | None = None) -> None:
    """Refuse a config with a value of the wrong type or out of range.

    Args:
        cfg: the composed config.
        config_name: its primary config (``run``, ``review``, ...), whose file says which
            top-level keys are mappings (``budget`` is one in ``run``, a number in ``review``).

    Raises:
        InputError: naming the first bad key (``field``) and what it must hold.
    """
    _resolve_all(cfg)
    mappings = (*(_top_level_mappings(config_name) if config_name else ()), *NESTED_MAPPINGS)
    for key in mappings:
        found, value = _lookup(cfg, key)
        if found and not isinstance(value, DictConfig):
            raise InputError(
                f"must be a mapping of settings, not a value; got {value!r}", field=key
            )
    for key in BUILT_NODES:
        found, value = _lookup(cfg, key)
        if found and isinstance(value, DictConfig) and not isinstance(value.get("_target_"), str):
            raise InputError("needs a _target_: the class path of what it builds", field=key)
    for key, expect in PLAIN_KEYS.items():
        found, value = _lookup(cfg, key)
        if found and (problem := expect.problem(value)) is not None:
            raise InputError(problem, field=key)
    _check_stage_keys(cfg)
    _check_prompt_fields(cfg)
    for path, node in _target_nodes(cfg, ""):
        _check_target(path, node)
        if node.get("_target_") in _LOCAL_ENGINES and isinstance(node.get("model"), str):
            check_model_name(node.model, field=f"{path}.model")


@cache
def _top_level_mappings(config_name: str) -> tuple[str, ...]:
    """Top-level keys that are mappings in ``conf/{config_name}.yaml``: its config groups and the
    keys it sets to a mapping."""
    source = files("charter") / "conf" / f"{config_name}.yaml"
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ()
    keys = [k for k, v in data.items() if isinstance(v, dict) and k not in ("hydra", "defaults")]
    for entry in data.get("defaults") or []:
        if isinstance(entry, dict):
            for group in entry:
                name = str(group).removeprefix("optional ").removeprefix("override ")
                if "/" not in name and "@" not in name:
                    keys.append(name)
    return tuple(keys)


def _resolve_all(cfg: DictConfig) -> None:
    """Resolve every interpolation once, so a broken one names its key before any work (top-level
    keys first: ``seed=${nope}`` is reported on ``seed``, not on a key that copies it)."""
    try:
        for key in cfg:
            if OmegaConf.is_interpolation(cfg, key):
                cfg[key]  # noqa: B018 - resolving is the check
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as exc:
        raise config_error(exc) from None


def config_error(exc: OmegaConfBaseException) -> InputError:
    """An OmegaConf error (a missing key or value, a broken interpolation) as one line."""
    key = getattr(exc, "full_key", None) or None
    if isinstance(exc, MissingMandatoryValue):
        return InputError(f"needs a value: add {key}=...", field=key)
    if isinstance(exc, ConfigKeyError | ConfigAttributeError):
        return InputError("missing from the config, and the command needs it", field=key)
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return InputError(lines[0], field=key)


def _lookup(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """``(found, value)`` at a dotted path; not found where a part is absent, not a mapping, or
    a mandatory value (``???``) not given yet (the command says so when it reads it)."""
    node: Any = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node, DictConfig) or part not in node or OmegaConf.is_missing(node, part):
            return False, None
        node = node[part]
    last = parts[-1]
    if not isinstance(node, DictConfig) or last not in node or OmegaConf.is_missing(node, last):
        return False, None
    return True, node[last]


def _check_stage_keys(cfg: DictConfig) -> None:
    present = {key: value for key in STAGE_KEYS for found, value in [_lookup(cfg, key)] if found}
    if not present:
        return
    from charter.judges.stage import judge_candidates

    hints = _hints_of(judge_candidates)
    for key, value in present.items():
        if key in hints and not _fits(value, hints[key]):
            raise InputError(_mismatch(_describe(hints[key]), value, False), field=key)


def _check_prompt_fields(cfg: DictConfig) -> None:
    found, fields = _lookup(cfg, "prompts.fields")
    if not found:
        return
    if not isinstance(fields, DictConfig):
        raise InputError(
            f"must be a mapping of {', '.join(PROMPT_FIELDS)} to column names; got {fields!r}",
            field="prompts.fields",
        )
    for name in fields:
        key = f"prompts.fields.{name}"
        if name not in PROMPT_FIELDS:
            raise InputError(f"unknown key; known: {', '.join(PROMPT_FIELDS)}", field=key)
        value = fields[name]
        if value is not None and not isinstance(value, str):
            raise InputError(f"must be a column name (text) or null; got {value!r}", field=key)


def _target_nodes(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    """Every node with a ``_target_`` under ``node``, with its dotted path."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            if not OmegaConf.is_missing(node, key):
                yield from _target_nodes(node[key], f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node):
            yield from _target_nodes(item, f"{path}[{index}]")


def _target_hints(target: Any) -> dict[str, Any]:
    """The parameter type hints of a ``_target_``; empty when it cannot be imported here (the
    build reports that with its real cause) or its hints cannot be resolved."""
    if not isinstance(target, str) or "." not in target:
        return {}
    module_name, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except Exception:  # noqa: BLE001 - any failure here is reported by the build itself
        return {}
    return _hints_of(obj.__init__ if inspect.isclass(obj) else obj)


def _hints_of(func: Any) -> dict[str, Any]:
    """A callable's parameter type hints; empty where they cannot be resolved (then unchecked)."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - a hint naming a type only imported for type checkers
        return {}
    hints.pop("return", None)
    return hints


HYDRA_KEYS: dict[str, Any] = {
    "_target_": str,
    "_partial_": bool,
    "_recursive_": bool,
    "_convert_": Literal["none", "partial", "object", "all"],
    "_args_": list[Any],
}
"""The keys Hydra itself reads from a node it builds (it raises a bare TypeError on a bad one)."""


def _check_target(path: str, node: DictConfig) -> None:
    for key, hint in HYDRA_KEYS.items():
        if key in node and not _fits(_plain(node[key]), hint):
            field = f"{path}.{key}" if path else key
            raise InputError(_mismatch(_describe(hint), node[key], False), field=field)
    hints = _target_hints(node.get("_target_"))
    for key in node:
        if not isinstance(key, str) or key.startswith("_") or key not in hints:
            continue
        if OmegaConf.is_missing(node, key):
            continue
        value = _plain(node[key])  # a nested node passes where a class is expected
        if not _fits(value, hints[key]):
            field = f"{path}.{key}" if path else key
            wants_text = _fits("text", hints[key])
            raise InputError(_mismatch(_describe(hints[key]), value, wants_text), field=field)


def _plain(value: Any) -> Any:
    """A list node as a list, for checking its items; mappings stay nodes (checked on their own)."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value


def _fits(value: Any, hint: Any) -> bool:
    """Whether a config value can be passed where ``hint`` is expected.

    A class (an engine protocol, a settings dataclass) takes a mapping, which is checked as its
    own node; other hints (callables, type variables) accept anything: the check is for values a
    user types, not for objects Hydra builds.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok and math.isfinite(value)
    if hint in (str, Path):
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        if len(value) != len(args):
            return False
        return all(_fits(v, a) for v, a in zip(value, args, strict=True))
    if origin in (list, Sequence) and args:
        return isinstance(value, list | tuple) and all(_fits(v, args[0]) for v in value)
    if origin in (dict, Mapping):
        return isinstance(value, dict | DictConfig)
    if inspect.isclass(hint) and hint.__module__ != "builtins":
        return isinstance(value, dict | DictConfig)  # a nested object (an engine, settings)
    return True


def _mismatch(expected: str, value: Any, wants_text: bool) -> str:
    shown = repr(value)
    message = f"must be {expected}; got {shown if len(shown) <= 80 else shown[:77] + '...'}"
    if wants_text and isinstance(value, int | float) and not isinstance(value, bool):
        message += " (to pass a number as text, quote it: key='123')"
    return message


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    names = {
        type(None): "null",
        bool: "true or false",
        int: "an integer",
        float: "a finite number",
        str: "text",
        Path: "a path",
    }
    if hint in names:
        return names[hint]
    if origin in (tuple, list, Sequence):
        return "a list [...]"
    if inspect.isclass(hint) and hint.__module__ != "builtins":
        return "a mapping of settings"
    return getattr(hint, "__name__", str(hint))
