"""Turn kept chains into the two published datasets: SFT rows and preference pairs.

SFT rows use TRL's conversational prompt-completion format (``prompt`` a list of messages,
``completion`` one assistant message), which SFTTrainer trains on with the loss on the
completion only; the whole chain rides along in ``revision_chain``. Pairs use the spine's
:class:`~charter.records.PreferencePair`, so the same schema, loaders and trainers apply.

Without verification (the plain recipe) there is no judge: pairs carry the recipe's implicit
hard label (``p_chosen`` 1, ``margin`` 1, ``judge_model`` "unverified") and SFT rows a null
``p_revision_better``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from charter.records import PreferencePair
from charter.revisions.chain import RevisionChain
from charter.revisions.verify import Verdict, initial_id, revision_id

UNVERIFIED = "unverified"


def sft_row(
    chain: RevisionChain, verdict: Verdict | None, constitution_sha256: str
) -> dict[str, Any]:
    """One row of sft.jsonl: the prompt, the final revision as the completion, and the chain."""
    return {
        "prompt": chain.messages,
        "completion": [{"role": "assistant", "content": chain.final}],
        "prompt_id": chain.prompt_id,
        "initial_response": chain.initial,
        "revision_chain": [asdict(r) for r in chain.rounds],
        "principle_ids": chain.principle_ids,
        "p_revision_better": verdict.p_revision if verdict else None,
        "generator_model": chain.generator_model,
        "judge_model": verdict.judge_model if verdict else UNVERIFIED,
        "constitution_sha256": constitution_sha256,
    }


def preference_pair(
    chain: RevisionChain, verdict: Verdict | None, constitution_sha256: str
) -> PreferencePair:
    """The revision as chosen, the initial response as rejected."""
    return PreferencePair(
        prompt=chain.messages,
        chosen=[{"role": "assistant", "content": chain.final}],
        rejected=[{"role": "assistant", "content": chain.initial}],
        prompt_id=chain.prompt_id,
        chosen_id=revision_id(chain),
        rejected_id=initial_id(chain),
        p_chosen=verdict.p_revision if verdict else 1.0,
        margin=verdict.margin if verdict else 1.0,
        principle_ids=chain.principle_ids,
        swap_consistent=verdict.swap_consistent if verdict else True,
        judge_model=verdict.judge_model if verdict else UNVERIFIED,
        generator_model=chain.generator_model,
        constitution_sha256=constitution_sha256,
    )
