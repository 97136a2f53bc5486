"""Training data from charter runs (or any TRL-shaped file), with its provenance.

Preference data is a run directory (its ``dataset/`` folder, else ``pairs.jsonl``), a
``save_to_disk`` folder, or a JSONL/Parquet file with ``prompt``/``chosen``/``rejected``. SFT data
is a folder or file with ``messages``, or ``prompt`` + ``completion``, or ``text``. Bad JSONL rows
are skipped and returned as rejects with their line and reason; a file with no usable row, or a
folder without the needed columns, is an :class:`~charter.errors.InputError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.errors import InputError
from charter.jsonl import iter_jsonl_lenient
from charter.records import Reject

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
SFT_SHAPES = (("messages",), ("prompt", "completion"), ("text",))
PROVENANCE_COLUMNS = ("constitution_sha256", "judge_model", "generator_model")


@dataclass(frozen=True)
class Provenance:
    """Where training data came from, for the model card: every distinct value seen."""

    source: str
    rows: int
    constitution_sha256: list[str]
    judge_model: list[str]
    generator_model: list[str]

    @staticmethod
    def of(dataset: Any, source: Path) -> Provenance:
        """Read the distinct ``PROVENANCE_COLUMNS`` values of ``dataset``."""

        def distinct(column: str) -> list[str]:
            if column not in dataset.column_names:
                return []
            return sorted({str(v) for v in dataset[column] if v})

        return Provenance(
            source=str(source),
            rows=len(dataset),
            constitution_sha256=distinct("constitution_sha256"),
            judge_model=distinct("judge_model"),
            generator_model=distinct("generator_model"),
        )


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_chat(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    )


def _row_problem(row: dict[str, Any], columns: tuple[str, ...]) -> tuple[str, str] | None:
    for name in columns:
        value = row.get(name)
        if not (_is_text(value) or _is_chat(value)):
            return name, f"{name} is missing, empty, or neither text nor a chat: {value!r}"[:200]
    return None


def _read_jsonl(
    path: Path, columns: tuple[str, ...], stage: str
) -> tuple[list[dict], list[Reject]]:
    rows, rejects = [], []
    for line, row in iter_jsonl_lenient(path):
        if isinstance(row, Reject):
            rejects.append(Reject(stage, row.source, row.reason, row.field, row.row))
            continue
        problem = _row_problem(row, columns)
        if problem:
            rejects.append(Reject(stage, f"{path}:{line}", problem[1], field=problem[0], row=row))
        else:
            rows.append(row)
    return rows, rejects


def _open(path: Path) -> tuple[Any, list[Reject], Path]:
    """Rows of a folder, JSONL or Parquet file as a Dataset (JSONL: also its rejects)."""
    from datasets import Dataset, load_from_disk

    if not path.exists():
        raise InputError("no such file or folder", file=str(path))
    if path.is_dir() and (path / "dataset").is_dir():
        path = path / "dataset"
    elif path.is_dir() and (path / "pairs.jsonl").is_file():
        path = path / "pairs.jsonl"
    if path.is_dir():
        try:
            data = load_from_disk(str(path))
        except Exception as exc:  # not a save_to_disk folder: say so plainly
            raise InputError(
                f"not a datasets folder or run directory ({exc})", file=str(path)
            ) from None
        if hasattr(data, "keys"):  # a DatasetDict: train on its train split
            if "train" not in data:
                raise InputError(f"dataset has no 'train' split: {list(data)}", file=str(path))
            data = data["train"]
        return data, [], path
    if path.suffix == ".parquet":
        return Dataset.from_parquet(str(path)), [], path
    if path.suffix in (".jsonl", ".json"):
        return None, [], path
    raise InputError("expected a run dir, a datasets folder, .jsonl or .parquet", file=str(path))


def _require(data: Any, shapes: tuple[tuple[str, ...], ...], path: Path) -> tuple[str, ...]:
    for columns in shapes:
        if all(c in data.column_names for c in columns):
            return columns
    wanted = " or ".join("+".join(c) for c in shapes)
    raise InputError(f"needs columns {wanted}; has {data.column_names}", file=str(path))


def load_preference_pairs(path: str | Path) -> tuple[Any, list[Reject], Provenance]:
    """Load preference pairs for reward modelling or DPO.

    Returns:
        ``(dataset, rejects, provenance)``: a ``datasets.Dataset`` with at least ``prompt``,
        ``chosen``, ``rejected`` (and charter's ``margin``/``p_chosen`` when the data has them).
    """
    from datasets import Dataset

    data, rejects, path = _open(Path(path))
    if data is None:
        rows, rejects = _read_jsonl(path, PAIR_COLUMNS, "train")
        if not rows:
            raise InputError(
                f"no usable preference pairs ({len(rejects)} rejected)", file=str(path)
            )
        data = Dataset.from_list(rows)
    _require(data, (PAIR_COLUMNS,), path)
    if len(data) == 0:
        raise InputError("no preference pairs in this data", file=str(path))
    return data, rejects, Provenance.of(data, path)


def load_sft_data(path: str | Path) -> tuple[Any, list[Reject], Provenance]:
    """Load SFT examples: ``messages``, or ``prompt`` + ``completion``, or ``text`` columns.

    Only the columns of the shape found are kept, so TRL's SFTTrainer picks the right format.
    """
    from datasets import Dataset

    data, rejects, path = _open(Path(path))
    if data is None:
        raw_rows = [row for _, row in iter_jsonl_lenient(path) if not isinstance(row, Reject)]
        if not raw_rows:
            raise InputError("no JSON rows", file=str(path))
        shape = _require(Dataset.from_list(raw_rows[:1]), SFT_SHAPES, path)
        rows, rejects = _read_jsonl(path, shape, "train")
        if not rows:
            raise InputError(f"no usable SFT rows ({len(rejects)} rejected)", file=str(path))
        # provenance columns ride along until Provenance.of has read them
        keep = (*shape, *(c for c in PROVENANCE_COLUMNS if any(c in r for r in rows)))
        data = Dataset.from_list([{c: r.get(c) for c in keep} for r in rows])
    shape = _require(data, SFT_SHAPES, path)
    provenance = Provenance.of(data, path)
    return data.select_columns(list(shape)), rejects, provenance


def split(dataset: Any, eval_fraction: float, seed: int) -> tuple[Any, Any | None]:
    """A seeded train / held-out split; no held-out set when the fraction or data is too small."""
    n_eval = int(round(len(dataset) * eval_fraction))
    if eval_fraction <= 0 or n_eval < 1 or len(dataset) - n_eval < 1:
        return dataset, None
    parts = dataset.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]
