"""The revise stage: an initial response per prompt, then rounds of critique and revision.

Every step is one ``engine.generate`` call over all live prompts at once (initial responses,
then per round the critiques, then the revisions), so vLLM or a batched transformers engine sees
the whole stage's work in 1 + 2R calls. One principle is drawn per prompt and round with the
spine's deterministic weighted draw, so a rerun draws the same principles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from charter.constitution import Constitution, Principle
from charter.errors import InputError
from charter.generators.engine import Engine, SamplingSettings
from charter.judges.principles import draw_principle
from charter.records import Chat, Completion, PromptRecord, Reject
from charter.revisions.chain import (
    RevisionChain,
    RevisionRound,
    critique_chat,
    revision_chat,
    revision_request,
)
from charter.revisions.degenerate import DegenerateFilter


@dataclass(frozen=True)
class RevisionSettings:
    """How revisions are made and checked (maps one-to-one onto ``conf/revise/*.yaml``).

    Args:
        rounds: critique/revision rounds per prompt (>= 1).
        use_examples: show the drawn principle's few-shot examples as worked chains first.
        critique_max_new_tokens: the critique's budget; None uses the generator's.
        revision_instruction: appended to each revision request, so the model answers with the
            rewrite itself rather than commentary about it.
        verify: judge every (revision, initial) pair in both orders and keep only revisions the
            judge prefers; false reproduces the plain recipe (every non-degenerate revision kept).
        min_margin: the smallest margin (2 * P(revision better) - 1) a kept pair may have; a
            pair is also dropped when the judge does not prefer the revision at all.
        degenerate: the checks for useless revisions.
    """

    rounds: int = 1
    use_examples: bool = False
    critique_max_new_tokens: int | None = None
    revision_instruction: str = "Reply with the rewritten response only."
    verify: bool = True
    min_margin: float = 0.0
    degenerate: DegenerateFilter = field(default_factory=DegenerateFilter)

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise InputError(f"must be at least 1, got {self.rounds}", field="revise.rounds")
        if not 0.0 <= self.min_margin < 1.0:
            raise InputError(f"must be in [0, 1), got {self.min_margin}", field="revise.min_margin")


def draw_round_principle(
    constitution: Constitution, seed: int, prompt_id: str, round: int
) -> Principle:
    """The principle of one prompt's round (keyed apart from the judge stage's draws)."""
    return draw_principle(constitution, seed, prompt_id, f"revision-round-{round}")


def _fitting(engine: Engine, chats: Sequence[Chat], max_new_tokens: int) -> list[tuple[bool, int]]:
    counts = engine.count_tokens(chats)
    return [(n + max_new_tokens <= engine.context_length, n) for n in counts]


def _select(mask: list[bool], *columns: list) -> tuple[list, ...]:
    """Keep the rows of parallel lists where ``mask`` is true."""
    return tuple([v for v, ok in zip(col, mask, strict=True) if ok] for col in columns)


@dataclass
class _Live:
    prompt: PromptRecord
    initial: Completion
    rounds: list[RevisionRound] = field(default_factory=list)

    @property
    def current(self) -> str:
        return self.rounds[-1].revision if self.rounds else self.initial.text


def revise_prompts(
    prompts: Sequence[PromptRecord],
    engine: Engine,
    sampling: SamplingSettings,
    constitution: Constitution,
    settings: RevisionSettings,
    *,
    seed: int,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[RevisionChain], list[Reject]]:
    """Write a complete chain for every prompt whose chats fit the model's context.

    A prompt whose chat at some step would overflow ``engine.context_length`` (with that step's
    token budget) leaves the stage at that step, as a reject naming the step and the count.

    Returns:
        one chain per surviving prompt (input order) and the rejects.
    """
    critique_sampling = replace(
        sampling, max_new_tokens=settings.critique_max_new_tokens or sampling.max_new_tokens
    )
    rejects: list[Reject] = []

    def fitting(
        owners: list[PromptRecord], chats: list[Chat], step: str, budget: int
    ) -> list[bool]:
        """Which chats fit; a reject for each that does not, naming the step and the count."""
        mask = []
        for prompt, (fits, n) in zip(owners, _fitting(engine, chats, budget), strict=True):
            mask.append(fits)
            if not fits:
                rejects.append(
                    Reject(
                        stage="revise",
                        source=prompt.source,
                        field="messages",
                        reason=(
                            f"{step} chat is {n} tokens; with max_new_tokens={budget} it exceeds "
                            f"the model's context of {engine.context_length} tokens"
                        ),
                        row={"prompt_id": prompt.prompt_id},
                    )
                )
        return mask

    def sample(chats: list[Chat], how: SamplingSettings) -> list[Completion]:
        outputs = engine.generate(chats, how, n=1) if chats else []
        if on_progress:
            on_progress(len(chats))
        return [o[0] for o in outputs]

    mask = fitting(list(prompts), [p.messages for p in prompts], "initial", sampling.max_new_tokens)
    fitted = [p for p, ok in zip(prompts, mask, strict=True) if ok]
    initials = sample([p.messages for p in fitted], sampling)
    live = [_Live(p, c) for p, c in zip(fitted, initials, strict=True)]
    instruction, examples = settings.revision_instruction, settings.use_examples
    for r in range(1, settings.rounds + 1):
        drawn = [draw_round_principle(constitution, seed, x.prompt.prompt_id, r) for x in live]
        chats = [
            critique_chat(x.prompt.messages, x.current, p, instruction, examples)
            for x, p in zip(live, drawn, strict=True)
        ]
        budget = critique_sampling.max_new_tokens
        mask = fitting([x.prompt for x in live], chats, f"round {r} critique", budget)
        live, drawn, chats = _select(mask, live, drawn, chats)
        critiques = sample(chats, critique_sampling)
        chats = [
            revision_chat(x.prompt.messages, x.current, c.text, p, instruction, examples)
            for x, c, p in zip(live, critiques, drawn, strict=True)
        ]
        budget = sampling.max_new_tokens
        mask = fitting([x.prompt for x in live], chats, f"round {r} revision", budget)
        live, drawn, critiques, chats = _select(mask, live, drawn, critiques, chats)
        revisions = sample(chats, sampling)
        for x, p, critique, revision in zip(live, drawn, critiques, revisions, strict=True):
            x.rounds.append(
                RevisionRound(
                    round=r,
                    principle_id=p.id,
                    critique_request=p.critique_request,
                    critique=critique.text,
                    revision_request=revision_request(p, instruction),
                    revision=revision.text,
                    critique_finish_reason=critique.finish_reason,
                    revision_finish_reason=revision.finish_reason,
                )
            )
    chains = [
        RevisionChain(
            prompt_id=x.prompt.prompt_id,
            messages=x.prompt.messages,
            source=x.prompt.source,
            initial=x.initial.text,
            initial_finish_reason=x.initial.finish_reason,
            rounds=x.rounds,
            generator_model=engine.model_id,
            sampling=asdict(sampling),
        )
        for x in live
    ]
    return chains, rejects
