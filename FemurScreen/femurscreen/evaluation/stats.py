"""Statistics of the paper's results table: ROC, DeLong AUC interval, Clopper–Pearson, Youden.

Pure numpy/scipy so that the numbers can be checked line by line against their references:

- AUC and its variance by DeLong, DeLong & Clarke-Pearson (1988, Biometrics 44:837), computed
  with the midrank algorithm of Sun & Xu (2014, IEEE Signal Process. Lett. 21:1389). Ties
  between a positive and a negative count 1/2, as in pROC; the 95% interval is
  AUC ± z * sqrt(var), capped to [0, 1] as pROC does.
- Direction: a HIGHER score means MORE likely positive, always. Unlike pROC's
  ``direction = "auto"`` we never flip a curve to make AUC >= 0.5, because a classifier whose
  scores point the wrong way must show an AUC below 0.5, not hide it.
- Sensitivity/specificity intervals: Clopper–Pearson exact binomial (the paper's intervals).
- Operating point: the Youden-optimal threshold of the ROC; a case is called positive when
  ``score >= threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri
from scipy.stats import beta, rankdata

Z_95 = 1.959963984540054  # qnorm(0.975): the z of a two-sided 95% interval


@dataclass(frozen=True)
class RocCurve:
    """Empirical ROC: one point per distinct score, from the strictest threshold down.

    ``thresholds[0]`` is +inf (nobody called positive, the (0, 0) corner); point k calls
    positive every case with ``score >= thresholds[k]``, so the last point is (1, 1).
    """

    thresholds: np.ndarray
    tpr: np.ndarray  # sensitivity
    fpr: np.ndarray  # 1 - specificity
    tp: np.ndarray
    fp: np.ndarray
    n_positive: int
    n_negative: int

    @property
    def specificity(self) -> np.ndarray:
        return 1.0 - self.fpr


@dataclass(frozen=True)
class DelongAuc:
    """AUC with its DeLong variance and the capped normal interval."""

    auc: float
    variance: float  # NaN when fewer than 2 positives or 2 negatives (no sample variance)
    ci: tuple[float, float]
    n_positive: int
    n_negative: int


@dataclass(frozen=True)
class OperatingPoint:
    """Counts and rates of one binary decision, with Clopper–Pearson intervals."""

    threshold: float
    tp: int
    fn: int
    tn: int
    fp: int
    sensitivity: float
    sensitivity_ci: tuple[float, float]
    specificity: float
    specificity_ci: tuple[float, float]


def _as_binary_problem(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (positive mask, float scores); errors here are programming errors."""
    y = np.asarray(y_true)
    s = np.asarray(score, dtype=float)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"y_true and score must be 1-D of equal length, got {y.shape}, {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite (no NaN or infinity)")
    if y.dtype != bool:
        values = set(np.unique(y).tolist())
        if not values <= {0, 1}:
            raise ValueError(f"y_true must be boolean or 0/1, got values {sorted(values)}")
        y = y.astype(bool)
    return y, s


def _require_both_classes(positive: np.ndarray) -> tuple[int, int]:
    m = int(positive.sum())
    n = int(positive.size - m)
    if m == 0 or n == 0:
        raise ValueError(
            f"AUC is undefined with {m} positive and {n} negative cases: both must be present"
        )
    return m, n


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> RocCurve:
    """Empirical ROC curve with every distinct score as a threshold (rule: ``score >= t``)."""
    positive, s = _as_binary_problem(y_true, score)
    m, n = _require_both_classes(positive)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    pos_sorted = positive[order]
    # The last index of each run of equal scores: cumulative counts there include the whole tie.
    last_of_run = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.cumsum(pos_sorted)[last_of_run]
    fp = np.cumsum(~pos_sorted)[last_of_run]
    tp = np.r_[0, tp].astype(int)
    fp = np.r_[0, fp].astype(int)
    thresholds = np.r_[np.inf, s_sorted[last_of_run]]
    return RocCurve(
        thresholds=thresholds,
        tpr=tp / m,
        fpr=fp / n,
        tp=tp,
        fp=fp,
        n_positive=m,
        n_negative=n,
    )


def delong_placements(
    y_true: np.ndarray, score: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components V10 (per positive) and V01 (per negative).

    V10[i] is the fraction of negatives that positive i out-scores (ties 1/2); V01[j] the
    fraction of positives that out-score negative j. Both come from midranks (Sun & Xu 2014)
    in O(N log N) instead of the O(m n) comparison matrix.
    """
    positive, s = _as_binary_problem(y_true, score)
    m, n = _require_both_classes(positive)
    x = s[positive]
    y = s[~positive]
    rank_all = rankdata(np.r_[x, y])  # midranks: ties share the mean rank
    rank_x = rankdata(x)
    rank_y = rankdata(y)
    # Rank of x_i among all minus its rank among positives = negatives below it (+1/2 per tie).
    v10 = (rank_all[:m] - rank_x) / n
    v01 = 1.0 - (rank_all[m:] - rank_y) / m
    auc = float(v10.mean())
    return auc, v10, v01


def delong_auc(y_true: np.ndarray, score: np.ndarray, level: float = 0.95) -> DelongAuc:
    """AUC with DeLong variance and confidence interval (pROC's ``ci.auc(method="delong")``)."""
    auc, v10, v01 = delong_placements(y_true, score)
    m, n = v10.size, v01.size
    if m < 2 or n < 2:
        variance = float("nan")
    else:
        variance = float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    return DelongAuc(
        auc=auc,
        variance=variance,
        ci=normal_ci(auc, variance, level),
        n_positive=m,
        n_negative=n,
    )


def normal_ci(estimate: float, variance: float, level: float = 0.95) -> tuple[float, float]:
    """estimate ± z * sqrt(variance), capped to [0, 1]; NaNs when the variance is unknown."""
    if not np.isfinite(variance):
        return (float("nan"), float("nan"))
    z = Z_95 if level == 0.95 else float(ndtri(0.5 + level / 2.0))
    half = z * float(np.sqrt(max(variance, 0.0)))
    return (max(0.0, estimate - half), min(1.0, estimate + half))


def clopper_pearson(x: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for x successes in n trials; (0, hi) at x=0 and (lo, 1) at x=n."""
    if n < 0 or x < 0 or x > n:
        raise ValueError(f"need 0 <= x <= n, got x={x}, n={n}")
    if n == 0:
        return (float("nan"), float("nan"))
    alpha = 1.0 - level
    lo = 0.0 if x == 0 else float(beta.ppf(alpha / 2.0, x, n - x + 1))
    hi = 1.0 if x == n else float(beta.ppf(1.0 - alpha / 2.0, x + 1, n - x))
    return (lo, hi)


def operating_point(
    y_true: np.ndarray, called_positive: np.ndarray, threshold: float = float("nan")
) -> OperatingPoint:
    """Sensitivity and specificity of a binary decision, with Clopper–Pearson intervals."""
    positive = np.asarray(y_true, dtype=bool)
    called = np.asarray(called_positive, dtype=bool)
    if positive.shape != called.shape:
        raise ValueError("y_true and called_positive must have the same shape")
    tp = int(np.sum(positive & called))
    fn = int(np.sum(positive & ~called))
    tn = int(np.sum(~positive & ~called))
    fp = int(np.sum(~positive & called))
    return OperatingPoint(
        threshold=float(threshold),
        tp=tp,
        fn=fn,
        tn=tn,
        fp=fp,
        sensitivity=tp / (tp + fn) if tp + fn else float("nan"),
        sensitivity_ci=clopper_pearson(tp, tp + fn),
        specificity=tn / (tn + fp) if tn + fp else float("nan"),
        specificity_ci=clopper_pearson(tn, tn + fp),
    )


def youden_threshold(curve: RocCurve) -> float:
    """The ROC threshold that maximises sensitivity + specificity - 1 (Youden's J).

    Ties go to the HIGHEST such threshold (the strictest call, fewest false positives), the
    first maximum met when walking the curve from (0, 0). The +inf corner is never chosen
    unless it is the only point, so the result is always an observed score.
    """
    j = curve.tpr - curve.fpr
    j[0] = -np.inf  # +inf threshold: nobody positive, J = 0, never a useful operating point
    return float(curve.thresholds[int(np.argmax(j))])


def youden_point(y_true: np.ndarray, score: np.ndarray) -> OperatingPoint:
    """Operating point at the Youden-optimal threshold (positive when ``score >= threshold``)."""
    positive, s = _as_binary_problem(y_true, score)
    threshold = youden_threshold(roc_curve(positive, s))
    return operating_point(positive, s >= threshold, threshold)
