"""Human labels back into a run: read the labelled file, merge, report agreement and accuracy.

``charter review import RUN_DIR FILE`` reads the labels (``a``, ``b`` or ``tie``; blank means not
reviewed) of the queue that ``charter review export`` wrote, merges them into
``reviewed/pairs.jsonl`` (a human label wins; ``tie`` drops the pair, kept in
``reviewed/rejects.jsonl``; every row keeps the judge's label and says ``label_source``),
republishes the reviewed dataset, and reports judge-vs-human agreement, the review budget, and,
for a random audit, the dataset's estimated label accuracy (:mod:`charter.review_audit`).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from charter import run_files
from charter.errors import InputError
from charter.jsonl import atomic_dir, read_jsonl, write_jsonl_atomic, write_text_atomic
from charter.records import Reject
from charter.review import LABELS, QUEUE, REVIEW_DIR, REVIEWED_DIR, QueueItem, review_id
from charter.review_audit import accuracy_estimate, probabilities_kind


def _read_labelled(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Rows of a labelled file with their line numbers (CSV rows count the header as line 1)."""
    if path.suffix.lower() != ".csv":
        return list(read_jsonl(path))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", file=str(path)) from None
    except OSError as e:  # a folder, no permission, a name too long
        raise InputError(f"cannot read the file: {e.strerror}", file=str(path)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"not UTF-8 text ({e.reason})", file=str(path), line=line) from None
    csv.field_size_limit(2**31 - 1)  # a long response in a cell is not a malformed file
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        # reader.line_num is the physical line the row ended on (fields may hold newlines)
        return [(reader.line_num, dict(row)) for row in reader]
    except csv.Error as e:
        line = reader.line_num
        raise InputError(f"not readable as CSV: {e}", file=str(path), line=line) from None


def _label_of(row: dict[str, Any], file: str, line: int) -> str:
    """The human label of one row: ``human_label``, or Argilla's ``preference.responses``."""
    if "human_label" in row:
        raw, field = row["human_label"], "human_label"
    elif "preference.responses" in row:
        field = "preference.responses"
        responses = row["preference.responses"] or []
        if not isinstance(responses, list):
            raise InputError(
                f"expected a list of annotators' answers, got {responses!r}"[:200],
                file=file,
                line=line,
                field=field,
            )
        answers = [a.get("value") if isinstance(a, dict) else a for a in responses]
        counts = Counter(str(a).strip().lower() for a in answers if a)
        top = counts.most_common(2)
        raw = "" if not top else ("tie" if len(top) > 1 and top[0][1] == top[1][1] else top[0][0])
    elif "preference" in row:
        raw, field = row["preference"], "preference"
    else:
        raise InputError(
            "no label column: expected human_label (or Argilla's preference.responses)",
            file=file,
            line=line,
            field="human_label",
        )
    label = "" if raw is None else str(raw).strip().lower()
    if label not in ("", *LABELS):
        raise InputError(
            f"label must be one of a, b, tie (or blank), got {raw!r}",
            file=file,
            line=line,
            field=field,
        )
    return label


def read_labels(path: Path, queue: dict[str, QueueItem]) -> dict[str, str]:
    """``{review_id: label}`` for the labelled rows of ``path`` (blank rows are left out).

    Raises:
        InputError: a row names no id or one not in the queue, has a bad label, or repeats an id
            with a different label (naming file, line and field).
    """
    labels: dict[str, str] = {}
    for line, row in _read_labelled(path):
        rid = row.get("review_id", row.get("id"))
        if not rid:
            raise InputError("missing review_id", file=str(path), line=line, field="review_id")
        if not isinstance(rid, str):
            raise InputError(
                f"review_id must be the text id from the queue, got {rid!r}"[:200],
                file=str(path),
                line=line,
                field="review_id",
            )
        if rid not in queue:
            raise InputError(
                f"review_id {rid!r} is not in this run's review queue (review/queue.jsonl)",
                file=str(path),
                line=line,
                field="review_id",
            )
        label = _label_of(row, str(path), line)
        if not label:
            continue
        if labels.get(rid, label) != label:
            raise InputError(
                f"review_id {rid!r} labelled twice, {labels[rid]!r} and {label!r}",
                file=str(path),
                line=line,
                field="human_label",
            )
        labels[rid] = label
    return labels


def merge_labels(
    rows: list[dict[str, Any]], queue: dict[str, QueueItem], labels: dict[str, str]
) -> tuple[list[dict[str, Any]], list[Reject]]:
    """Pairs with human labels applied: a human label wins (``p_chosen`` 1.0, chosen and
    rejected swapped where people disagreed), ``tie`` drops the pair as a reject, and every row
    keeps the judge's pick (``judge_chosen_id``, ``judge_p_chosen``, ``judge_margin``)."""
    merged, rejects = [], []
    for row in rows:
        rid = review_id(row)
        label = labels.get(rid)
        out = {
            **row,
            "review_id": rid,
            "label_source": "judge" if label is None else "human",
            "human_label": label,
            "judge_chosen_id": row["chosen_id"],
            "judge_p_chosen": row["p_chosen"],
            "judge_margin": row["margin"],
        }
        if label == "tie":
            rejects.append(
                Reject(
                    stage="review",
                    source=rid,
                    reason="human reviewer judged a tie; pair dropped",
                    field="human_label",
                    row={"prompt_id": row["prompt_id"], "judge_chosen_id": row["chosen_id"]},
                )
            )
            continue
        if label is not None:
            item = queue[rid]
            human_chosen = item.a_id if label == "a" else item.b_id
            if human_chosen != row["chosen_id"]:
                out.update(
                    chosen=row["rejected"],
                    rejected=row["chosen"],
                    chosen_id=row["rejected_id"],
                    rejected_id=row["chosen_id"],
                )
            out.update(p_chosen=1.0, margin=1.0)
        merged.append(out)
    return merged, rejects


def agreement_report(
    queue: dict[str, QueueItem], labels: dict[str, str], total_pairs: int
) -> dict[str, Any]:
    """Judge-vs-human agreement on the reviewed pairs, and the review budget's savings."""
    decided = {rid: lab for rid, lab in labels.items() if lab != "tie"}
    agree = [queue[rid].judge_choice == lab for rid, lab in decided.items()]
    by_swap: dict[str, list[bool]] = {"swap_consistent": [], "swap_inconsistent": []}
    for rid, lab in decided.items():
        key = "swap_consistent" if queue[rid].swap_consistent else "swap_inconsistent"
        by_swap[key].append(queue[rid].judge_choice == lab)
    return {
        "pairs_in_run": total_pairs,
        "pairs_sent_to_humans": len(queue),
        "pairs_kept_with_judge_label": total_pairs - len(queue),
        "share_sent_to_humans": round(len(queue) / total_pairs, 4) if total_pairs else None,
        "labelled": len(labels),
        "unlabelled_in_queue": len(queue) - len(labels),
        "ties_dropped": len(labels) - len(decided),
        "judge_human_agreement": round(sum(agree) / len(agree), 4) if agree else None,
        "agreement_by_swap_consistency": {
            k: {"n": len(v), "agreement": round(sum(v) / len(v), 4) if v else None}
            for k, v in by_swap.items()
        },
        "judge_flipped_by_humans": len(agree) - sum(agree),
    }


def import_labels(run_dir: Path, file: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Merge a labelled file into ``reviewed/``: pairs, rejects, dataset files and report.

    Returns:
        the merged rows and the agreement report (also written to ``reviewed/report.json``).
    """
    queue_path = run_dir / REVIEW_DIR / QUEUE
    if not queue_path.exists():
        raise InputError(
            f"no review queue; run `charter review export {run_dir}` first", file=str(queue_path)
        )
    queue = {}
    for _, row in read_jsonl(queue_path):
        item = QueueItem(**row)
        queue[item.review_id] = item
    labels = read_labels(file, queue)
    rows = [row for _, row in read_jsonl(run_dir / run_files.PAIRS)]
    merged, rejects = merge_labels(rows, queue, labels)
    report = {"file": str(file), **agreement_report(queue, labels, len(rows))}
    judgments_path = run_dir / run_files.JUDGMENTS
    judgments = [j for _, j in read_jsonl(judgments_path)] if judgments_path.exists() else []
    report["accuracy_estimate"] = accuracy_estimate(
        rows,
        {rid: q.selection for rid, q in queue.items()},
        {rid: queue[rid].judge_choice == lab for rid, lab in labels.items() if lab != "tie"},
        review_id,
        probabilities_kind(judgments),
    )
    out = run_dir / REVIEWED_DIR
    write_jsonl_atomic(out / "pairs.jsonl", merged)
    write_jsonl_atomic(out / "rejects.jsonl", [asdict(r) for r in rejects])
    _write_dataset(out, merged)
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    return merged, report


def _write_dataset(out: Path, rows: list[dict[str, Any]]) -> None:
    """The reviewed pairs as a ``datasets`` folder and Parquet, like the pairs stage writes."""
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    dataset = Dataset.from_list(rows) if rows else Dataset.from_dict({"prompt": []})
    with atomic_dir(out / "dataset") as tmp:
        dataset.save_to_disk(str(tmp))
    tmp_parquet = out / ".pairs.parquet.tmp"
    dataset.to_parquet(str(tmp_parquet))
    tmp_parquet.replace(out / "pairs.parquet")
