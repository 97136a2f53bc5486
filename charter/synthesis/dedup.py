"""Exact and near-duplicate lookup of short texts, by MinHash over character shingles.

Prompts are a sentence or two, so word n-grams are too few to compare ("Explain photosynthesis
in two sentences" has four word trigrams, and one changed word breaks three of them). Character
5-grams of the normalised text give a few dozen shingles a prompt, and one changed word leaves
most of them. MinHash estimates the Jaccard similarity of two shingle sets; an LSH index
(datasketch's :class:`~datasketch.MinHashLSH`) finds the candidates without comparing every pair,
and each candidate is confirmed against the threshold with the estimate itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from datasketch import MinHash, MinHashLSH

from charter.errors import InputError


@dataclass(frozen=True)
class DedupSettings:
    """How similar two prompts must be to count as one.

    Args:
        near_duplicate_threshold: the estimated Jaccard similarity of two prompts' shingle sets
            at or above which the later one is a near-duplicate (0.7: a reworded clause or two).
        shingle_chars: characters per shingle of the normalised text.
        num_perm: MinHash permutations; more is a finer estimate (±0.04 at 128), and slower.
    """

    near_duplicate_threshold: float = 0.7
    shingle_chars: int = 5
    num_perm: int = 128

    def __post_init__(self) -> None:
        if not 0 < self.near_duplicate_threshold <= 1:
            raise InputError("must be in (0, 1]", field="dedup.near_duplicate_threshold")
        if self.shingle_chars < 1:
            raise InputError("must be at least 1", field="dedup.shingle_chars")
        if self.num_perm < 16:
            raise InputError("must be at least 16", field="dedup.num_perm")


def normalized(text: str) -> str:
    """Case-folded words joined by single spaces: what an exact duplicate must share."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def shingles(text: str, size: int) -> set[str]:
    """The character ``size``-grams of the normalised text (the whole text if shorter)."""
    norm = normalized(text)
    if len(norm) <= size:
        return {norm}
    return {norm[i : i + size] for i in range(len(norm) - size + 1)}


@dataclass(frozen=True)
class Match:
    """An earlier text that a new one duplicates: ``key`` is its id, ``similarity`` the
    estimated Jaccard (1.0 for an exact match)."""

    kind: Literal["exact", "near"]
    key: str
    similarity: float


class DuplicateIndex:
    """Texts seen so far, answering "does this new text duplicate one of them?".

    Args:
        settings: the threshold and shingling.
    """

    def __init__(self, settings: DedupSettings) -> None:
        self.settings = settings
        self._exact: dict[str, str] = {}
        self._hashes: dict[str, MinHash] = {}
        self._lsh = MinHashLSH(
            threshold=settings.near_duplicate_threshold, num_perm=settings.num_perm
        )

    def __len__(self) -> int:
        return len(self._hashes)

    def _minhash(self, text: str) -> MinHash:
        mh = MinHash(num_perm=self.settings.num_perm, seed=1)
        for shingle in sorted(shingles(text, self.settings.shingle_chars)):
            mh.update(shingle.encode("utf-8"))
        return mh

    def match(self, text: str) -> Match | None:
        """The most similar earlier text at or above the threshold, exact matches first."""
        norm = normalized(text)
        if norm in self._exact:
            return Match("exact", self._exact[norm], 1.0)
        mh = self._minhash(text)
        best: Match | None = None
        for key in self._lsh.query(mh):
            similarity = mh.jaccard(self._hashes[key])
            if similarity >= self.settings.near_duplicate_threshold and (
                best is None or similarity > best.similarity
            ):
                best = Match("near", key, similarity)
        return best

    def add(self, key: str, text: str) -> None:
        """Remember ``text`` under ``key`` (a key already there is left as it was)."""
        if key in self._hashes:
            return
        self._exact.setdefault(normalized(text), key)
        mh = self._minhash(text)
        self._hashes[key] = mh
        self._lsh.insert(key, mh)
