"""``charter diff RUN_A RUN_B``: what changed in the data between two runs, per principle.

After editing a principle you want to know what the edit did to the dataset, not just that the
hash changed. Pairs are matched by prompt and their two candidate ids (so a best-vs-worst prompt
whose selected pair moved shows as one pair disappeared and one appeared); judgments by prompt and
candidate ids. A pair whose chosen and rejected swapped is "flipped"; one whose soft label
(``p_chosen``) moved by more than ``tolerance`` is "changed". Each change is filed under the
principle that judged it in RUN_B (RUN_A for what disappeared), with before/after soft labels and
any critiques the judge kept in ``raw``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from charter import run_files
from charter.errors import InputError
from charter.jsonl import read_jsonl
from charter.records import Judgment

Key = tuple[str, str, str]
"""(prompt_id, lower candidate id, higher candidate id): one unordered comparison."""


@dataclass(frozen=True)
class Side:
    """One run's view of a pair or a comparison.

    ``p`` is the soft label: ``p_chosen`` for a pair, P(``first`` is better) for a judgment,
    where ``first`` is the lower of the two candidate ids in both runs, so numbers compare.
    """

    principle: str
    p: float
    chosen: str | None = None
    critique: dict[str, Any] | None = None


@dataclass(frozen=True)
class Change:
    """A pair or judgment that differs between the runs."""

    what: str  # "flipped", "changed", "appeared", "disappeared"
    prompt_id: str
    first: str
    second: str
    before: Side | None
    after: Side | None

    @property
    def principle(self) -> str:
        side = self.after or self.before
        assert side is not None
        return side.principle


@dataclass(frozen=True)
class RunDiff:
    run_a: str
    run_b: str
    counts: dict[str, Any]
    pairs: list[Change]
    judgments: list[Change]

    def by_principle(self) -> dict[str, dict[str, list[Change]]]:
        """Changes grouped per principle id (sorted), pairs and judgments apart."""
        grouped: dict[str, dict[str, list[Change]]] = {}
        for kind, changes in (("pairs", self.pairs), ("judgments", self.judgments)):
            for c in changes:
                grouped.setdefault(c.principle, {"pairs": [], "judgments": []})[kind].append(c)
        return dict(sorted(grouped.items()))

    def to_json(self) -> dict[str, Any]:
        principles = {
            pid: {kind: [asdict(c) for c in changes] for kind, changes in kinds.items()}
            for pid, kinds in self.by_principle().items()
        }
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "counts": self.counts,
            "principles": principles,
        }


def _critique(raw: dict[str, Any]) -> dict[str, Any] | None:
    found = {k: v for k, v in raw.items() if "critique" in k}
    return found or None


def _judgments(run_dir: Path) -> dict[Key, tuple[Judgment, float]]:
    """Judgments by comparison key, each with P(lower id is better)."""
    out = {}
    for j in run_files.read_judgments(run_dir):
        first, second = sorted((j.candidate_a, j.candidate_b))
        out[(j.prompt_id, first, second)] = (j, j.p_a if j.candidate_a == first else 1 - j.p_a)
    return out


def _pairs(run_dir: Path) -> dict[Key, dict[str, Any]]:
    path = run_dir / run_files.PAIRS
    if not path.exists():
        raise InputError("pairs.jsonl not found; is this a finished charter run?", file=str(path))
    out = {}
    for _, row in read_jsonl(path):
        first, second = sorted((row["chosen_id"], row["rejected_id"]))
        out[(row["prompt_id"], first, second)] = row
    return out


def _change(key: Key, before: Side | None, after: Side | None, tolerance: float) -> Change | None:
    if before is None or after is None:
        return Change("appeared" if before is None else "disappeared", *key, before, after)
    # a pair flips when chosen and rejected swap; a judgment, when its verdict crosses 0.5
    if before.chosen is not None:
        flipped = before.chosen != after.chosen
    else:
        flipped = (before.p >= 0.5) != (after.p >= 0.5)
    if flipped:
        what = "flipped"
    elif abs(before.p - after.p) > tolerance or before.principle != after.principle:
        what = "changed"
    else:
        return None
    return Change(what, *key, before, after)


def diff_runs(run_a: Path, run_b: Path, *, tolerance: float = 1e-6) -> RunDiff:
    """Compare the pairs and judgments of two run directories.

    Raises:
        InputError: a directory lacks pairs.jsonl or judgments.jsonl.
    """
    pairs = (_pairs(run_a), _pairs(run_b))
    judged = (_judgments(run_a), _judgments(run_b))

    def pair_side(i: int, key: Key) -> Side | None:
        row = pairs[i].get(key)
        if row is None:
            return None
        judgment = judged[i].get(key)
        critique = _critique(judgment[0].raw) if judgment else None
        return Side("+".join(row["principle_ids"]), row["p_chosen"], row["chosen_id"], critique)

    def judgment_side(i: int, key: Key) -> Side | None:
        if key not in judged[i]:
            return None
        j, p_first = judged[i][key]
        return Side(j.principle_id, p_first, critique=_critique(j.raw))

    pair_changes = [
        c
        for key in sorted(pairs[0].keys() | pairs[1].keys())
        if (c := _change(key, pair_side(0, key), pair_side(1, key), tolerance))
    ]
    judgment_changes = [
        c
        for key in sorted(judged[0].keys() | judged[1].keys())
        if (c := _change(key, judgment_side(0, key), judgment_side(1, key), tolerance))
    ]
    counts = {
        "pairs": [len(pairs[0]), len(pairs[1])],
        "judgments": [len(judged[0]), len(judged[1])],
        "pair_changes": dict(Counter(c.what for c in pair_changes)),
        "judgment_changes": dict(Counter(c.what for c in judgment_changes)),
        "constitution_sha256": [
            next(iter(p.values()))["constitution_sha256"] if p else None for p in pairs
        ],
    }
    return RunDiff(str(run_a), str(run_b), counts, pair_changes, judgment_changes)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _label(side: Side | None, first: str, second: str) -> str:
    if side is None:
        return "-"
    if side.chosen is not None:
        other = second if side.chosen == first else first
        return f"{side.chosen} > {other} ({side.p:.3f})"
    return f"{side.p:.3f}"


def _tally(changes: list[Change]) -> str:
    counts = Counter(c.what for c in changes)
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "none"


def _table(title: str, changes: list[Change], max_rows: int) -> list[str]:
    if not changes:
        return []
    head = "P(first better)" if title == "judgments" else "chosen > rejected (p_chosen)"
    lines = [f"{title}: {_tally(changes)}", "", f"| comparison | change | {head}: A | B |"]
    lines.append("|---|---|---|---|")
    for c in changes[:max_rows]:
        pair = _cell(f"{c.prompt_id}: {c.first} vs {c.second}")
        before, after = _label(c.before, c.first, c.second), _label(c.after, c.first, c.second)
        lines.append(f"| {pair} | {c.what} | {_cell(before)} | {_cell(after)} |")
    if len(changes) > max_rows:
        lines.append(f"| ... {len(changes) - max_rows} more in the JSON file | | | |")
    for c in changes[:max_rows]:
        for name, side in (("A", c.before), ("B", c.after)):
            if side and side.critique:
                lines.append(f"\n> {c.first} vs {c.second}, critique in {name}: {side.critique}")
    return [*lines, ""]


def to_markdown(diff: RunDiff, *, max_rows: int = 50) -> str:
    """The diff as Markdown: totals, then one section per principle with changes."""
    c = diff.counts
    lines = [
        "# charter diff",
        "",
        f"- A: `{diff.run_a}` ({c['pairs'][0]} pairs, {c['judgments'][0]} judgments)",
        f"- B: `{diff.run_b}` ({c['pairs'][1]} pairs, {c['judgments'][1]} judgments)",
        f"- pairs: {_tally(diff.pairs)}",
        f"- judgments: {_tally(diff.judgments)}",
        "",
    ]
    grouped = diff.by_principle()
    if not grouped:
        lines.append("No differences.")
    for pid, kinds in grouped.items():
        lines += [f"## principle `{pid}`", ""]
        lines += _table("pairs", kinds["pairs"], max_rows)
        lines += _table("judgments", kinds["judgments"], max_rows)
    return "\n".join(lines).rstrip() + "\n"
