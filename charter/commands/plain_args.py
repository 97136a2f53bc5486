"""Arguments of the commands that take plain argv rather than a Hydra config (``diff``,
``cache``): they look at files that already exist, so there is nothing to compose, and they
answer in under a second."""

from __future__ import annotations

from charter.errors import InputError


def plain_args(args: list[str], keys: set[str]) -> tuple[list[str], dict[str, str]]:
    """Split plain argv into positionals and ``key=value`` options, refusing unknown keys."""
    positional, options = [], {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            positional.append(arg)
        elif key in keys:
            options[key] = value
        else:
            raise InputError(f"unknown option {key!r}; expected one of {', '.join(sorted(keys))}")
    return positional, options


def number(options: dict[str, str], key: str) -> float | None:
    if key not in options:
        return None
    try:
        return float(options[key])
    except ValueError:
        raise InputError(f"{key}={options[key]!r} is not a number", field=key) from None
