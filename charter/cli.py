"""The ``charter`` command line: ``charter <command> key=value ...``.

Every command but ``validate`` is a Hydra app, so Hydra's options work as Hydra users expect
(``hydra.run.dir=...``, ``-m`` sweeps, ``--cfg job``). A user's mistake ends with one line naming
the file, row and field, and exit status 2; never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from rich.markup import escape

from charter.building import register_resolvers
from charter.config_check import check_config, config_error
from charter.errors import InputError
from charter.gc_pacing import fewer_collections
from charter.progress import console
from charter.run_faults import survived

USAGE = """\
usage: charter <command> [key=value ...] [hydra options]

commands:
  run          generate -> judge -> pairs -> publish, in a new run directory
               (default: the CPU quickstart; e.g. `charter run experiment=smoke`);
               budget.max_seconds|max_tokens|max_cost=N stops it cleanly (exit 3), resumable
  generate     sample candidates for an existing run:  charter generate run_dir=DIR
  judge        judge the candidates of a run:          charter judge run_dir=DIR
  pairs        select pairs and publish the dataset:   charter pairs run_dir=DIR
  validate     check constitution files:               charter validate FILE [FILE ...]
  eval-judge   agreement of a judge with human labels: charter eval-judge data=FILE
               (compare judges: charter eval-judge data=FILE judge=pairwise,pointwise)
  calibrate    fit the judge's probabilities to human labels, cross-validated:
               charter calibrate data=FILE [judge=...] [constitution=...] | run_dir=REVIEWED_RUN
               then use it: charter run judge.calibration=outputs/calibrate/<ts>/calibration.json
  plan         what a run will ask, what the cache holds, seconds and cost, before loading a
               model: charter plan [the overrides of charter run]  (writes plan.json)
  report       a run's self-contained HTML page:       charter report RUN_DIR [against=OTHER_RUN]
               (run, eval-judge, calibrate and train write RUN_DIR/report.html themselves;
               report=false skips it)
  audit        principles proposed from judge-human disagreements, held-out checked:
               charter audit data=LABELLED [constitution=NAME]  (writes proposed.yaml + diff)
  prompts      prompts when you have none: charter prompts synthesize constitution=NAME n=200
               [exclude=HELD_OUT_FILE] (Magpie-style, constitution-directed, evolved; deduped)
  diff         what changed between two runs:          charter diff RUN_A RUN_B [out=FILE]
  cache        the model-call cache:                   charter cache stats [cache_dir=DIR]
               and: charter cache prune older_than_days=N | model=NAME [cache_dir=DIR]
  publish      build the Hub upload folder and push it: charter publish RUN_DIR repo_id=ORG/NAME
               [dry_run=true] [target=DIR] [private=true] [format=trl|openrlhf|verl|jsonl]
  compare      did a new model regress? both answer the same prompts, the judge compares them
               under every principle in both orders:  charter compare base=MODEL_A
               candidate=MODEL_B [prompts=FILE] [constitution=FILE|NAME] [compare.gate=true]
               (writes compare.json; with compare.gate=true a regression exits 4)
  train        train on a run's data:                  charter train trainer=reward data=RUN_DIR
               (trainer=dpo|sft|online_dpo|grpo|rloo|ppo; the closed loop: experiment=loop_cpu)
  review       the pairs the judge is least sure of:  charter review export RUN_DIR [budget=N]
               [format=jsonl|csv|argilla] [sample=random for an accuracy audit];
               merge labels: charter review import RUN_DIR FILE

Every model call is cached in <cache_dir>/calls.sqlite (call_cache=false turns it off), so a
rerun pays only for what changed; `charter run run_dir=DIR` resumes a killed run.
Configs live in charter/conf; see the composed config with `charter run --cfg job`.
Switch a backend with e.g. `engine@judge.engine=fake`, a constitution with
`constitution=helpful`, and sweep with `charter run -m constitution=harmless,helpful`.
"""

STAGE_COMMANDS = ("generate", "judge", "pairs")


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def with_run_overrides(args: list[str]) -> list[str]:
    """Recompose a stage command on top of the overrides its run was made with.

    ``charter judge run_dir=DIR judge.combine=probability`` judges DIR's candidates with DIR's
    own config plus the new override; later overrides of a key replace earlier ones.
    """
    run_dir = next((a.split("=", 1)[1] for a in args if _override_key(a) == "run_dir"), None)
    if run_dir is None:
        return args
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    saved = _saved_overrides(path) if path.is_file() else []
    new_keys = {_override_key(a) for a in args if "=" in a}
    kept = [o for o in saved or [] if _override_key(o) not in new_keys | {"hydra.run.dir"}]
    return [*kept, *args, f"hydra.run.dir={run_dir}"]


def _saved_overrides(path: Path) -> list[str]:
    """The overrides a run was made with (``.hydra/overrides.yaml``), refusing a damaged file."""
    try:
        saved = yaml.safe_load(path.read_bytes())
    except (OSError, yaml.YAMLError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) else "not valid YAML"
        raise InputError(f"cannot read the run's overrides: {problem}", file=str(path)) from None
    if saved is None:
        return []
    if not isinstance(saved, list) or not all(isinstance(o, str) for o in saved):
        raise InputError("expected a YAML list of key=value overrides", file=str(path))
    return saved


def print_error(message: str) -> None:
    """The one ``error:`` line of a user's mistake (a message's own line breaks are folded)."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)


_HYDRA_NOISE = ("full_key:", "object_type=", "See https://", "Set the environment variable")


def hydra_error_message(exc: BaseException) -> str:
    """A Hydra composition error (a bad override, an unknown config option) as one line.

    Hydra's own text spans several lines (and lists its search path); keep what says what is
    wrong and how to fix it.
    """
    if isinstance(exc, MissingConfigException):
        first = str(exc).strip().splitlines()[0]
        options = ", ".join(exc.options or [])
        return f"{first}; available: {options}" if options else first
    parts = []
    for error in (exc, exc.__cause__):
        if error is None:
            continue
        lines = [line.strip().rstrip(".") for line in str(error).splitlines()]
        parts += [line for line in lines if line and not line.startswith(_HYDRA_NOISE)]
    return "; ".join(dict.fromkeys(parts)) or type(exc).__name__


REPORTED = ("run", "eval-judge", "calibrate", "train")
"""Commands that end by writing ``report.html`` in their output directory (``report=false``
skips it)."""


def _hydra_app(
    config_name: str,
    task: Callable[[DictConfig, Path], None],
    report: bool = False,
    entered: list[bool] | None = None,
) -> Callable[[], None]:
    """The command as a Hydra app; ``entered`` gets a ``True`` once Hydra has composed the
    config and handed it over, so an error before that is known to be Hydra's."""

    @hydra.main(version_base="1.3", config_path="conf", config_name=config_name)
    def app(cfg: DictConfig) -> None:
        if entered is not None:
            entered.append(True)
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            check_config(cfg, config_name)
            with survived(out_dir, resumable=config_name == "run"):
                task(cfg, out_dir)
            if report:
                from charter.commands.shared import write_run_report

                write_run_report(cfg, out_dir)
        except InputError as exc:
            print_error(str(exc))
            raise SystemExit(2) from None
        except OmegaConfBaseException as exc:  # a key or value the config lacks
            print_error(str(config_error(exc)))
            raise SystemExit(2) from None

    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``charter`` script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    command, rest = args[0], args[1:]
    if command == "validate":
        from charter.commands.validate import validate

        raise SystemExit(validate(rest))
    from charter.commands import cache, diff, report

    plain: dict[str, Callable[[list[str]], int]] = {
        "diff": diff.diff,
        "cache": cache.cache,
        "report": report.report,
    }
    if command in plain:
        try:
            raise SystemExit(plain[command](rest))
        except InputError as exc:
            print_error(str(exc))
            raise SystemExit(2) from None
    # command -> (its config, "module:function" in charter.commands); only the command's own
    # module is imported, so `charter run` does not pay for the trainers' imports (seconds)
    tasks: dict[str, tuple[str, str]] = {
        "run": ("run", "run:run_all"),
        "generate": ("run", "generate_stage:run_generate"),
        "judge": ("run", "judge_stage:run_judge"),
        "pairs": ("run", "pairs_stage:run_pairs"),
        "eval-judge": ("eval_judge", "eval_judge:eval_judge"),
        "calibrate": ("calibrate", "calibrate:calibrate"),
        "publish": ("publish", "publish:publish_command"),
        "review": ("review", "review:review_command"),
        "train": ("train", "train:train"),
        "plan": ("run", "plan:plan"),
        "audit": ("audit", "audit:audit"),
        "prompts": ("synthesize", "synthesize:synthesize"),
        "compare": ("compare", "compare:compare"),
    }
    if command == "prompts":  # one action so far: `charter prompts synthesize key=value ...`
        if rest[:1] != ["synthesize"]:
            print("usage: charter prompts synthesize constitution=NAME n=N [...]", file=sys.stderr)
            raise SystemExit(2)
        rest = rest[1:]
    if command not in tasks:
        print(f"charter: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
        raise SystemExit(2)
    if command in STAGE_COMMANDS and not any(_override_key(a) == "run_dir" for a in rest):
        print(f"charter {command}: needs an existing run: add run_dir=outputs/...", file=sys.stderr)
        raise SystemExit(2)
    if command in ("publish", "review"):
        rest = positional_overrides(command, rest)
    if command == "compare":
        rest = [file_shorthand(a) for a in rest]
    if command in STAGE_COMMANDS or command in ("run", "plan"):
        try:
            rest = with_run_overrides(rest)
        except InputError as exc:
            print_error(str(exc))
            raise SystemExit(2) from None
    if command == "plan" and not any(_override_key(a) == "hydra.run.dir" for a in rest):
        rest = [*rest, "hydra.run.dir=outputs/plan/${now:%Y-%m-%d_%H-%M-%S}"]
    rest = [_report_switch(a) for a in rest]
    sweep_dir = None
    if command == "eval-judge":
        rest, sweep_dir = comparison_sweep(rest)
    register_resolvers()
    config_name, target = tasks[command]
    module_name, function = target.split(":")
    task = getattr(importlib.import_module(f"charter.commands.{module_name}"), function)
    sys.argv = [f"charter {command}", *rest]
    # Hydra then raises its composition errors instead of printing them over several lines
    # (and a bug's traceback comes whole); a mistake in an override becomes one line here.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    entered: list[bool] = []
    try:
        with fewer_collections():  # a stage's rows churn the young generation (see the module)
            _hydra_app(config_name, task, report=command in REPORTED, entered=entered)()
    except (HydraException, OmegaConfBaseException) as exc:
        print_error(hydra_error_message(exc))
        raise SystemExit(2) from None
    except Exception as exc:
        if entered:  # raised by the command itself: a bug, shown whole
            raise
        print_error(hydra_error_message(exc))  # composing the config from the overrides failed
        raise SystemExit(2) from None
    if sweep_dir is not None and sweep_dir.exists():
        from charter.judge_eval.compare_table import write_comparison

        print(write_comparison(sweep_dir), end="")
        console.print(f"comparison written to {sweep_dir}/comparison.{{md,json}}")


def _report_switch(arg: str) -> str:
    """``report=false`` / ``report=true`` switch the ``report`` node, which also holds
    ``max_pairs``."""
    key, sep, value = arg.partition("=")
    if sep and key == "report" and value.lower() in ("true", "false"):
        return f"report.enabled={value.lower()}"
    return arg


def file_shorthand(arg: str) -> str:
    """``prompts=FILE`` and ``constitution=FILE`` set the group's ``path``; a bare name
    (``constitution=helpful``) still picks a bundled option of the group."""
    key, sep, value = arg.partition("=")
    looks_like_file = "/" in value or Path(value).suffix != ""
    if sep and key in ("prompts", "constitution") and looks_like_file:
        return f"{key}.path={value}"
    return arg


def positional_overrides(command: str, args: list[str]) -> list[str]:
    """``publish RUN_DIR`` and ``review export|import RUN_DIR [FILE]``: positionals become keys."""
    names = ["run_dir"] if command == "publish" else ["action", "run_dir", "file"]
    positional = [a for a in args if "=" not in a and not a.startswith("-")]
    bad_action = command == "review" and positional[:1] not in (["export"], ["import"])
    if len(positional) > len(names) or bad_action:
        usage = "RUN_DIR" if command == "publish" else "export RUN_DIR | import RUN_DIR FILE"
        print(f"usage: charter {command} {usage} [key=value ...]", file=sys.stderr)
        raise SystemExit(2)
    keys = [f"{k}={v}" for k, v in zip(names, positional, strict=False)]
    return [*keys, *(a for a in args if a not in positional)]


def comparison_sweep(args: list[str]) -> tuple[list[str], Path | None]:
    """``eval-judge judge=a,b,c`` compares judges: run it as a sweep into a known folder.

    Hydra sweeps only with ``-m``; a comma list of judges without it would be an error, so we
    add ``-m`` and pin the sweep dir to collect every job's metrics into one table afterwards.
    """
    multirun = "-m" in args or "--multirun" in args
    listed = any(_override_key(a) == "judge" and "," in a for a in args)
    if not (multirun or listed):
        return args, None
    given = next((a.split("=", 1)[1] for a in args if _override_key(a) == "hydra.sweep.dir"), None)
    if given is None:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        given = f"outputs/eval-judge/compare_{stamp}"
        args = [*args, f"hydra.sweep.dir={given}"]
    if not multirun:
        args = ["-m", *args]
    return args, Path(given)
