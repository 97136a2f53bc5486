"""Score many token sequences that share long prefixes, computing each shared prefix once.

A judge sends chats that repeat the same system prompt, conversation and first response, and
differ only towards the end. Causal attention means a prefix's keys and values do not depend on
what follows it, so they can be computed once and reused by every sequence that starts with it.

The sequences are arranged in a prefix tree (:func:`plan_segments`): each shared prefix and each
sequence's own tail becomes one *segment*, a row of a forward pass that continues its parent's
cached keys and values. Rows at the same tree depth run together, in batches, whatever their
parents (:func:`shared_prefix_logprobs`), so a tree costs a few forward passes, not one per node.

Within a batch every row is laid out as ``[parent prefix][holes][segment]``: the prefixes are
cached right-padded to the longest, the segments are left-padded so that every row's newest
token sits in the last column (where ``logits_to_keep`` reads, as in the unshared path). The
holes are masked out and position ids count real tokens only, so a row's scores do not depend on
its batch-mates, its padding or how its prefix was shared (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer


@dataclass(frozen=True)
class Segment:
    """One row of a forward pass: ``tokens`` continuing the cache of segment ``parent``.

    Attributes:
        tokens: the tokens this row feeds to the model.
        start: how many tokens come before them (the parent's whole prefix; 0 at the root).
        parent: index of the shared-prefix segment this continues, or None at the root.
        depth: tree depth; every row of one depth can run once its parents have.
        sequence: for a tail, the index of the input sequence it completes and scores; None for
            a shared prefix, which only fills the cache for its children.
        keep: how many final positions of the sequence to return log-probs for (0 for a prefix).
    """

    tokens: list[int]
    start: int
    parent: int | None
    depth: int
    sequence: int | None
    keep: int


def plan_segments(
    seqs: Sequence[list[int]], keeps: Sequence[int], min_shared: int
) -> list[Segment]:
    """Split ``seqs`` into shared prefixes and per-sequence tails, parents before children.

    Sorted lexicographically, sequences with a common prefix sit next to each other, and the
    common prefix of a run is the smallest common prefix of its neighbouring pairs. Under each
    prefix (the root's is empty) the sequences are cut into maximal runs whose neighbours share at
    least ``min_shared`` more tokens; a run of two or more gets its common prefix as a shared
    segment, and the same split repeats inside it. What is left of a sequence is its tail.

    A shared prefix stops ``keeps[i]`` tokens before the end of every sequence ``i`` under it,
    so each tail holds every position whose log-probs are wanted (a repeated sequence is fine).

    Args:
        seqs: token ids, each with at least ``keeps[i]`` (>= 1) tokens.
        keeps: final positions to score per sequence.
        min_shared: the fewest tokens worth a shared segment (>= 1).

    Returns:
        Segments with every parent listed before its children, and exactly one tail per sequence.
    """
    order = sorted(range(len(seqs)), key=seqs.__getitem__)
    common = [_common_prefix(seqs[a], seqs[b]) for a, b in pairwise(order)]
    segments: list[Segment] = []

    def split(lo: int, hi: int, start: int, parent: int | None, depth: int) -> None:
        """Cut ``order[lo:hi]``, which all share ``start`` tokens, into runs."""
        run_lo = lo
        for k in range(lo, hi):
            if k + 1 < hi and common[k] >= start + min_shared:
                continue  # order[k + 1] joins the run
            members = order[run_lo : k + 1]
            end = min([*common[run_lo:k], *(len(seqs[i]) - keeps[i] for i in members)])
            if len(members) > 1 and end - start >= min_shared:
                tokens = seqs[members[0]][start:end]
                segments.append(Segment(tokens, start, parent, depth, None, 0))
                split(run_lo, k + 1, end, len(segments) - 1, depth + 1)
            else:
                for i in members:
                    segments.append(Segment(seqs[i][start:], start, parent, depth, i, keeps[i]))
            run_lo = k + 1

    split(0, len(order), 0, None, 0)
    return segments


def supports_prefix_sharing(model: PreTrainedModel) -> bool:
    """Whether every layer of ``model`` caches plain full-attention keys and values.

    Sliding-window, chunked, linear-attention and indexed caches drop or summarise past tokens,
    so a cached prefix could not be copied row by row; such models use the unshared path.
    """
    layers = DynamicCache(config=model.config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def shared_prefix_logprobs(
    model: PreTrainedModel,
    seqs: Sequence[list[int]],
    keeps: Sequence[int],
    *,
    batch_size: int,
    min_shared: int,
    pad_id: int,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(index, log-softmax over the vocab at the last keeps[index] positions)``.

    The same contract as scoring each sequence alone; shared prefixes are computed once (see
    :func:`plan_segments`). Rows of one tree depth are sorted by length and run ``batch_size``
    at a time. Only two depths' prefix caches are held at once. Results come in no particular
    order.
    """
    segments = plan_segments(seqs, keeps, min_shared)
    parents: _PrefixCaches | None = None
    for depth in range(max(s.depth for s in segments) + 1 if segments else 0):
        rows = sorted(
            (k for k, s in enumerate(segments) if s.depth == depth),
            key=lambda k: len(segments[k].tokens),
        )
        prefixes = [k for k in rows if segments[k].sequence is None]
        longest = max((segments[k].start + len(segments[k].tokens) for k in prefixes), default=0)
        caches = _PrefixCaches({k: slot for slot, k in enumerate(prefixes)}, longest)
        for lo in range(0, len(rows), batch_size):
            batch = [segments[k] for k in rows[lo : lo + batch_size]]
            slots = [caches.slots.get(k) for k in rows[lo : lo + batch_size]]
            yield from _run_batch(model, batch, slots, parents, caches, pad_id)
        parents = caches  # the older depth's caches are dropped: all their children have run


class _PrefixCaches:
    """The keys and values of one depth's shared prefixes, one right-padded row each.

    A batch's rows are gathered and written with one tensor op per layer, not one per row: on a
    busy CPU every small multi-threaded op can stall waiting for a thread.
    """

    def __init__(self, slots: dict[int, int], longest: int) -> None:
        self.slots = slots  # segment index -> row
        self.longest = longest
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []  # [rows, heads, longest, dim]

    def write(self, rows: torch.Tensor, cache: DynamicCache, columns: torch.Tensor) -> None:
        """Store ``cache``'s ``columns`` (per row, the real tokens in order) at ``rows``."""
        for layer_index, layer in enumerate(cache.layers):
            kv = []
            for tensor in (layer.keys, layer.values):
                heads, dim = tensor.shape[1], tensor.shape[3]
                kv.append(tensor.gather(2, columns[:, None, :, None].expand(-1, heads, -1, dim)))
            if len(self.layers) <= layer_index:
                shape = (len(self.slots), *kv[0].shape[1:])
                self.layers.append((kv[0].new_zeros(shape), kv[1].new_zeros(shape)))
            for store, new in zip(self.layers[layer_index], kv, strict=True):
                store[rows] = new


def _run_batch(
    model: PreTrainedModel,
    rows: list[Segment],
    slots: list[int | None],
    parents: _PrefixCaches | None,
    caches: _PrefixCaches,
    pad_id: int,
) -> Iterator[tuple[int, torch.Tensor]]:
    """One forward pass over ``rows``; cache the prefixes at ``slots``, yield tails' scores."""
    device = model.device
    past = max(s.start for s in rows)
    width = max(len(s.tokens) for s in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), past + width), dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, s in enumerate(rows):
        n = len(s.tokens)
        ids[r, width - n :] = torch.tensor(s.tokens, dtype=torch.long)
        mask[r, : s.start] = 1
        mask[r, past + width - n :] = 1
        positions[r, width - n :] = torch.arange(s.start, s.start + n)
    cache = DynamicCache(config=model.config)
    if past:  # every row has a parent one depth up; its prefix fills the first columns
        assert parents is not None
        index = torch.tensor([parents.slots[s.parent] for s in rows], device=device)
        for layer, (keys, values) in enumerate(parents.layers):
            cache.update(keys[index, :, :past], values[index, :, :past], layer)
    keep = max([1, *(s.keep for s in rows)])
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=keep,
    ).logits
    logprobs = logits.float().log_softmax(-1)
    for r, s in enumerate(rows):
        if s.sequence is not None:
            yield s.sequence, logprobs[r, keep - s.keep :]
    inner = [r for r, slot in enumerate(slots) if slot is not None]
    if inner:
        # A prefix row's real columns (its parent's prefix, then its own tokens), right-padded
        # by repeating column 0; the padding is never attended to.
        columns = torch.zeros((len(inner), caches.longest), dtype=torch.long)
        for j, r in enumerate(inner):
            real = mask[r].nonzero().squeeze(1)
            columns[j, : len(real)] = real
        cache.batch_select_indices(torch.tensor(inner, device=device))
        written = torch.tensor([slots[r] for r in inner], device=device)
        caches.write(written, cache, columns.to(device))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
