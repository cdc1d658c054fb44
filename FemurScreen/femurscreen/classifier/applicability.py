"""Applicability domain: does a case look like the cases the model was trained on?

A random forest answers confidently even for a case unlike anything it has seen (another
scanner, a reconstruction kernel, a mask gone wrong), so every prediction carries a flag.
Fitted on the training rows in the space of the model's input features:

- range check: each feature must lie within the training range widened by
  ``range_margin`` times that range on both sides;
- joint check: the Mahalanobis distance of the robustly standardised features (median / MAD)
  under a Ledoit–Wolf shrunk covariance must not exceed the 99.5th percentile of the training
  rows' distances times ``distance_margin``. Those distances are computed out of fold (each
  row measured against statistics fitted without its case), because in-sample distances are
  optimistic: with 20 features and ~300 rows, an in-sample threshold flagged 3.6 % of new
  in-distribution rows instead of the intended 0.5 %.

The statistics are stored as plain JSON (never a pickle) next to the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.model_selection import GroupKFold, KFold

FORMAT_VERSION = 1
MAD_TO_SD = 1.4826  # MAD of a normal distribution times this is its standard deviation


@dataclass(frozen=True)
class Applicability:
    """Training-distribution statistics of the model's input features."""

    features: list[str]
    center: list[float]  # median per feature
    scale: list[float]  # MAD * 1.4826 (std where the MAD is 0), per feature
    lower: list[float]  # allowed range per feature
    upper: list[float]
    mean: list[float]  # of the robust z-scores (Ledoit-Wolf location)
    precision: list[list[float]]  # inverse shrunk covariance of the robust z-scores
    threshold: float  # largest allowed Mahalanobis distance
    percentile: float
    n_training_rows: int
    format_version: int = FORMAT_VERSION

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        features: list[str],
        *,
        groups: np.ndarray | None = None,
        percentile: float = 99.5,
        range_margin: float = 0.25,
        distance_margin: float = 1.0,
        n_splits: int = 5,
    ) -> Applicability:
        """Statistics of ``X``; ``groups`` (case ids) keep both sides of a case in one fold."""
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(features) or X.shape[0] < 2 * n_splits:
            raise ValueError(f"need >= {2 * n_splits} rows and {len(features)} columns")
        if not np.isfinite(X).all():
            raise ValueError("training features must be finite")
        center, scale, location, precision = _robust_gaussian(X)
        low, high = X.min(axis=0), X.max(axis=0)
        span = high - low
        distances = np.empty(X.shape[0])
        for train, test in _folds(X.shape[0], groups, n_splits):
            fold = _robust_gaussian(X[train])
            distances[test] = _distance(X[test], *fold)
        threshold = float(np.percentile(distances, percentile) * distance_margin)
        return cls(
            features=list(features),
            center=center.tolist(),
            scale=scale.tolist(),
            lower=(low - range_margin * span).tolist(),
            upper=(high + range_margin * span).tolist(),
            mean=location.tolist(),
            precision=precision.tolist(),
            threshold=threshold,
            percentile=percentile,
            n_training_rows=int(X.shape[0]),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Applicability:
        version = int(data.get("format_version", 0))
        if version != FORMAT_VERSION:
            raise ValueError(f"applicability format {version}, this version reads {FORMAT_VERSION}")
        fields = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def distance(self, X: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row (finite rows expected)."""
        return _distance(
            np.asarray(X, dtype=float),
            np.asarray(self.center),
            np.asarray(self.scale),
            np.asarray(self.mean),
            np.asarray(self.precision),
        )

    def assess(self, X: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Per row: applicable (bool) and a short reason when it is not."""
        values = np.asarray(X, dtype=float)
        below = values < np.asarray(self.lower)
        above = values > np.asarray(self.upper)
        distance = self.distance(values)
        applicable = ~(below | above).any(axis=1) & (distance <= self.threshold)
        reasons = []
        for i in range(values.shape[0]):
            parts = []
            outside = np.flatnonzero(below[i] | above[i])
            if outside.size:
                names = [self.features[j] for j in outside[:3]]
                more = f" and {outside.size - 3} more" if outside.size > 3 else ""
                parts.append(f"outside the training range: {', '.join(names)}{more}")
            if distance[i] > self.threshold:
                parts.append(
                    f"Mahalanobis distance {distance[i]:.1f} > {self.threshold:.1f} "
                    f"(training {self.percentile:g}th percentile)"
                )
            reasons.append("; ".join(parts))
        return applicable, reasons


def _robust_gaussian(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median, robust scale, and Ledoit-Wolf location/precision of the robust z-scores."""
    center = np.median(X, axis=0)
    scale = MAD_TO_SD * np.median(np.abs(X - center), axis=0)
    fallback = X.std(axis=0)
    scale = np.where(scale > 0, scale, np.where(fallback > 0, fallback, 1.0))
    lw = LedoitWolf().fit((X - center) / scale)
    return center, scale, lw.location_, lw.precision_


def _distance(
    X: np.ndarray, center: np.ndarray, scale: np.ndarray, mean: np.ndarray, precision: np.ndarray
) -> np.ndarray:
    d = (X - center) / scale - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision, d), 0.0))


def _folds(n_rows: int, groups: np.ndarray | None, n_splits: int):
    if groups is not None and len(set(np.asarray(groups).tolist())) >= n_splits:
        return GroupKFold(n_splits=n_splits).split(np.zeros(n_rows), groups=groups)
    return KFold(n_splits=n_splits, shuffle=True, random_state=0).split(np.zeros(n_rows))
