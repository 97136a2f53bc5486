"""How varied a set of prompts is: distinct-n (Li et al., 2016).

distinct-n is the number of unique word n-grams over the total number of word n-grams, pooled
over all prompts (n-grams do not cross prompt boundaries). 1.0 means no n-gram repeats anywhere;
a set of near-copies scores low. It grows as a set shrinks, so compare sets of similar size.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def words(text: str) -> list[str]:
    """Case-folded word tokens (punctuation is not a token)."""
    return re.findall(r"\w+", text.casefold())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / total word n-grams over ``texts``; 0.0 when there are none."""
    grams = [
        tuple(tokens[i : i + n]) for tokens in map(words, texts) for i in range(len(tokens) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0
