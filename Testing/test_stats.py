"""Statistics of the results table against published numbers and independent references."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from femurscreen.evaluation import stats
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

ASAH = Path(__file__).parent / "data" / "aSAH.csv"


def load_asah() -> dict[str, np.ndarray]:
    with ASAH.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        "poor": np.array([r["outcome"] == "Poor" for r in rows]),
        **{k: np.array([float(r[k]) for r in rows]) for k in ("s100b", "ndka", "wfns")},
    }


def delong_slow(positive: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) directly: psi matrix, structural components, sample variances."""
    x = score[positive]
    y = score[~positive]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    v10 = psi.mean(axis=1)
    v01 = psi.mean(axis=0)
    m, n = x.size, y.size
    s10 = np.sum((v10 - v10.mean()) ** 2) / (m - 1)
    s01 = np.sum((v01 - v01.mean()) ** 2) / (n - 1)
    return float(psi.mean()), float(s10 / m + s01 / n)


# --- DeLong on pROC's aSAH example -------------------------------------------------------------


def test_s100b_matches_procs_published_example() -> None:
    """pROC: roc(aSAH$outcome, aSAH$s100b) -> AUC 0.7314, 95% CI 0.6301-0.8326 (DeLong)."""
    d = load_asah()
    result = stats.delong_auc(d["poor"], d["s100b"])
    assert round(result.auc, 4) == 0.7314
    assert round(result.ci[0], 4) == 0.6301
    assert round(result.ci[1], 4) == 0.8326
    assert (result.n_positive, result.n_negative) == (41, 72)


# Full-precision values from pROC's own test suite (xrobin/pROC tests/testthat/test-auc.R and
# test-var.R): auc(r.ndka), auc(r.wfns), var(r.*) with r.* <- roc(aSAH$outcome, aSAH$*).
PROC_SUITE = {
    "wfns": (0.823678861788618, 0.00146991470882363),
    "ndka": (0.611957994579946, 0.0031908105493913),
    "s100b": (None, 0.00266868245717244),
}


@pytest.mark.parametrize("marker", sorted(PROC_SUITE))
def test_auc_and_variance_match_procs_test_suite(marker: str) -> None:
    d = load_asah()
    result = stats.delong_auc(d["poor"], d[marker])
    auc, var = PROC_SUITE[marker]
    if auc is not None:
        assert result.auc == pytest.approx(auc, rel=1e-12)
    assert result.variance == pytest.approx(var, rel=1e-10)


def test_ndka_and_wfns_intervals() -> None:
    """wfns 0.8237 (0.7485-0.8988); ndka 0.6120 (0.5012-0.7227) as in pROC's test-ci.auc.R."""
    d = load_asah()
    wfns = stats.delong_auc(d["poor"], d["wfns"])
    ndka = stats.delong_auc(d["poor"], d["ndka"])
    assert [round(v, 4) for v in (wfns.auc, *wfns.ci)] == [0.8237, 0.7485, 0.8988]
    # pROC test suite: expected.ci.auc <- c(0.501244999271703, 0.611957994579946, 0.722670989888189)
    assert ndka.ci[0] == pytest.approx(0.501244999271703, rel=1e-9)
    assert ndka.ci[1] == pytest.approx(0.722670989888189, rel=1e-9)


@pytest.mark.parametrize("marker", ["s100b", "ndka", "wfns"])
def test_fast_delong_equals_the_1988_definition(marker: str) -> None:
    d = load_asah()
    auc_ref, var_ref = delong_slow(d["poor"], d[marker])
    result = stats.delong_auc(d["poor"], d[marker])
    assert result.auc == pytest.approx(auc_ref, abs=1e-14)
    assert result.variance == pytest.approx(var_ref, rel=1e-12)


def test_direction_is_never_flipped() -> None:
    d = load_asah()
    reversed_ = stats.delong_auc(d["poor"], -d["s100b"])
    assert reversed_.auc == pytest.approx(1 - 0.731368563685637, rel=1e-12)
    assert reversed_.variance == pytest.approx(PROC_SUITE["s100b"][1], rel=1e-10)


@pytest.mark.parametrize("seed", range(12))
def test_auc_equals_sklearn_on_random_data_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 120))
    y = rng.random(n) < rng.uniform(0.2, 0.8)
    y[:2] = [True, False]  # both classes present, at least one of each
    levels = int(rng.integers(2, 8))  # few distinct values -> many ties within and across
    score = (rng.integers(0, levels, n) + y * rng.integers(0, 2, n)) * 0.5
    result = stats.delong_auc(y, score)
    assert result.auc == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    if y.sum() >= 2 and (~y).sum() >= 2:
        assert result.variance == pytest.approx(delong_slow(y, score)[1], rel=1e-9, abs=1e-15)


def test_ci_is_capped_to_unit_interval() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    perfect = stats.delong_auc(y, np.array([9, 8, 7, 6, 5, 4, 3, 2, 1.0]))
    assert perfect.auc == 1.0 and perfect.variance == 0.0 and perfect.ci == (1.0, 1.0)
    near = stats.delong_auc(y, np.array([9, 8, 7, 3.5, 5, 4, 3, 2, 1.0]))
    assert near.ci[1] == 1.0 and 0 < near.ci[0] < near.auc < 1
    worst = stats.delong_auc(y, -np.array([9, 8, 7, 3.5, 5, 4, 3, 2, 1.0]))
    assert worst.ci[0] == 0.0 and worst.auc < 0.5


def test_variance_undefined_with_a_single_positive() -> None:
    result = stats.delong_auc(np.array([1, 0, 0], dtype=bool), np.array([3.0, 1.0, 2.0]))
    assert result.auc == 1.0
    assert np.isnan(result.variance) and all(np.isnan(result.ci))


def test_refuses_single_class_and_nan() -> None:
    with pytest.raises(ValueError, match="undefined"):
        stats.delong_auc(np.array([1, 1, 1], dtype=bool), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="finite"):
        stats.delong_auc(np.array([1, 0, 1], dtype=bool), np.array([0.1, np.nan, 0.3]))


# --- Clopper–Pearson ---------------------------------------------------------------------------

# The paper's test-set counts -> its printed sensitivity/specificity (95% CI).
PAPER = [
    (44, 52, 0.846, 0.719, 0.931),
    (41, 49, 0.837, 0.703, 0.927),
    (23, 30, 0.767, 0.577, 0.901),
    (53, 71, 0.746, 0.629, 0.842),
    (18, 19, 0.947, 0.740, 0.999),
    (79, 82, 0.963, 0.897, 0.992),
]


@pytest.mark.parametrize(("x", "n", "rate", "lo", "hi"), PAPER)
def test_clopper_pearson_reproduces_the_paper(
    x: int, n: int, rate: float, lo: float, hi: float
) -> None:
    ci = stats.clopper_pearson(x, n)
    assert round(x / n, 3) == rate
    assert (round(ci[0], 3), round(ci[1], 3)) == (lo, hi)


@pytest.mark.parametrize(("x", "n"), [(0, 10), (10, 10), (1, 1), (3, 7), (44, 52), (0, 1)])
def test_clopper_pearson_equals_scipy_exact_binomial(x: int, n: int) -> None:
    ours = stats.clopper_pearson(x, n)
    ref = binomtest(x, n).proportion_ci(confidence_level=0.95, method="exact")
    assert ours == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_clopper_pearson_edges() -> None:
    assert stats.clopper_pearson(0, 10)[0] == 0.0
    assert stats.clopper_pearson(10, 10)[1] == 1.0
    # x = 0: the upper bound solves (1 - p)^n = alpha/2
    assert stats.clopper_pearson(0, 10)[1] == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-12)
    lo, hi = stats.clopper_pearson(3, 7)
    lo2, hi2 = stats.clopper_pearson(4, 7)
    assert (lo, hi) == pytest.approx((1 - hi2, 1 - lo2), abs=1e-12)  # symmetric in x <-> n - x
    assert all(np.isnan(stats.clopper_pearson(0, 0)))
    with pytest.raises(ValueError):
        stats.clopper_pearson(5, 4)


# --- ROC and Youden ----------------------------------------------------------------------------


def test_roc_curve_points_with_ties() -> None:
    y = np.array([1, 0, 1, 0, 1], dtype=bool)
    s = np.array([0.9, 0.9, 0.5, 0.2, 0.1])
    curve = stats.roc_curve(y, s)
    assert curve.thresholds.tolist() == [np.inf, 0.9, 0.5, 0.2, 0.1]
    assert curve.tp.tolist() == [0, 1, 2, 2, 3]
    assert curve.fp.tolist() == [0, 1, 1, 2, 2]
    # trapezoidal area under the empirical curve = the Mann-Whitney AUC (ties 1/2)
    assert np.trapezoid(curve.tpr, curve.fpr) == pytest.approx(stats.delong_auc(y, s).auc)


def test_youden_on_a_hand_checked_example() -> None:
    # positives 0.9 0.8 0.4; negatives 0.7 0.3 0.2 0.1
    # J: t=0.9 1/3, t=0.8 2/3, t=0.7 2/3-1/4, t=0.4 1-1/4 = 3/4 (max), t=0.3 1/2, ...
    y = np.array([1, 1, 0, 1, 0, 0, 0], dtype=bool)
    s = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.1])
    point = stats.youden_point(y, s)
    assert point.threshold == 0.4
    assert (point.tp, point.fn, point.tn, point.fp) == (3, 0, 3, 1)
    assert point.sensitivity == 1.0 and point.specificity == 0.75
    assert point.sensitivity_ci == pytest.approx(stats.clopper_pearson(3, 3))


def test_youden_ties_go_to_the_highest_threshold() -> None:
    # positives 0.9 0.6; negatives 0.8 0.1: J = 1/2 at t=0.9 and at t=0.6
    y = np.array([1, 0, 1, 0], dtype=bool)
    s = np.array([0.9, 0.8, 0.6, 0.1])
    assert stats.youden_threshold(stats.roc_curve(y, s)) == 0.9


@pytest.mark.parametrize("seed", range(5))
def test_youden_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    y = rng.random(60) < 0.4
    y[:2] = [True, False]
    s = np.round(rng.normal(size=60) + y, 1)
    best, best_t = -np.inf, None
    for t in sorted(set(s.tolist()), reverse=True):  # highest first: keeps the first maximum
        j = np.mean(s[y] >= t) + np.mean(s[~y] < t) - 1
        if j > best + 1e-12:
            best, best_t = j, t
    point = stats.youden_point(y, s)
    assert point.threshold == best_t
    assert point.sensitivity + point.specificity - 1 == pytest.approx(best)
