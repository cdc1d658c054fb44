"""Train the bone-status classifier from a FEATURES table and per-case labels.

``fit_classifier`` does the statistics (nested CV estimate, final grouped grid search on all
rows, forest refitted on the selected features only, applicability statistics);
``train_classifier`` also writes the model folder. The stored model takes only the selected
features, so classifying a new case needs only those features extracted.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

from femurscreen import __version__
from femurscreen.classifier import columns as col
from femurscreen.classifier.applicability import Applicability
from femurscreen.classifier.cv import (
    DEFAULT_PARAM_GRID,
    NestedCvResult,
    grid_search,
    nested_cv,
)
from femurscreen.classifier.persistence import DEMO_NOTICE, write_model_dir
from femurscreen.classifier.selection import (
    SELECTION_SEQUENCE,
    build_pipeline,
    selected_feature_names,
)
from femurscreen.errors import InputError
from femurscreen.labels import CLASSES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRows:
    """The usable rows of a FEATURES table, as arrays."""

    X: np.ndarray  # (rows, features), may hold NaN (the selection drops such columns)
    y: np.ndarray  # class index into CLASSES
    groups: np.ndarray  # case_id per row
    feature_names: list[str]
    skipped: list[str]  # case_id/side of rows skipped for an extraction error
    radiomics_params_sha256: str | None


@dataclass(frozen=True)
class TrainedClassifier:
    """Everything ``train_classifier`` writes, in memory."""

    model: Pipeline  # forest on ``features`` only
    features: list[str]  # selected input features, in the model's column order
    applicability: Applicability
    cv: NestedCvResult
    hyperparameters: dict[str, Any]
    training_data: dict[str, Any]
    radiomics_params_sha256: str | None
    selection_pipeline: Pipeline  # the full selection + forest pipeline, refitted on all rows


def _label_map(labels: Mapping[str, str] | pd.Series) -> dict[str, str]:
    items = labels.items()
    mapping = {str(k).strip(): str(v).strip() for k, v in items}
    bad = sorted({v for v in mapping.values() if v not in CLASSES})
    if bad:
        raise InputError(
            f"unknown bone-status label(s): {col.short_list(bad)}",
            f"use one of {', '.join(CLASSES)}",
        )
    return mapping


def training_rows(
    features: pd.DataFrame,
    labels: Mapping[str, str] | pd.Series,
    *,
    feature_names: Sequence[str] | None = None,
) -> TrainingRows:
    """Check a FEATURES table against the labels and turn it into arrays."""
    if col.CASE not in features.columns:
        raise InputError("the features table has no 'case_id' column", "use a FEATURES.csv")
    names = list(feature_names) if feature_names else col.feature_columns(features.columns)
    if not names:
        raise InputError(
            "the features table has no feature columns",
            f"feature columns start with {', '.join(col.FEATURE_PREFIXES)}",
        )
    table = features.copy()
    table[col.CASE] = table[col.CASE].astype(str).str.strip()
    keys = [col.CASE] + ([col.SIDE] if col.SIDE in table.columns else [])
    duplicated = table.duplicated(keys, keep=False)
    if duplicated.any():
        raise InputError(
            f"repeated rows for {col.short_list(sorted(set(col.row_names(table[duplicated]))))}",
            "give each case and side once",
        )
    ok = col.ok_mask(table)
    skipped = col.row_names(table[~ok])
    if skipped:
        log.warning(
            "skipping %d row(s) whose feature extraction failed: %s",
            len(skipped),
            col.short_list(skipped, 20),
        )
    table = table[ok]
    label_of = _label_map(labels)
    unlabelled = sorted(set(table[col.CASE]) - set(label_of))
    if unlabelled:
        raise InputError(
            f"no label for case(s) {col.short_list(unlabelled)}",
            "give every case in the features table a bone_status",
        )
    params = None
    if col.PARAMS_SHA in table.columns:
        values = sorted({str(v) for v in table[col.PARAMS_SHA].dropna() if str(v).strip()})
        if len(values) > 1:
            raise InputError(
                f"the rows were extracted with {len(values)} different radiomics parameter "
                f"files ({', '.join(v[:12] + '…' for v in values)})",
                "re-extract every case with one parameter file",
            )
        params = values[0] if values else None
    X = table[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    y = np.array([CLASSES.index(label_of[c]) for c in table[col.CASE]], dtype=np.int64)
    return TrainingRows(X, y, table[col.CASE].to_numpy(dtype=object), names, skipped, params)


def _check_counts(rows: TrainingRows, outer_folds: int, inner_folds: int) -> dict[str, int]:
    cases = pd.Series(rows.y, index=rows.groups).groupby(level=0).first()
    counts = {name: int((cases == i).sum()) for i, name in enumerate(CLASSES)}
    needed = max(outer_folds, inner_folds) + 1
    small = {k: v for k, v in counts.items() if v < needed}
    if small:
        raise InputError(
            "too few cases per class for grouped cross-validation: "
            + ", ".join(f"{k} {v}" for k, v in small.items())
            + f" (need at least {needed} cases of each class)",
            "add cases of the missing classes or use fewer folds",
        )
    return counts


def check_param_grid(grid: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """A grid over the pipeline's own parameters, each with at least one value."""
    known = set(build_pipeline(0).get_params())
    unknown = sorted(k for k in grid if k not in known)
    if unknown:
        tunable = sorted(k for k in known if k.startswith(("mrmr__", "forest__", "decorrelate__")))
        raise InputError(
            f"unknown hyper-parameter(s) in the grid: {', '.join(unknown)}",
            f"use names such as {', '.join(tunable[:8])}",
        )
    checked = {}
    for key, values in grid.items():
        values = list(values) if isinstance(values, list | tuple) else [values]
        if not values:
            raise InputError(f"no values for {key} in the grid", "give at least one value")
        checked[key] = values
    return checked


def fit_classifier(
    features: pd.DataFrame,
    labels: Mapping[str, str] | pd.Series,
    *,
    seed: int = 0,
    param_grid: Mapping[str, Sequence[Any]] | None = None,
    outer_folds: int = 5,
    inner_folds: int = 3,
    repeats: int = 1,
    workers: int = 1,
    feature_names: Sequence[str] | None = None,
) -> TrainedClassifier:
    """Nested-CV estimate, then the final model from a grouped grid search on all rows."""
    grid = check_param_grid(param_grid or DEFAULT_PARAM_GRID)
    rows = training_rows(features, labels, feature_names=feature_names)
    counts = _check_counts(rows, outer_folds, inner_folds)
    log.info(
        "training on %d rows of %d cases (%s), %d features",
        len(rows.y),
        len(set(rows.groups)),
        ", ".join(f"{k} {v}" for k, v in counts.items()),
        len(rows.feature_names),
    )
    cv = nested_cv(
        rows.X,
        rows.y,
        rows.groups,
        CLASSES,
        feature_names=rows.feature_names,
        param_grid=grid,
        outer_folds=outer_folds,
        inner_folds=inner_folds,
        repeats=repeats,
        seed=seed,
        workers=workers,
    )
    log.info("final grouped grid search on all rows")
    search = grid_search(
        rows.X,
        rows.y,
        rows.groups,
        param_grid=grid,
        n_splits=inner_folds,
        seed=seed,
        workers=workers,
    )
    selection = search.best_estimator_
    selected = selected_feature_names(selection, rows.feature_names)
    index = [rows.feature_names.index(n) for n in selected]
    X_selected = pd.DataFrame(rows.X[:, index], columns=selected)
    forest_params = {
        k.split("__", 1)[1]: v for k, v in search.best_params_.items() if k.startswith("forest__")
    }
    forest = RandomForestClassifier(
        class_weight="balanced", random_state=seed, n_jobs=1, **forest_params
    )
    model = Pipeline([("forest", forest)]).fit(X_selected, rows.y)
    applicability = Applicability.fit(X_selected.to_numpy(), selected, groups=rows.groups)
    hyperparameters = {
        "selected": {k: _plain(v) for k, v in search.best_params_.items()},
        "inner_cv_score": float(search.best_score_),
        "inner_cv_scoring": "roc_auc_ovr (macro)",
        "grid": {k: list(v) for k, v in grid.items()},
        "selection_sequence": SELECTION_SEQUENCE,
        "correlation_threshold": selection.named_steps["decorrelate"].threshold,
        "seed": seed,
    }
    training_data = {
        "n_cases": counts,
        "n_cases_total": int(sum(counts.values())),
        "n_rows": int(len(rows.y)),
        "n_rows_skipped": len(rows.skipped),
        "n_candidate_features": len(rows.feature_names),
        "unit": "one row per case and femur side; label per case",
    }
    return TrainedClassifier(
        model=model,
        features=selected,
        applicability=applicability,
        cv=cv,
        hyperparameters=hyperparameters,
        training_data=training_data,
        radiomics_params_sha256=rows.radiomics_params_sha256,
        selection_pipeline=selection,
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    """Versions that decide whether a stored model loads and behaves the same."""
    versions: dict[str, str | None] = {}
    for name in ("numpy", "scikit-learn", "skops", "scipy", "pandas", "pyradiomics"):
        versions[name] = _version(name)
    if versions["pyradiomics"] is None:  # the maintained fork, same ``radiomics`` import
        versions["pyradiomics"] = _version("pyradiomics-bhklab")
    versions["femurscreen"] = __version__
    versions["python"] = sys.version.split()[0]
    return versions


def build_manifest(
    trained: TrainedClassifier,
    *,
    demo: bool,
    synthetic: bool,
    source: str | None,
    command: str | None,
) -> dict[str, Any]:
    """The manifest entries that describe the model (the writer adds files and hashes)."""
    return {
        "classes": list(CLASSES),
        "features": trained.features,
        "radiomics_params_sha256": trained.radiomics_params_sha256,
        "training_data": {
            **trained.training_data,
            "source": source,
            "synthetic": synthetic,
        },
        "cv_metrics": trained.cv.metrics,
        "hyperparameters": trained.hyperparameters,
        "package_versions": package_versions(),
        "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "command": command,
        "demo": demo,
        "demo_notice": DEMO_NOTICE if demo else None,
        "estimator": "sklearn Pipeline[RandomForestClassifier(class_weight='balanced')] on the "
        "listed features in the listed order; predict_proba columns follow 'classes'",
    }


def save_classifier(
    trained: TrainedClassifier,
    out_dir: str | Path,
    *,
    demo: bool = True,
    synthetic: bool | None = None,
    source: str | None = None,
    command: str | None = None,
) -> Path:
    """Write a fitted classifier's folder atomically; returns the folder."""
    manifest = build_manifest(
        trained,
        demo=demo,
        synthetic=demo if synthetic is None else synthetic,
        source=source,
        command=command,
    )
    return write_model_dir(out_dir, trained.model, manifest, trained.applicability)


def train_classifier(
    features: pd.DataFrame,
    labels: Mapping[str, str] | pd.Series,
    *,
    out_dir: str | Path,
    seed: int = 0,
    demo: bool = True,
    synthetic: bool | None = None,
    source: str | None = None,
    command: str | None = None,
    **fit_options: Any,
) -> Path:
    """Train and write ``out_dir`` (model.skops, applicability.json, manifest.json).

    ``demo`` defaults to True: a model is only called clinical when its trainer says so.
    ``synthetic`` (default: same as ``demo``) and ``source`` (a file name) describe the
    training data in the manifest. ``fit_options`` go to :func:`fit_classifier`.
    """
    trained = fit_classifier(features, labels, seed=seed, **fit_options)
    return save_classifier(
        trained, out_dir, demo=demo, synthetic=synthetic, source=source, command=command
    )
