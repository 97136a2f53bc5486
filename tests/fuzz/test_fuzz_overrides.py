"""Hydra overrides with bad values, for every key of every command's config: the config either
fails to compose (Hydra's error, as one line), is refused by ``charter.config_check`` naming the
key, or is fine; and a ``charter run`` on a config that passed either finishes or stops with one
clear error, leaving no half-written file.

In-process, as the CLI does it (``charter.cli`` wraps the same calls), so hundreds of overrides
take seconds; ``tests/fuzz/test_fuzz_cli.py`` runs a few through the real command line.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from charter.building import build, register_resolvers
from charter.cli import hydra_error_message
from charter.config_check import check_config, config_error
from charter.errors import InputError
from tests.fuzz.fuzzing import ending, examples

FAKE = ["engine@generator.engine=fake", "engine@judge.engine=fake", "experiment=smoke"]
BASES = {
    "run": FAKE,
    "eval_judge": ["engine@judge.engine=fake"],
    "calibrate": ["engine@judge.engine=fake"],
    "review": [],
    "publish": [],
}
RUN_JUDGES = ("pairwise", "pointwise", "structured", "contrast", "chain_of_thought", "pmi", "jury")

BAD_VALUES = (
    "banana",
    "0",
    "-1",
    "1.5",
    "-0.5",
    "2",
    "nan",
    "inf",
    "-inf",
    "1e999",
    "99999999999999999999999",
    "true",
    "false",
    "null",
    "''",
    "'1'",
    "[]",
    "[1,2]",
    "[a, [b]]",
    "{}",
    "{a: 1}",
    "${nope}",
    "${seed}",
    "${oc.env:CHARTER_FUZZ_UNSET}",
    "'${oc.decode:x}'",
    "a b",
    "=",
    "'unterminated",
    "\\\\",
    "x" * 300,
)


@contextmanager
def hydra_context() -> Iterator[None]:
    register_resolvers()
    with initialize_config_module("charter.conf", version_base="1.3"):
        yield


def composed(config: str, overrides: list[str]) -> DictConfig:
    """The config, or the one line the CLI prints when Hydra cannot compose it."""
    try:
        return compose(config, overrides=overrides)
    except Exception as exc:  # noqa: BLE001 - the CLI turns any composition failure into a line
        raise InputError(hydra_error_message(exc)) from None


def _keys(node: object, prefix: str = "") -> Iterator[str]:
    """Every key of a config, mappings and lists as well as their leaves."""
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            if not OmegaConf.is_missing(node, key):
                yield from _keys(node._get_node(key), path)
    elif isinstance(node, ListConfig):
        for index in range(len(node)):
            yield f"{prefix}.{index}"


with hydra_context():
    KEYS = {name: sorted(set(_keys(compose(name, overrides=base)))) for name, base in BASES.items()}
    KEYS["run"] = sorted(
        {k for j in RUN_JUDGES for k in _keys(compose("run", overrides=[*FAKE, f"judge={j}"]))}
    )

FINE_VALUES = ("1", "3", "0.5", "0.0", "true", "false", "null", "prompt", "comparison")
FINE_VALUES += ("tournament", "probability", "all_pairs_above_margin", "pair_tokens")
"""Values some keys take, so that a share of the runs gets past the checks and does work."""

override_values = st.one_of(
    st.sampled_from(BAD_VALUES), st.sampled_from(FINE_VALUES), st.text(max_size=12)
)


@st.composite
def overrides(draw: st.DrawFn, config: str) -> list[str]:
    out = []
    if config == "run":
        out.append(f"judge={draw(st.sampled_from(RUN_JUDGES))}")
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        key = draw(st.one_of(st.sampled_from(KEYS[config]), st.sampled_from(["nokey", "seed"])))
        form = draw(st.sampled_from(["set", "set", "set", "add", "force", "delete"]))
        value = draw(override_values)
        out.append(
            {"set": f"{key}={value}", "add": f"+{key}={value}", "force": f"++{key}={value}"}.get(
                form, f"~{key}"
            )
        )
    return out


def _settings_nodes(cfg: DictConfig) -> Iterator[tuple[str, DictConfig]]:
    """The ``_target_`` nodes that build plain settings dataclasses (nothing loads a model)."""
    stack: list[tuple[str, object]] = [("", cfg)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, DictConfig):
            continue
        target = node.get("_target_") if "_target_" in node else None
        if isinstance(target, str) and "." in target:
            module, _, name = target.rpartition(".")
            cls = getattr(importlib.import_module(module), name, None)
            if dataclasses.is_dataclass(cls) and not path.startswith("trainer"):
                yield path, node
                continue
        for key in node:
            if not OmegaConf.is_missing(node, key):
                stack.append((f"{path}.{key}" if path else str(key), node[key]))


@examples(40)
@given(config=st.sampled_from(sorted(BASES)), data=st.data())
def test_any_override_composes_and_is_checked_or_is_one_line(
    config: str, data: st.DataObject
) -> None:
    given_overrides = data.draw(overrides(config))
    with hydra_context(), ending("overrides (compose + check)"):
        try:
            cfg = composed(config, [*BASES[config], *given_overrides])
            check_config(cfg, config)
            for path, node in _settings_nodes(cfg):
                build(node, path)
        except OmegaConfBaseException as exc:  # a key the checks read was deleted
            raise config_error(exc) from None


@examples(10)
@given(data=st.data())
def test_a_run_with_any_checked_override_finishes_or_stops_cleanly(data: st.DataObject) -> None:
    from charter.commands.run import run_all

    given_overrides = data.draw(overrides("run"))
    out = Path(tempfile.mkdtemp())
    here = Path.cwd()
    os.chdir(out)  # a fuzzed relative path (cache_dir=banana) lands in the temp folder
    try:
        settings = ["report.enabled=false", f"cache_dir={out / 'cache'}"]
        with hydra_context(), ending("overrides (charter run)") as end:
            try:
                cfg = composed("run", [*FAKE, *settings, *given_overrides])
                check_config(cfg, "run")
                run_all(cfg, out / "run")
            except OmegaConfBaseException as exc:
                raise config_error(exc) from None
            except SystemExit as stop:  # a budget reached: exit 3, resumable, said in one line
                assert stop.code == 3
        end.check_files(out)
    finally:
        os.chdir(here)
        shutil.rmtree(out, ignore_errors=True)


# found by the properties above: each was a traceback (or Hydra's multi-line wrapper), an error
# only after generating and judging, or a run that went ahead with a wrong value
FOUND = [
    (["judge.combine=banana"], "judge.combine"),
    (["chunk_size=0"], "chunk_size"),
    (["stream_window=0"], "stream_window"),
    (["stream_window=abc"], "stream_window"),
    (["pairs.strategy=x"], "pairs.strategy"),
    (["pairs.min_margin=abc"], "pairs.min_margin"),
    (["pairs.min_margin=nan"], "pairs.min_margin"),
    (["seed=abc"], "seed"),
    (["seed=-3"], "seed"),
    (["seed=${nope}"], "seed"),
    (["prompts.limit=-1"], "prompts.limit"),
    (["generator.num_samples=0"], "generator.num_samples"),
    (["generator.engine.model_id=5"], "generator.engine.model_id"),
    (["report.max_pairs=x"], "report.max_pairs"),
    (["report=banana"], "report"),
    (["budget=3"], "budget"),
    (["generator.sampling=5"], "generator.sampling"),
    (["~generator.sampling._target_"], "generator.sampling"),
    (["+prompts.fields.foo=x"], "prompts.fields.foo"),
    (
        ["judge=jury", "judge.members.pointwise._partial_=banana"],
        "judge.members.pointwise._partial_",
    ),
    (["generator=5"], None),
    (["nokey=1"], None),
]


@pytest.mark.parametrize(("given_overrides", "field"), FOUND)
def test_overrides_the_fuzzing_found(given_overrides: list[str], field: str | None) -> None:
    with hydra_context(), ending("overrides (compose + check)") as end:
        check_config(composed("run", [*FAKE, *given_overrides]), "run")
    assert end.error is not None and end.error.field == field, end.error
