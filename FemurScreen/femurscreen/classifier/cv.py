"""Grouped, nested cross-validation: hyper-parameters and an honest estimate of performance.

Every row is one femur side; both sides of a patient share the label and most of the anatomy,
so every split is made on patients (``case_id``) with ``StratifiedGroupKFold`` and checked:
no case ever has rows on both sides of a split. The inner loop (a grid search on the outer
training rows only) chooses the hyper-parameters; the outer loop measures the whole procedure,
selection included, on patients it never saw.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Memory
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

from femurscreen.classifier.applicability import Applicability
from femurscreen.classifier.selection import build_pipeline, selected_feature_names
from femurscreen.evaluation import stats

log = logging.getLogger(__name__)

# k: features kept by mRMR; the forest settings trade variance against bias on small cohorts.
DEFAULT_PARAM_GRID: dict[str, list[Any]] = {
    "mrmr__k": [5, 10, 20],
    "forest__n_estimators": [200, 500],
    "forest__min_samples_leaf": [1, 3],
    "forest__max_features": ["sqrt", 0.33],
}
SCORING = "roc_auc_ovr"  # macro one-vs-rest AUC, the paper's per-class metric averaged

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class NestedCvResult:
    """Metrics for the manifest, plus what stays out of it (case ids, per-row scores)."""

    metrics: dict[str, Any]
    outer_test_cases: list[list[str]]  # first repeat; case ids never go into a manifest
    out_of_fold_proba: np.ndarray  # first repeat, one row per input row


def case_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[Split]:
    """Stratified folds of whole cases; raises if a case would straddle a split."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = list(splitter.split(np.zeros((len(y), 1)), y, groups))
    for train, test in folds:
        shared = set(groups[train]) & set(groups[test])
        if shared:  # a guard against a future splitter change, never expected to fire
            raise RuntimeError(f"cases on both sides of a split: {sorted(shared)[:5]}")
    return folds


def grid_search(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    param_grid: Mapping[str, Sequence[Any]],
    n_splits: int,
    seed: int,
    workers: int = 1,
    memory: Memory | None = None,
) -> GridSearchCV:
    """Grouped grid search refitted on all of ``X`` with the best setting."""
    search = GridSearchCV(
        build_pipeline(seed, memory=memory),
        param_grid=dict(param_grid),
        scoring=SCORING,
        cv=case_folds(y, groups, n_splits, seed),
        n_jobs=workers,
        refit=True,
        error_score="raise",
    )
    return search.fit(X, y)


def _summary(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    return {
        "mean": float(finite.mean()) if finite.size else None,
        "sd": float(finite.std(ddof=1)) if finite.size > 1 else None,
        "folds": [None if not np.isfinite(v) else float(v) for v in array],
    }


def _fold_auc(y: np.ndarray, proba: np.ndarray, c: int) -> float:
    positive = y == c
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, proba[:, c]))


def nested_cv(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    classes: Sequence[str],
    *,
    feature_names: list[str],
    param_grid: Mapping[str, Sequence[Any]],
    outer_folds: int = 5,
    inner_folds: int = 3,
    repeats: int = 1,
    seed: int = 0,
    workers: int = 1,
) -> NestedCvResult:
    """Per-class one-vs-rest AUC, accuracy and balanced accuracy, mean ± SD over outer folds.

    ``y`` holds class indices into ``classes``. Also reports the pooled out-of-fold AUC of the
    first repeat (with a DeLong interval that treats the rows as independent, which the two
    sides of a patient are not: read it as optimistic), the hyper-parameters each outer fold
    chose, and the share of outer-test rows the applicability check flags.
    """
    auc: dict[str, list[float]] = {c: [] for c in classes}
    accuracy, balanced, outside, chosen, fold_cases = [], [], [], [], []
    oof = np.full((len(y), len(classes)), np.nan)
    with tempfile.TemporaryDirectory(prefix="femurscreen-cv-") as cache:
        memory = Memory(cache, verbose=0)
        for repeat in range(repeats):
            folds = case_folds(y, groups, outer_folds, seed + 1000 * repeat)
            for i, (train, test) in enumerate(folds):
                log.info(
                    "nested CV: repeat %d/%d, outer fold %d/%d",
                    repeat + 1,
                    repeats,
                    i + 1,
                    outer_folds,
                )
                search = grid_search(
                    X[train],
                    y[train],
                    groups[train],
                    param_grid=param_grid,
                    n_splits=inner_folds,
                    seed=seed + 1000 * repeat + i + 1,
                    workers=workers,
                    memory=memory,
                )
                proba = search.predict_proba(X[test])
                predicted = search.classes_[np.argmax(proba, axis=1)]
                for c, name in enumerate(classes):
                    auc[name].append(_fold_auc(y[test], proba, c))
                accuracy.append(accuracy_score(y[test], predicted))
                balanced.append(balanced_accuracy_score(y[test], predicted))
                if repeat == 0:
                    oof[test] = proba
                best = search.best_estimator_
                selected = selected_feature_names(best, feature_names)
                index = [feature_names.index(n) for n in selected]
                domain = Applicability.fit(X[train][:, index], selected, groups=groups[train])
                ok, _ = domain.assess(X[test][:, index])
                outside.append(1.0 - ok.mean())
                chosen.append({**_plain(search.best_params_), "n_selected": len(selected)})
                fold_cases.append(sorted(set(groups[test].tolist())))
    pooled = {}
    for c, name in enumerate(classes):
        result = stats.delong_auc(y == c, oof[:, c])
        pooled[name] = {"auc": result.auc, "ci95": list(result.ci)}
    metrics = {
        "scheme": (
            f"nested cross-validation: outer StratifiedGroupKFold({outer_folds}) x {repeats} "
            f"repeat(s), inner grouped grid search StratifiedGroupKFold({inner_folds}) scored by "
            f"{SCORING}; all splits by case_id (both sides of a patient in the same fold)"
        ),
        "unit": "femur side (one row per case and side)",
        "outer_folds": outer_folds,
        "inner_folds": inner_folds,
        "repeats": repeats,
        "auc_ovr": {name: _summary(values) for name, values in auc.items()},
        "accuracy": _summary(accuracy),
        "balanced_accuracy": _summary(balanced),
        "pooled_out_of_fold_auc": pooled,
        "pooled_note": "rows of both sides pooled; DeLong interval treats them as independent",
        "outside_applicability_rate": _summary(outside),
        "chosen_hyperparameters": chosen,
    }
    return NestedCvResult(metrics, fold_cases[:outer_folds], oof)


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    """numpy scalars -> Python scalars, for JSON."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
