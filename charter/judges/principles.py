"""Draw the principle for a comparison, deterministically.

The draw depends only on the seed, the prompt and candidate ids, and the principles' ids and
weights, never on principle text: editing one principle's wording keeps every other
comparison's draw (and so its cached result) unchanged.
"""

from __future__ import annotations

import hashlib

from charter.constitution import Constitution, Principle


def draw_principle(constitution: Constitution, seed: int, *key: str) -> Principle:
    """Pick one principle, weighted by ``weight``, from a hash of ``seed`` and ``key``.

    Args:
        constitution: where the principles come from.
        seed: the run seed.
        *key: what identifies the comparison (prompt id and the two candidate ids, sorted so
            the draw does not depend on which candidate is called a).
    """
    material = "\x1f".join([str(seed), *key]).encode()
    digest = hashlib.sha256(material).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    total = sum(p.weight for p in constitution.principles)
    acc = 0.0
    for principle in constitution.principles:
        acc += principle.weight / total
        if u < acc:
            return principle
    return constitution.principles[-1]
