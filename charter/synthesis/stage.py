"""Synthesis in rounds: draft from each source, screen every draft, until ``n`` are kept.

Each source has a target, its share of ``n``. A round asks each source short of its target for
``oversample`` times its shortfall (filters drop some), Magpie and constitution first, then
evolves parents (the seed prompts first, then prompts kept so far) to fill the evolved target.
Rounds differ only in their seed (``sampling.seed + round``), so a rerun asks the same engine
calls and the call cache answers them. After ``max_rounds``, a source that fell short is made up
from other sources' surplus; what is left over is dropped as ``surplus``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from charter.constitution import Constitution
from charter.errors import InputError
from charter.generators.engine import SamplingSettings
from charter.synthesis.dedup import DedupSettings
from charter.synthesis.diversity import distinct_n
from charter.synthesis.drafts import SOURCES, Draft, Source
from charter.synthesis.filters import Drop, FilterSettings, Screen
from charter.synthesis.sources import (
    ConstitutionSource,
    EvolvedSource,
    MagpieSource,
    Parent,
)

DUPLICATE_CODES = ("exact_duplicate", "near_duplicate")


@dataclass(frozen=True)
class SourceShares:
    """How ``n`` is split over the sources (normalised, so any non-negative weights do)."""

    magpie: float = 1.0
    constitution: float = 1.0
    evolved: float = 1.0

    def __post_init__(self) -> None:
        values = {s: getattr(self, s) for s in SOURCES}
        for source, value in values.items():
            if value < 0:
                raise InputError("must be >= 0", field=f"shares.{source}")
        if sum(values.values()) <= 0:
            raise InputError("at least one share must be above 0", field="shares")

    def targets(self, n: int) -> dict[Source, int]:
        """Each source's count, summing to ``n`` (largest remainders get the leftovers)."""
        total = sum(getattr(self, s) for s in SOURCES)
        exact = {s: n * getattr(self, s) / total for s in SOURCES}
        counts = {s: math.floor(v) for s, v in exact.items()}
        by_remainder = sorted(SOURCES, key=lambda s: counts[s] - exact[s])
        for source in by_remainder[: n - sum(counts.values())]:
            counts[source] += 1
        return counts


@dataclass(frozen=True)
class SynthesisSettings:
    """What to synthesise and how hard to try.

    Args:
        n: prompts wanted.
        shares: the split of ``n`` over the sources.
        oversample: drafts asked per missing prompt in a round (>= 1; filters drop some).
        max_rounds: rounds before giving up on a short source.
        pre_query: Magpie by raw continuation where the engine allows (see
            :class:`~charter.synthesis.sources.MagpieSource`).
        prefill: start each instructed answer with ``Label: "`` and read the request up to the
            closing quote (:data:`~charter.synthesis.sources.PREFILL_LABELS`); off for a server
            that cannot continue an assistant turn.
    """

    n: int
    shares: SourceShares = SourceShares()
    oversample: float = 1.5
    max_rounds: int = 4
    pre_query: bool = True
    prefill: bool = True

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InputError("must be at least 1", field="n")
        if self.oversample < 1:
            raise InputError("must be at least 1", field="oversample")
        if self.max_rounds < 1:
            raise InputError("must be at least 1", field="max_rounds")


@dataclass
class SynthesisResult:
    """The kept prompts in the order drafted, every drop with its reason, and the counts."""

    kept: list[Draft]
    drops: list[Drop]
    targets: dict[Source, int]
    magpie_method: str
    rounds: int
    drafted: Counter[str] = field(default_factory=Counter)
    pre_query_blocks: dict[str, int] | None = None
    """Raw Magpie blocks answered from the call cache (``hits``) and drawn (``misses``)."""

    @property
    def drop_counts(self) -> dict[str, int]:
        """Drops per reason code, most first."""
        return dict(Counter(d.code for d in self.drops).most_common())

    @property
    def duplicate_rate(self) -> float:
        """Exact plus near duplicates (of kept or seed prompts) over all drafts."""
        total = sum(self.drafted.values())
        dups = sum(1 for d in self.drops if d.code in DUPLICATE_CODES)
        return dups / total if total else 0.0

    def diversity(self) -> dict[str, float]:
        texts = [d.text for d in self.kept]
        return {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2)}


def _evolve_order(pool: Sequence[Parent], methods: Sequence[str]) -> list[tuple[Parent, str]]:
    """Every (parent, method), each parent's first method before anyone's second; the first
    method alternates with the parent's position so both kinds of rewrite appear early."""
    k = len(methods)
    return [(p, methods[(i + j) % k]) for j in range(k) for i, p in enumerate(pool)]


def synthesize_prompts(
    engine: Any,
    constitution: Constitution,
    settings: SynthesisSettings,
    sampling: SamplingSettings,
    *,
    filters: FilterSettings | None = None,
    dedup: DedupSettings | None = None,
    seeds: Sequence[Parent] = (),
    excluded: Sequence[Parent] = (),
    on_progress: Callable[[int], None] | None = None,
) -> SynthesisResult:
    """Draft, screen and select up to ``settings.n`` prompts.

    Args:
        engine: the generator (an Engine; a TransformersEngine inside allows raw Magpie).
        constitution: its principles direct the constitution source.
        settings: ``n``, shares and effort.
        sampling: temperature must be above 0, or every sample of a chat is the same.
        filters, dedup: the screen's limits (their defaults when None).
        seeds: prompts to evolve (never output themselves; a draft duplicating one is dropped).
        excluded: held-out prompts that no kept prompt may match, exactly or nearly.
        on_progress: called with the number of newly kept prompts after each engine call.

    Returns:
        At most ``n`` kept drafts; fewer when the rounds ran out (the caller says so).

    Raises:
        InputError: temperature 0.
    """
    if sampling.temperature <= 0:
        raise InputError(
            "synthesis samples many drafts of one instruction: temperature must be above 0",
            field="generator.sampling.temperature",
        )
    targets = settings.shares.targets(settings.n)
    screen = Screen(
        filters or FilterSettings(),
        dedup or DedupSettings(),
        excluded=[(p.prompt_id, p.text) for p in excluded],
        seen=[(p.prompt_id, p.text) for p in seeds],
    )
    magpie = MagpieSource(engine, settings.pre_query, settings.prefill)
    directed = ConstitutionSource(engine, constitution, settings.prefill)
    evolved = EvolvedSource(engine, settings.prefill)
    passed: list[Draft] = []
    passed_by: Counter[str] = Counter()
    drops: list[Drop] = []
    drafted: Counter[str] = Counter()
    evolved_pairs: set[tuple[str, str]] = set()

    def have(source: Source) -> int:
        return passed_by[source]

    def screen_all(drafts: list[Draft]) -> None:
        newly = 0
        for draft in drafts:
            drafted[draft.source] += 1
            drop = screen.decide(draft)
            if drop is not None:
                drops.append(drop)
                continue
            if have(draft.source) < targets[draft.source]:
                newly += 1
            passed.append(draft)
            passed_by[draft.source] += 1
        if on_progress is not None:
            on_progress(newly)

    def asked(source: Source) -> int:
        return math.ceil((targets[source] - have(source)) * settings.oversample)

    rounds = 0
    for rnd in range(settings.max_rounds):
        if all(have(s) >= targets[s] for s in SOURCES):
            break
        rounds += 1
        before = sum(drafted.values())
        round_sampling = replace(sampling, seed=sampling.seed + rnd)
        if have("magpie") < targets["magpie"]:
            block = (lambda: on_progress(0)) if on_progress is not None else None
            # raw Magpie continues one seeded stream across rounds (see PreQuerySampler.sample)
            magpie_sampling = sampling if magpie.sampler is not None else round_sampling
            screen_all(magpie.draft(asked("magpie"), magpie_sampling, rnd, block))
        if have("constitution") < targets["constitution"]:
            screen_all(directed.draft(asked("constitution"), round_sampling, rnd))
        if have("evolved") < targets["evolved"]:
            pool = [*seeds, *(Parent(d.prompt_id, d.text) for d in passed)]
            todo = [
                (p, m)
                for p, m in _evolve_order(pool, evolved.methods)
                if (p.prompt_id, m) not in evolved_pairs
            ][: asked("evolved")]
            evolved_pairs.update((p.prompt_id, m) for p, m in todo)
            screen_all(evolved.draft(todo, round_sampling, rnd))
        if sum(drafted.values()) == before:
            break  # nothing left to draft from (an evolved share with no parents)
    kept = _select(passed, targets, settings.n)
    chosen = {id(d) for d in kept}
    drops += [
        Drop(d, "surplus", f"{settings.n} prompts already kept")
        for d in passed
        if id(d) not in chosen
    ]
    sampler = magpie.sampler
    blocks = None if sampler is None else {"hits": sampler.hits, "misses": sampler.misses}
    return SynthesisResult(kept, drops, targets, magpie.method, rounds, drafted, blocks)


def _select(passed: list[Draft], targets: dict[Source, int], n: int) -> list[Draft]:
    """Each source up to its target, then the rest in drafting order up to ``n``; returned in
    drafting order."""
    taken: Counter[str] = Counter()
    chosen: set[int] = set()
    for i, draft in enumerate(passed):
        if taken[draft.source] < targets[draft.source]:
            taken[draft.source] += 1
            chosen.add(i)
    for i in range(len(passed)):
        if len(chosen) >= n:
            break
        chosen.add(i)
    return [d for i, d in enumerate(passed) if i in chosen]
