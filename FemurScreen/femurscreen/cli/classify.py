"""``femurscreen classify``: bone-status probabilities for every femur in a FEATURES table."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from femurscreen.atomic import atomic_path
from femurscreen.classifier import classify, default_model_dir, load_model
from femurscreen.classifier import columns as col
from femurscreen.classifier.from_cohort import read_csv
from femurscreen.classifier.persistence import DEMO_NOTICE
from femurscreen.cli._options import add_model_option
from femurscreen.errors import InputError
from femurscreen.io.cohort_csv import read_cohort_csv
from femurscreen.status import Status

NAME = "classify"
HELP = "bone-status probabilities per femur from a FEATURES table and a model folder"
EXAMPLE = "femurscreen classify FEATURES.csv --model model/ --out predictions.csv"
ORDER = 65


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "features", metavar="FEATURES.csv", help="features table (one row per side)"
    )
    add_model_option(parser)
    parser.add_argument(
        "--out",
        metavar="PRED.csv",
        help="write the predictions CSV (usable by 'femurscreen evaluate --predictions')",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON on stdout instead of a table"
    )
    parser.add_argument(
        "--truth",
        metavar="COHORT.csv",
        help="cohort CSV whose bone_status (or true_class) column is copied into the output "
        "as true_class, so that it can go straight to 'femurscreen evaluate'",
    )


def run(args: argparse.Namespace) -> int:
    loaded = load_model(args.model if args.model else default_model_dir())
    if loaded.demo:
        notice = loaded.manifest.get("demo_notice") or DEMO_NOTICE
        print(f"*** {notice} ***", file=sys.stderr)
    features = read_csv(args.features, "features CSV")
    if args.truth:
        features = _with_truth(features, Path(args.truth))
    result = classify(features, loaded)
    if args.out:
        with atomic_path(args.out) as tmp:
            result.to_csv(tmp, index=False)
        print(f"wrote {len(result)} row(s) to {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(_as_json(result, loaded.path, loaded.manifest), indent=2))
    else:
        print(_table(result, loaded.classes))
    n_ok = int((result[col.STATUS] == Status.OK).sum())
    if n_ok < len(result):
        for _, row in result[result[col.STATUS] != Status.OK].iterrows():
            print(f"  {row[col.CASE]}/{row[col.SIDE]}: {row[col.ERROR]}", file=sys.stderr)
    # 0 while at least one femur was classified: failed rows are marked in the status column.
    return 0 if n_ok else 1


def _with_truth(features: pd.DataFrame, cohort_csv: Path) -> pd.DataFrame:
    """Attach each case's reference class from a cohort table."""
    cohort = read_cohort_csv(cohort_csv).frame()
    label = next((c for c in col.LABEL_COLUMNS if c in cohort.columns), None)
    if label is None or col.CASE not in cohort.columns:
        raise InputError(
            "the cohort has no case_id and bone_status (or true_class) columns",
            "give the cohort.csv the features were extracted from",
            path=cohort_csv,
        )
    truth = dict(zip(cohort[col.CASE].astype(str), cohort[label].astype(str), strict=True))
    cases = features[col.CASE].astype(str)
    missing = sorted(set(cases) - set(truth))
    if missing:
        raise InputError(
            f"{len(missing)} case(s) of the features table are not in the cohort: "
            f"{col.short_list(missing)}",
            "give the cohort.csv the features were extracted from",
            path=cohort_csv,
        )
    features = features.copy()
    features["true_class"] = cases.map(truth)
    return features


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def _as_json(result: pd.DataFrame, model_dir: Path, manifest: dict) -> dict:
    return {
        "demo": bool(manifest.get("demo", False)),
        "demo_notice": manifest.get("demo_notice"),
        "model": str(model_dir),
        "model_created": manifest.get("created"),
        "classes": manifest["classes"],
        "predictions": [
            {k: _clean(v) for k, v in row.items()} for row in result.to_dict(orient="records")
        ],
    }


def _table(result: pd.DataFrame, classes: list[str]) -> str:
    header = f"{'case_id':<16} {'side':<6} " + " ".join(f"{'p_' + c:>15}" for c in classes)
    header += f"  {'predicted':<13} applicable"
    lines = [header]
    for _, row in result.iterrows():
        if row[col.STATUS] != Status.OK:
            lines.append(f"{row[col.CASE]:<16} {row[col.SIDE]!s:<6} error: {row[col.ERROR]}")
            continue
        probs = " ".join(f"{row['p_' + c]:>15.3f}" for c in classes)
        flag = "yes" if row["applicable"] else "NO (unreliable)"
        lines.append(
            f"{row[col.CASE]:<16} {row[col.SIDE]!s:<6} {probs}  {row['predicted']:<13} {flag}"
        )
    return "\n".join(lines)
