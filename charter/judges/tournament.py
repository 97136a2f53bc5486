"""Rank K candidates with a merge sort: about K log2 K comparisons instead of K(K-1)/2.

All pairs of K=4 cost 6 comparisons, of K=8 cost 28, of K=16 cost 120; a merge sort needs at most
5, 17 and 49. The price is that only the pairs the sort asks about get a label, so
``all_pairs_above_margin`` sees fewer pairs, and Bradley-Terry is fitted to a sparser graph.

The sorts of every prompt advance in lockstep rounds: each round collects the next comparison of
every unfinished merge of every prompt and sends them to the judge in one call, so the engine still
batches across prompts. A round's answers decide the next round's questions, which is why this
cannot be one call like all-pairs. After the sort, its first and last candidates are compared
directly where the sort never met them, so ``best_vs_worst`` always has its own label. The
ranking is the sort's order; win rates and Bradley-Terry scores are reported beside it.

A merge step keeps the left candidate when the judge is exactly undecided (p = 0.5), so ties keep
the generation order. Candidates with identical text are never sent to the judge: the pair is
resolved as a tie and kept as a reject, as the all-pairs path does.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

from charter.judges.protocol import Comparison
from charter.records import CandidateSet, Reject

Pair = tuple[str, str]
SortSteps = Generator[list[Pair], list[float], list[str]]
"""Yields the pairs ``(a, b)`` it needs next, receives ``p_a`` for each, returns best first."""


def merge_sort_steps(ids: Sequence[str]) -> SortSteps:
    """Bottom-up merge sort whose merges at one level ask their next comparison together."""
    runs = [[c] for c in ids]
    while len(runs) > 1:
        merges = [(list(runs[i]), list(runs[i + 1]), []) for i in range(0, len(runs) - 1, 2)]
        tail = [runs[-1]] if len(runs) % 2 else []
        while True:
            active = [m for m in merges if m[0] and m[1]]
            if not active:
                break
            answers = yield [(left[0], right[0]) for left, right, _ in active]
            for (left, right, out), p_left in zip(active, answers, strict=True):
                out.append(left.pop(0) if p_left >= 0.5 else right.pop(0))
        runs = [out + left + right for left, right, out in merges] + tail
    return runs[0] if runs else []


def knockout_steps(ids: Sequence[str]) -> SortSteps:
    """Find the best and the worst of K in about 3K/2 comparisons and log2 K rounds.

    Round one pairs neighbours; winners go on to a bracket that finds the best, losers to one
    that finds the worst, and the two brackets ask their questions in the same rounds. With an
    odd K the unpaired candidate enters both brackets. Only the two ends are ranked: the
    candidates between them keep the generation order (enough for ``best_vs_worst``; use
    ``tournament`` or ``all_pairs`` when the whole order matters).
    """
    ids = list(ids)
    if len(ids) < 2:
        return ids
    first = [(ids[i], ids[i + 1]) for i in range(0, len(ids) - 1, 2)]
    answers = yield first
    winners = [a if p >= 0.5 else b for (a, b), p in zip(first, answers, strict=True)]
    losers = [b if p >= 0.5 else a for (a, b), p in zip(first, answers, strict=True)]
    if len(ids) % 2:
        winners.append(ids[-1])
        losers.append(ids[-1])
    met: dict[str, str] = {}  # in the losers' bracket: whom each candidate last met
    while len(winners) > 1 or len(losers) > 1:
        up = [(winners[i], winners[i + 1]) for i in range(0, len(winners) - 1, 2)]
        down = [(losers[i], losers[i + 1]) for i in range(0, len(losers) - 1, 2)]
        answers = yield up + down
        up_p, down_p = answers[: len(up)], answers[len(up) :]
        winners = [a if p >= 0.5 else b for (a, b), p in zip(up, up_p, strict=True)] + (
            [winners[-1]] if len(winners) % 2 else []
        )
        for a, b in down:
            met[a], met[b] = b, a
        losers = [b if p >= 0.5 else a for (a, b), p in zip(down, down_p, strict=True)] + (
            [losers[-1]] if len(losers) % 2 else []
        )
    best, worst = winners[0], losers[0]
    if best == worst:  # an odd one out that a contradictory judge ranked top and bottom
        worst = met[best]
    return [best, *(c for c in ids if c not in (best, worst)), worst]


def max_comparisons(k: int) -> int:
    """The most comparisons :func:`merge_sort_steps` can ask for K candidates (before the final
    best-vs-worst check)."""
    total, width = 0, 1
    while width < k:
        for start in range(0, k, 2 * width):
            left = min(width, k - start)
            right = min(width, max(0, k - start - width))
            total += left + right - 1 if right else 0
        width *= 2
    return total


class TournamentRounds:
    """Drive one merge sort per prompt, a round at a time.

    Args:
        sets: the prompts and their candidates.
        comparison: builds the Comparison of two candidate ids of one prompt (the principle draw
            is the caller's, so it matches the all-pairs path).
        steps: the search run per prompt: :func:`merge_sort_steps` (a full order) or
            :func:`knockout_steps` (only the best and the worst).
    """

    def __init__(
        self,
        sets: Sequence[CandidateSet],
        comparison: Callable[[CandidateSet, str, str], Comparison],
        steps: Callable[[Sequence[str]], SortSteps] = merge_sort_steps,
    ) -> None:
        self._comparison = comparison
        self._sets = {cs.prompt_id: cs for cs in sets}
        self._texts = {c.candidate_id: c.text.strip() for cs in sets for c in cs.candidates}
        self.rejects: list[Reject] = []
        self.order: dict[str, list[str]] = {}
        self._sorts: dict[str, SortSteps] = {}
        self._asked: dict[str, list[Pair]] = {}
        for cs in sets:
            search = steps([c.candidate_id for c in cs.candidates])
            self._sorts[cs.prompt_id] = search
            self._advance(cs.prompt_id, lambda s=search: next(s))

    def _advance(self, prompt_id: str, step: Callable[[], list[Pair]]) -> None:
        """Run the prompt's sort until it asks about a pair of different texts, or finishes."""
        try:
            pairs = step()
            while True:
                for a, b in pairs:
                    if self._same(a, b):
                        self.rejects.append(
                            Reject(
                                stage="judge",
                                source=f"{a} vs {b}",
                                reason="identical responses; not compared",
                            )
                        )
                if not all(self._same(a, b) for a, b in pairs):
                    self._asked[prompt_id] = pairs
                    return
                pairs = self._sorts[prompt_id].send([0.5] * len(pairs))
        except StopIteration as done:
            self.order[prompt_id] = done.value
            self._asked.pop(prompt_id, None)

    def _same(self, a: str, b: str) -> bool:
        return self._texts[a] == self._texts[b]

    def next_round(self) -> list[Comparison]:
        """Every comparison the unfinished sorts need now (empty when all are done)."""
        return [
            self._comparison(self._sets[prompt_id], a, b)
            for prompt_id, pairs in self._asked.items()
            for a, b in pairs
            if not self._same(a, b)
        ]

    def answer(self, p_a: dict[Pair, float]) -> None:
        """Feed the round's labels back (``p_a`` by ``(a, b)``) and let each sort move on."""
        for prompt_id, pairs in list(self._asked.items()):
            answers = [0.5 if self._same(a, b) else p_a[a, b] for a, b in pairs]
            steps = self._sorts[prompt_id]
            self._advance(prompt_id, lambda s=steps, x=answers: s.send(x))
