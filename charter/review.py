"""A human review queue: send people the pairs the judge is least sure of, merge their labels back.

``charter review export RUN_DIR`` ranks the run's pairs by an uncertainty score and writes the
top ``budget`` in a labelling format. The score, higher meaning less sure:

    uncertainty = (1 - margin) + swap_weight * [not swap_consistent] + jury_weight * jury_split

``margin`` is 2·p_chosen − 1 (0: a coin flip, 1: certain); a swap-inconsistent pair (the two
orders disagreed) is position bias rather than a preference; ``jury_split`` is the share of
jurors preferring the rejected response: from a row's ``jury`` list (of ``p_chosen`` values or
``{"p_chosen": ...}`` objects), else from the members of a jury judge (``judge=jury``) in the
judgment of the same two candidates in ``judgments.jsonl``, else 0. Ties break by review id,
so the queue is deterministic. Each pair is shown as ``response_a``/``response_b`` in an order
fixed by a hash of its id: half the time the judge's choice comes first, and the plain labelling
files do not say which response the judge picked, so reviewers are not anchored on it.

``sample=random`` draws the queue uniformly instead, an audit (:mod:`charter.review_audit`).
``charter review import RUN_DIR FILE`` merges the labels back (:mod:`charter.review_labels`).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from charter import run_files
from charter.errors import InputError
from charter.exports import conversation_text
from charter.jsonl import atomic_dir, read_jsonl, write_jsonl_atomic, write_text_atomic
from charter.review_audit import (
    RANDOM,
    UNCERTAINTY,
    random_sample,
)

REVIEW_DIR = "review"
QUEUE = "queue.jsonl"
REVIEWED_DIR = "reviewed"
FORMATS = ("jsonl", "csv", "argilla")
LABELS = ("a", "b", "tie")
_ARGILLA_MAPPING = {
    "judge_suggestion": "preference.suggestion",
    "judge_score": "preference.suggestion.score",
    "judge_model": "preference.suggestion.agent",
}


@dataclass(frozen=True)
class ReviewSettings:
    """How the review queue is chosen and written.

    Args:
        budget: how many pairs go to people (the most uncertain first).
        format: ``jsonl``, ``csv`` or ``argilla`` (a folder of Argilla 2.x settings and records).
        swap_weight: weight of a swap-inconsistent judgment in the uncertainty score.
        jury_weight: weight of the share of jurors disagreeing with the published label.
        sample: ``uncertainty`` (the least sure first; a cascade's ``needs_human`` pairs before
            all) or ``random`` (a uniform audit sample, which gives an accuracy estimate).
        seed: the random audit's draw.
    """

    budget: int = 50
    format: str = "jsonl"
    swap_weight: float = 1.0
    jury_weight: float = 2.0
    sample: str = UNCERTAINTY
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sample not in (UNCERTAINTY, RANDOM):
            raise InputError(
                f"sample must be 'uncertainty' or 'random', got {self.sample!r}", field="sample"
            )
        if self.budget < 1:
            raise InputError(f"budget must be at least 1, got {self.budget}", field="budget")
        if self.format not in FORMATS:
            raise InputError(
                f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}",
                field="format",
            )


@dataclass(frozen=True)
class QueueItem:
    """One pair sent to people; ``judge_choice`` says which shown response the judge preferred."""

    review_id: str
    prompt_id: str
    a_id: str
    b_id: str
    judge_choice: str
    uncertainty: float
    reasons: list[str]
    p_chosen: float
    margin: float
    swap_consistent: bool
    selection: str = UNCERTAINTY


def review_id(row: dict[str, Any]) -> str:
    """A pair's id, independent of which side the judge picked: its two candidate ids, sorted."""
    return "~".join(sorted((row["chosen_id"], row["rejected_id"])))


def jury_split(row: dict[str, Any]) -> float:
    """Share of jurors preferring the rejected response; 0 when the row has no ``jury``."""
    jury = row.get("jury") or []
    votes = [j.get("p_chosen") if isinstance(j, dict) else j for j in jury]
    votes = [float(v) for v in votes if isinstance(v, int | float)]
    return sum(v < 0.5 for v in votes) / len(votes) if votes else 0.0


def uncertainty(row: dict[str, Any], settings: ReviewSettings) -> tuple[float, list[str]]:
    """The documented uncertainty score of a pairs row, and the reasons that raised it."""
    split = jury_split(row)
    inconsistent = not row.get("swap_consistent", True)
    score = (1.0 - float(row["margin"])) + settings.swap_weight * inconsistent
    score += settings.jury_weight * split
    reasons = [f"margin {row['margin']:.3f}"]
    if inconsistent:
        reasons.append("swap-inconsistent")
    if split:
        reasons.append(f"jury split {split:.2f}")
    return round(score, 6), reasons


def _chosen_first(rid: str) -> bool:
    return hashlib.sha256(rid.encode()).digest()[0] % 2 == 0


def build_queue(rows: list[dict[str, Any]], settings: ReviewSettings) -> list[QueueItem]:
    """The ``budget`` most uncertain pairs, most uncertain first (ties by review id), a cascade's
    ``needs_human`` pairs before all others; or, with ``sample=random``, a seeded uniform sample
    in draw order."""
    if settings.sample == RANDOM:
        picked = [rows[i] for i in random_sample(rows, settings.budget, settings.seed)]
        return [replace(_item(row, settings), selection=RANDOM) for row in picked]
    items = [_item(row, settings) for row in rows]
    flagged = {review_id(r) for r in rows if r.get("needs_human")}
    items.sort(key=lambda q: (q.review_id not in flagged, -q.uncertainty, q.review_id))
    return items[: settings.budget]


def _item(row: dict[str, Any], settings: ReviewSettings) -> QueueItem:
    """A pairs row as a queue item, its shown order fixed by a hash of its id."""
    rid = review_id(row)
    score, reasons = uncertainty(row, settings)
    if row.get("needs_human"):
        reasons = ["needs_human (every cascade tier was unsure)", *reasons]
    first = _chosen_first(rid)
    a, b = (
        (row["chosen_id"], row["rejected_id"]) if first else (row["rejected_id"], row["chosen_id"])
    )
    return QueueItem(
        review_id=rid,
        prompt_id=row["prompt_id"],
        a_id=a,
        b_id=b,
        judge_choice="a" if first else "b",
        uncertainty=score,
        reasons=reasons,
        p_chosen=row["p_chosen"],
        margin=row["margin"],
        swap_consistent=bool(row.get("swap_consistent", True)),
    )


def _labelling_row(item: QueueItem, row: dict[str, Any]) -> dict[str, Any]:
    texts = {row["chosen_id"]: row["chosen"][-1]["content"]}
    texts[row["rejected_id"]] = row["rejected"][-1]["content"]
    return {
        "review_id": item.review_id,
        "prompt": conversation_text(row["prompt"]),
        "response_a": texts[item.a_id],
        "response_b": texts[item.b_id],
        "human_label": "",
    }


def _argilla_settings(guidelines: str) -> dict[str, Any]:
    return {
        "guidelines": guidelines,
        "fields": [
            {"name": "prompt", "type": "text", "use_markdown": True},
            {"name": "response_a", "type": "text", "use_markdown": True},
            {"name": "response_b", "type": "text", "use_markdown": True},
        ],
        "questions": [
            {
                "name": "preference",
                "type": "label_selection",
                "labels": list(LABELS),
                "title": "Which response is better under the constitution?",
                "required": True,
            }
        ],
        "metadata": [{"name": "uncertainty", "type": "float"}],
        "mapping": _ARGILLA_MAPPING,
    }


_ARGILLA_README = """\
# charter review queue for Argilla 2.x

`settings.json` describes the dataset (three text fields, one label question `preference` with
labels a / b / tie, one float metadata property `uncertainty`); `records.jsonl` holds one record
per pair, keyed by field names, with the judge's pick as a suggestion. Load them with:

```python
import json
import argilla as rg

client = rg.Argilla(api_url="http://localhost:6900", api_key="...")
s = json.load(open("settings.json"))
settings = rg.Settings(
    guidelines=s["guidelines"],
    fields=[rg.TextField(name=f["name"], use_markdown=True) for f in s["fields"]],
    questions=[rg.LabelQuestion(name="preference", labels=s["questions"][0]["labels"])],
    metadata=[rg.FloatMetadataProperty(name="uncertainty")],
)
dataset = rg.Dataset(name="charter-review", settings=settings, client=client)
dataset.create()
records = [json.loads(line) for line in open("records.jsonl")]
dataset.records.log(records, mapping=s["mapping"])
```

When the labelling is done, write the records back out and import them:

```python
with open("labelled.jsonl", "w") as fh:
    for r in dataset.records.to_list(flatten=True):
        fh.write(json.dumps(r) + "\\n")
```

`charter review import RUN_DIR labelled.jsonl` reads each record's `id` and its
`preference.responses` (the majority of the annotators' answers).
"""


def with_jury_votes(rows: list[dict[str, Any]], judgments_path: Path) -> list[dict[str, Any]]:
    """Rows with a ``jury`` list of each jury member's P(chosen), from the judgment comparing
    the same two candidates; rows without a jury judgment (or with a ``jury``) are unchanged."""
    if not judgments_path.exists():
        return rows
    members: dict[tuple[str, str], dict[str, float]] = {}
    for _, j in read_jsonl(judgments_path):
        votes = (j.get("raw") or {}).get("members")
        if isinstance(votes, dict) and votes:
            p_a = {name: float(m["p_a"]) for name, m in votes.items()}
            members[(j["candidate_a"], j["candidate_b"])] = p_a
            members[(j["candidate_b"], j["candidate_a"])] = {k: 1 - v for k, v in p_a.items()}
    out = []
    for row in rows:
        found = members.get((row["chosen_id"], row["rejected_id"]))
        out.append(row if "jury" in row or not found else {**row, "jury": list(found.values())})
    return out


def with_needs_human(rows: list[dict[str, Any]], judgments_path: Path) -> list[dict[str, Any]]:
    """Rows with ``needs_human: true`` where a cascade's last tier was still unsure of the
    judgment comparing the same two candidates."""
    if not judgments_path.exists():
        return rows
    flagged = set()
    for _, j in read_jsonl(judgments_path):
        if ((j.get("raw") or {}).get("cascade") or {}).get("needs_human"):
            flagged.add(frozenset((j["candidate_a"], j["candidate_b"])))
    return [
        {**row, "needs_human": True}
        if frozenset((row["chosen_id"], row["rejected_id"])) in flagged
        else row
        for row in rows
    ]


def export_queue(run_dir: Path, settings: ReviewSettings) -> tuple[Path, list[QueueItem], int]:
    """Write the queue (``review/queue.jsonl``) and its labelling file; return the file's path,
    the queue and the number of pairs in the run."""
    path = run_dir / run_files.PAIRS
    if not path.exists():
        raise InputError(
            f"no pairs to review; run `charter pairs run_dir={run_dir}` first", file=str(path)
        )
    rows = [row for _, row in read_jsonl(path)]
    judgments = run_dir / run_files.JUDGMENTS
    queue = build_queue(with_needs_human(with_jury_votes(rows, judgments), judgments), settings)
    by_id = {review_id(r): r for r in rows}
    out = run_dir / REVIEW_DIR
    write_jsonl_atomic(out / QUEUE, [asdict(q) for q in queue])
    labelling = [_labelling_row(q, by_id[q.review_id]) for q in queue]
    if settings.format == "jsonl":
        dest = out / "to_label.jsonl"
        write_jsonl_atomic(dest, labelling)
    elif settings.format == "csv":
        dest = out / "to_label.csv"
        _write_csv(dest, labelling)
    else:
        dest = out / "argilla"
        guidelines = (
            "Read the prompt and both responses; pick the better one under the constitution "
            "(a or b), or tie if neither is better."
        )
        records = [
            {
                "id": q.review_id,
                **{k: v for k, v in row.items() if k not in ("review_id", "human_label")},
                "uncertainty": q.uncertainty,
                "judge_suggestion": q.judge_choice,
                "judge_score": round(max(q.p_chosen, 1 - q.p_chosen), 6),
                "judge_model": by_id[q.review_id]["judge_model"],
            }
            for q, row in zip(queue, labelling, strict=True)
        ]
        with atomic_dir(dest) as tmp:
            (tmp / "settings.json").write_text(
                json.dumps(_argilla_settings(guidelines), indent=2) + "\n", encoding="utf-8"
            )
            write_jsonl_atomic(tmp / "records.jsonl", records)
            (tmp / "README.md").write_text(_ARGILLA_README, encoding="utf-8")
    return dest, queue, len(rows)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["review_id", "prompt", "response_a", "response_b", "human_label"]
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
