"""Budgets on ``charter run``: stop cleanly before a run spends more than it was given.

A :class:`SpendMeter` sits between the call cache and each model, so it sees only the calls that
cost something. Before each batch it asks the :class:`Ledger` whether the batch fits what is
left. If it does not, :class:`BudgetReached` is raised before the call is made. The batches
already finished are in the call cache, so ``charter run run_dir=DIR`` resumes where the run
stopped and pays only for the rest (each invocation gets its budget afresh).

What a batch may cost is known before it runs, up to its output:
- input tokens are counted with the engine's tokenizer;
- output tokens are at most ``max_new_tokens`` per sample (one token per choice score);
- seconds are estimated from this run's own rate so far, or from earlier runs' records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from charter.errors import InputError
from charter.generators.engine import Engine, SamplingSettings
from charter.records import Chat, Completion


@dataclass(frozen=True)
class Budget:
    """Limits for one invocation of ``charter run`` (``budget.*``); None means no limit.

    Args:
        max_seconds: wall-clock seconds spent in model calls.
        max_tokens: input plus output tokens of the calls that reach a model.
        max_cost: money, from each engine's ``price_per_mtok`` (input and output, per million
            tokens); an engine without prices costs nothing.
    """

    max_seconds: float | None = None
    max_tokens: float | None = None
    max_cost: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_seconds", "max_tokens", "max_cost"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InputError(
                    f"budget.{name} must be a positive number, got {value!r}",
                    field=f"budget.{name}",
                )

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_seconds, self.max_tokens, self.max_cost))


class BudgetReached(Exception):
    """Raised before a batch that would take the run past its budget; carries the one line the
    user sees."""


@dataclass
class Ledger:
    """What this invocation has spent, shared by every metered engine."""

    budget: Budget
    seconds: float = 0.0
    tokens: int = 0
    cost: float = 0.0
    requests: int = 0
    seconds_per_unit: dict[str, float] = field(default_factory=dict)
    """Seconds per sample (generate) or per chat (choice scores), from this run or records."""

    def check(self, kind: str, units: int, tokens: int, cost: float) -> None:
        """Raise :class:`BudgetReached` if a batch of ``units`` could pass any limit."""
        b = self.budget
        over = []
        if b.max_tokens is not None and self.tokens + tokens > b.max_tokens:
            over.append(
                f"budget.max_tokens={b.max_tokens:g} ({self.tokens} spent, next batch "
                f"up to {tokens})"
            )
        if b.max_cost is not None and self.cost + cost > b.max_cost:
            over.append(
                f"budget.max_cost={b.max_cost:g} ({self.cost:.4f} spent, next batch up "
                f"to {cost:.4f})"
            )
        rate = self.seconds_per_unit.get(kind)
        if b.max_seconds is not None and rate is not None:
            expected = rate * units
            if self.seconds + expected > b.max_seconds:
                over.append(
                    f"budget.max_seconds={b.max_seconds:g} ({self.seconds:.1f} s spent, "
                    f"next batch about {expected:.1f} s)"
                )
        if over:
            raise BudgetReached("; ".join(over))

    def add(self, kind: str, units: int, seconds: float, tokens: int, cost: float) -> None:
        self.seconds += seconds
        self.tokens += tokens
        self.cost += cost
        self.requests += units
        if units:
            self.seconds_per_unit[kind] = seconds / units


def prices(engine: Any) -> tuple[float, float]:
    """(input, output) price per million tokens of an engine; (0, 0) when it has none."""
    table = getattr(engine, "price_per_mtok", None) or {}
    return float(table.get("input", 0.0)), float(table.get("output", 0.0))


class SpendMeter:
    """An :class:`~charter.generators.engine.Engine` that checks and records each batch's spend
    in ``ledger`` around the calls it passes to ``inner``."""

    def __init__(self, inner: Engine, ledger: Ledger) -> None:
        self.inner = inner
        self.ledger = ledger
        self.model_id = inner.model_id
        self.context_length = inner.context_length
        self.price_in, self.price_out = prices(inner)

    def count_tokens(self, chats: Sequence[Chat]) -> list[int]:
        return self.inner.count_tokens(chats)

    @property
    def supports_json_schema(self) -> bool:
        return bool(getattr(self.inner, "supports_json_schema", False))

    def _cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price_in + tokens_out * self.price_out) / 1e6

    def _metered(
        self, kind: str, chats: Sequence[Chat], units: int, most_out: int, call: Callable[[], Any]
    ) -> tuple[Any, int, float]:
        tokens_in = sum(self.inner.count_tokens(chats)) if chats else 0
        self.ledger.check(kind, units, tokens_in + most_out, self._cost(tokens_in, most_out))
        start = time.perf_counter()
        out = call()
        return out, tokens_in, time.perf_counter() - start

    def generate(
        self,
        chats: Sequence[Chat],
        sampling: SamplingSettings,
        n: int = 1,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> list[list[Completion]]:
        schema = {} if json_schema is None else {"json_schema": json_schema}
        units = len(chats) * n
        out, tokens_in, seconds = self._metered(
            "generate",
            chats,
            units,
            units * sampling.max_new_tokens,
            lambda: self.inner.generate(chats, sampling, n, **schema),
        )
        tokens_out = sum(c.num_tokens for completions in out for c in completions)
        tokens = tokens_in + tokens_out
        self.ledger.add("generate", units, seconds, tokens, self._cost(tokens_in, tokens_out))
        return out

    def choice_logprobs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float]]:
        out, tokens_in, seconds = self._metered(
            "choice_logprobs",
            chats,
            len(chats),
            len(chats),
            lambda: self.inner.choice_logprobs(chats, choices),
        )
        tokens = tokens_in + len(chats)
        cost = self._cost(tokens_in, len(chats))
        self.ledger.add("choice_logprobs", len(chats), seconds, tokens, cost)
        return out
