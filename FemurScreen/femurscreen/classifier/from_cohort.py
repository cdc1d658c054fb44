"""From a cohort CSV to a trained model folder (the work behind ``femurscreen train-classifier``).

A cohort CSV has ``case_id, ct, mask, t_score, bone_status`` (paths relative to the CSV). Labels
come from ``bone_status``, or from ``t_score`` by the WHO thresholds where ``bone_status`` is
empty. Features come from a FEATURES.csv when one is given (its cases must be exactly the
cohort's), otherwise they are extracted with :mod:`femurscreen.features` from the masks.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from femurscreen.classifier import columns as col
from femurscreen.classifier.training import train_classifier
from femurscreen.errors import FemurScreenError, InputError
from femurscreen.io.cohort_csv import read_cohort_csv
from femurscreen.labels import CLASSES, bone_status

log = logging.getLogger(__name__)


def read_csv(path: str | Path, what: str) -> pd.DataFrame:
    """A CSV with ``case_id`` read as text (so '007' stays '007')."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", "check the path", path)
    try:
        table = pd.read_csv(path, dtype={col.CASE: str}, encoding="utf-8-sig")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(
            f"cannot read the {what} ({exc})", "give a comma-separated file", path
        ) from exc
    if col.CASE not in table.columns:
        raise InputError(
            f"the {what} has no 'case_id' column (columns: {col.short_list(table.columns)})",
            "add a case_id column",
            path,
        )
    table[col.CASE] = table[col.CASE].astype(str).str.strip()
    return table


def cohort_labels(cohort: pd.DataFrame, path: str | Path) -> pd.Series:
    """Bone status per case_id, from ``bone_status`` or else ``t_score``."""
    repeated = sorted(cohort.loc[cohort[col.CASE].duplicated(), col.CASE].unique())
    if repeated:
        raise InputError(
            f"repeated case_id(s): {col.short_list(repeated)}", "list each case once", path
        )
    labels = {}
    problems = []
    for _, row in cohort.iterrows():
        case = row[col.CASE]
        status = row.get("bone_status")
        status = "" if pd.isna(status) else str(status).strip().lower()
        if not status:
            t = pd.to_numeric(row.get("t_score"), errors="coerce")
            if pd.notna(t) and math.isfinite(float(t)):
                status = bone_status(float(t))
        if status not in CLASSES:
            problems.append(f"{case} ({status or 'no bone_status or t_score'})")
        labels[case] = status
    if problems:
        raise InputError(
            f"cases without a valid label: {col.short_list(problems)}",
            f"give bone_status ({', '.join(CLASSES)}) or a t_score for every case",
            path,
        )
    return pd.Series(labels, name="bone_status")


def _check_same_cases(features: pd.DataFrame, labels: pd.Series, path: Path) -> None:
    have = set(features[col.CASE])
    want = set(labels.index)
    missing, extra = sorted(want - have), sorted(have - want)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"cohort cases without feature rows: {col.short_list(missing)}")
        if extra:
            parts.append(f"feature rows of cases not in the cohort: {col.short_list(extra)}")
        raise InputError(
            "the features table does not match the cohort (" + "; ".join(parts) + ")",
            "extract features for exactly the cohort's cases, or fix the cohort CSV",
            path,
        )


def extract_features(
    cohort_csv: Path, cohort: pd.DataFrame, *, workers: int, cache_dir: Path | None
) -> pd.DataFrame:
    """Radiomics for every case of the cohort from its masks (segmentation must come first)."""
    if "mask" not in cohort.columns:
        no_mask = list(cohort[col.CASE])
    else:
        no_mask = [
            c
            for c, m in zip(cohort[col.CASE], cohort["mask"], strict=True)
            if pd.isna(m) or not str(m).strip()
        ]
    if no_mask:
        raise InputError(
            f"case(s) without a femur mask: {col.short_list(no_mask)}; segmentation is needed "
            "before features can be extracted",
            "segment those CTs and fill the cohort's 'mask' column, or pass --features "
            "FEATURES.csv",
            cohort_csv,
        )
    try:
        from femurscreen.features import extract_cohort_features
    except ImportError as exc:
        raise FemurScreenError(
            f"feature extraction is not available ({exc})",
            "install the radiomics extra (pip install 'femurscreen[radiomics]') or pass "
            "--features FEATURES.csv",
        ) from exc
    return extract_cohort_features(cohort_csv, cache_dir=cache_dir, workers=workers)


def train_classifier_from_cohort(
    cohort_csv: str | Path,
    *,
    out_dir: str | Path,
    features_csv: str | Path | None = None,
    workers: int = 1,
    seed: int = 0,
    demo: bool = True,
    cache_dir: str | Path | None = None,
    command: str | None = None,
    **fit_options: Any,
) -> Path:
    """Labels from the cohort, features from ``features_csv`` or extraction; writes ``out_dir``."""
    cohort_csv = Path(cohort_csv)
    cohort = read_cohort_csv(cohort_csv).frame()
    labels = cohort_labels(cohort, cohort_csv)
    if features_csv is not None:
        features_csv = Path(features_csv)
        features = read_csv(features_csv, "features CSV")
        _check_same_cases(features, labels, features_csv)
    else:
        features = extract_features(
            cohort_csv,
            cohort,
            workers=workers,
            cache_dir=None if cache_dir is None else Path(cache_dir),
        )
        features[col.CASE] = features[col.CASE].astype(str)
        _check_same_cases(features, labels, cohort_csv)
    return train_classifier(
        features,
        labels,
        out_dir=out_dir,
        seed=seed,
        demo=demo,
        source=cohort_csv.name,
        command=command,
        workers=workers,
        **fit_options,
    )
