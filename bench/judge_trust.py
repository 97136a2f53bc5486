"""How far calibration, a cascade and a random audit take a judge, on human-labelled pairs.

Reads the per-row verdicts of ``charter eval-judge`` runs on the same rows of one labelled file
(same ``limit`` and ``seed``, so the same pairs and principles) and prints, side by side:

1. each judge raw and calibrated: agreement with people, length-controlled agreement and ECE,
   the calibrated figures cross-validated (``charter calibrate``'s fit, 5 folds), with bootstrap
   95% intervals, and the seconds per comparison the eval-judge run measured;
2. cascades, cheap tier first: at each threshold, the share escalated, the agreement and the
   seconds, beside the strong judge on everything. A cascade's verdict on a row is exactly what
   ``judge=cascade`` would return given the two tiers' verdicts on it, so it is computed from them;
   the cheap tier's confidence is its cross-validated calibrated probability, as a fitted
   ``judge.tiers.cheap.calibration`` would give on new rows; its seconds are the cheap tier's
   measured cost on every row plus the strong tier's on the escalated ones;
3. the label-accuracy estimate: random "runs" drawn from the rows, with a random audit of 30
   human labels each, PPI on the strong judge's calibrated probabilities against the audit
   alone: median interval widths and how often each interval covers the run's true agreement.

    .venv/bin/python -m bench.judge_trust --cheap DIR --strong DIR [--tier NAME=DIR ...]

Make the inputs with, e.g. (README, "Which judge, measured"):

    charter eval-judge data=FILE constitution=helpful limit=150 injection_pairs=0 \
        hydra.run.dir=outputs/judge_trust/smol_pandalm
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from charter.judge_eval.calibration import (
    FitSettings,
    JudgeSignals,
    LabelledSignals,
    fit_calibration,
    metrics_with_intervals,
)
from charter.judge_eval.ppi import ppi_mean
from charter.records import Judgment, from_row

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / "outputs" / "judge_trust"


@dataclass
class Judged:
    """One eval-judge run: per-row raw and cross-validated calibrated P(human choice)."""

    name: str
    ids: list[str]
    raw: np.ndarray
    calibrated: np.ndarray
    swap_consistent: np.ndarray
    lengths: np.ndarray  # len(chosen) - len(rejected)
    seconds_per_comparison: float
    cv: dict


def load(name: str, folder: Path, seed: int) -> Judged:
    config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
    data = Path(config["data"])
    texts = {}
    for line in data.open():
        row = json.loads(line)
        texts[row["id"]] = (row["chosen"], row["rejected"])
    rows, ids, consistent = [], [], []
    for line in (folder / "verdicts.jsonl").open():
        v = json.loads(line)
        j = from_row(Judgment, v)
        chosen, rejected = texts[j.prompt_id]
        rows.append(LabelledSignals(j.principle_id, JudgeSignals.of(j, chosen, rejected), 1))
        ids.append(j.prompt_id)
        consistent.append(j.swap_consistent)
    calibration, held = fit_calibration(
        rows,
        FitSettings(seed=seed),
        judge_fingerprint="bench",
        judge=name,
        constitution_sha256="bench",
        source=str(folder),
    )
    # back to the file's orientation (a = the human choice): the fit flipped some rows
    calibrated = np.where(held.label == 1, held.calibrated, 1 - held.calibrated)
    metrics = json.loads((folder / "metrics.json").read_text())
    return Judged(
        name=name,
        ids=ids,
        raw=np.array([r.signals.raw_p for r in rows]),
        calibrated=calibrated,
        swap_consistent=np.array(consistent),
        lengths=np.array([r.signals.length_a - r.signals.length_b for r in rows], dtype=float),
        seconds_per_comparison=float(metrics["seconds_per_comparison"]),
        cv=calibration.cv,
    )


def figures(p: np.ndarray, lengths: np.ndarray) -> dict[str, dict[str, float]]:
    """Agreement, length-controlled agreement and ECE of P(human choice), with intervals."""
    y = np.ones(len(p))
    return metrics_with_intervals(p, y, lengths, resamples=1000, seed=0)


def cell(m: dict[str, float]) -> str:
    return f"{m['value']:.3f} [{m['low']:.2f}, {m['high']:.2f}]"


def judge_table(judges: list[Judged]) -> None:
    print(
        "\n| judge | n | agree raw | agree calibrated (CV) | len-ctrl raw | len-ctrl cal. |"
        " ECE raw | ECE cal. | swap-consistent | s / comparison |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for j in judges:
        raw, cal = figures(j.raw, j.lengths), figures(j.calibrated, j.lengths)
        print(
            f"| {j.name} | {len(j.ids)} | {cell(raw['agreement'])} | {cell(cal['agreement'])} | "
            f"{cell(raw['length_controlled_agreement'])} | "
            f"{cell(cal['length_controlled_agreement'])} | {raw['ece']['value']:.3f} | "
            f"{cal['ece']['value']:.3f} | {j.swap_consistent.mean():.2f} | "
            f"{j.seconds_per_comparison:.2f} |"
        )
    baseline = np.where(judges[0].lengths > 0, 1.0, np.where(judges[0].lengths < 0, 0.0, 0.5))
    print(
        f"| longer response | {len(baseline)} | {baseline.mean():.3f} | – | 0.5 by definition "
        "| – | – | – | – | 0 |"
    )


def cascade_table(cheap: Judged, strong: Judged, thresholds: list[float]) -> None:
    n = len(cheap.ids)
    strong_fig = figures(strong.calibrated, strong.lengths)
    strong_seconds = strong.seconds_per_comparison * n
    print(
        f"\n{cheap.name} -> {strong.name} (strong on everything: agreement "
        f"{cell(strong_fig['agreement'])}, {strong_seconds:.0f} s)"
    )
    print("| escalate when | escalated | agreement | len-ctrl | seconds | vs strong alone |")
    print("|---|---|---|---|---|---|")
    confidence = np.maximum(cheap.calibrated, 1 - cheap.calibrated)
    for swap_rule in (True, False):
        for t in thresholds:
            up = confidence < t
            if swap_rule:
                up |= ~cheap.swap_consistent
            p = np.where(up, strong.calibrated, cheap.calibrated)
            fig = figures(p, cheap.lengths)
            seconds = cheap.seconds_per_comparison * n + strong.seconds_per_comparison * up.sum()
            rule = f"conf < {t}" + (" or swap-inconsistent" if swap_rule else "")
            print(
                f"| {rule} | {up.mean():.2f} | {cell(fig['agreement'])} | "
                f"{cell(fig['length_controlled_agreement'])} | {seconds:.0f} | "
                f"{seconds / strong_seconds:.2f}× the time |"
            )


def to_people_table(last: Judged, thresholds: list[float]) -> None:
    """The last tier's doubts go to people (``needs_human``): how many, and how good the
    labels the judge keeps are. People's labels count as right (they are the reference)."""
    confidence = np.maximum(last.calibrated, 1 - last.calibrated)
    right = (last.calibrated > 0.5).astype(float)
    print(f"\n{last.name}'s calibrated doubts sent to people (needs_human)")
    print(
        "| needs_human when | share to people | agreement of the labels the judge keeps |"
        " agreement of all published labels |"
    )
    print("|---|---|---|---|")
    for t in thresholds:
        kept = confidence >= t
        kept_agree = f"{right[kept].mean():.3f} (n={int(kept.sum())})" if kept.any() else "–"
        overall = float(np.where(kept, right, 1.0).mean())
        print(f"| conf < {t} | {1 - kept.mean():.2f} | {kept_agree} | {overall:.3f} |")


def audit_table(strong: Judged, run_sizes: list[int], audit: int, draws: int) -> None:
    """Random runs from the rows, each with a random audit; the judge labels every pair with its
    calibrated pick, and people agree with that pick where it matches the human choice."""
    agree = (strong.calibrated > 0.5).astype(float)  # people agree with the judge's label
    f = np.maximum(strong.calibrated, 1 - strong.calibrated)  # P(the judge's label is right)
    print(
        f"\nlabel-accuracy estimate, {strong.name}'s calibrated probabilities, audit of "
        f"{audit} random pairs, {draws} random runs each"
    )
    print(
        "| run size | true agreement (mean) | PPI width (median) | audit-only width (median) |"
        " width ratio | PPI covers | audit-only covers |"
    )
    print("|---|---|---|---|---|---|---|")
    rng = random.Random(0)
    for size in run_sizes:
        widths, base, ppi_cov, base_cov, truths = [], [], 0, 0, []
        for _ in range(draws):
            run = rng.sample(range(len(agree)), size)
            audited = set(rng.sample(run, audit))
            truth = float(np.mean(agree[run]))
            r = ppi_mean(
                [agree[i] for i in run if i in audited],
                [f[i] for i in run if i in audited],
                [f[i] for i in run if i not in audited],
            )
            widths.append(r.ppi.width)
            base.append(r.audit_only.width)
            ppi_cov += r.ppi.low <= truth <= r.ppi.high
            base_cov += r.audit_only.low <= truth <= r.audit_only.high
            truths.append(truth)
        ratio = statistics.median(w / b for w, b in zip(widths, base, strict=True) if b)
        print(
            f"| {size} | {statistics.mean(truths):.3f} | {statistics.median(widths):.3f} | "
            f"{statistics.median(base):.3f} | {ratio:.2f} | {ppi_cov / draws:.2f} | "
            f"{base_cov / draws:.2f} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cheap", type=Path, default=DEFAULT_DIR / "smol_pandalm")
    parser.add_argument("--strong", type=Path, default=DEFAULT_DIR / "qwen_pandalm")
    parser.add_argument("--tier", action="append", default=[], help="NAME=DIR, another cheap tier")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.6, 0.75, 0.9])
    parser.add_argument("--audit", type=int, default=30)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (
        not (args.cheap / "verdicts.jsonl").exists()
        or not (args.strong / "verdicts.jsonl").exists()
    ):
        print(
            f"skipped: no eval-judge verdicts in {args.cheap} and {args.strong}; make them with "
            "the commands in README, 'Which judge, measured'"
        )
        return
    cheap = load(args.cheap.name, args.cheap, args.seed)
    strong = load(args.strong.name, args.strong, args.seed)
    others = [load(n, Path(d), args.seed) for n, d in (t.split("=", 1) for t in args.tier)]
    for j in (strong, *others):
        if j.ids != cheap.ids:
            raise SystemExit(f"{j.name} judged other rows than {cheap.name}: same limit and seed?")
    judge_table([cheap, strong, *others])
    for tier in (cheap, *others):
        cascade_table(tier, strong, args.thresholds)
    to_people_table(strong, args.thresholds)
    audit_table(strong, [40, len(strong.ids)], args.audit, args.draws)


if __name__ == "__main__":
    main()
