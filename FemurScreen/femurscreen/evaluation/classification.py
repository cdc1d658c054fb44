"""Evaluate a table of per-class scores the way the reference paper reports its test set.

Input: a CSV with a ``true_class`` column and one score column ``p_<class>`` per class. Scores
need not be probabilities; any score where HIGHER means MORE likely that class works (we never
flip a curve whose AUC is below 0.5, see :mod:`femurscreen.evaluation.stats`).

Per class, one-vs-rest: AUC with a DeLong 95% interval; sensitivity and specificity with
Clopper–Pearson 95% intervals at the class's own Youden-optimal threshold (the paper's counts
imply one operating point per class) and also at the argmax decision; plus the argmax confusion
matrix and the ROC curves. The report is a plain dict that is written as JSON unchanged.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from femurscreen.errors import InputError
from femurscreen.evaluation import stats
from femurscreen.labels import CLASSES
from femurscreen.status import Status

TRUE_COLUMN = "true_class"
SCORE_PREFIX = "p_"
EN_DASH = "\u2013"

METHODS = {
    "auc_ci": "DeLong (1988) variance, AUC +/- 1.959964 * SE, capped to [0, 1] (as pROC)",
    "rate_ci": "Clopper-Pearson exact binomial, 95%",
    "threshold": (
        "per-class Youden-optimal threshold of the one-vs-rest ROC; positive if score >= "
        "threshold; ties go to the highest threshold"
    ),
    "argmax": "predicted class = highest score; ties go to the class listed first",
    "direction": "higher score = more likely the class; curves are never flipped",
}


@dataclass(frozen=True)
class Predictions:
    """True classes and one score column per class, in the evaluation's class order."""

    classes: tuple[str, ...]
    true_class: np.ndarray  # (n_cases,) of str
    scores: np.ndarray  # (n_cases, n_classes) float
    n_excluded: int = 0  # rows whose 'status' column says they were not classified


def order_classes(names: list[str]) -> list[str]:
    """The project's classes first in ``labels.CLASSES`` order, then others in column order."""
    known = [c for c in CLASSES if c in names]
    return known + [c for c in names if c not in CLASSES]


def read_predictions(path: str | Path) -> Predictions:
    """Read and check a predictions CSV; every refusal names the file and what to fix."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            "predictions file not found",
            f"give a CSV with a '{TRUE_COLUMN}' column and one '{SCORE_PREFIX}<class>' "
            "score column per class",
            path,
        )
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the predictions CSV ({exc})", "", path) from exc
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise InputError(
            "the predictions file is empty", "write a header row and one row per case", path
        )
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if TRUE_COLUMN not in header:
        raise InputError(
            f"no '{TRUE_COLUMN}' column (columns: {', '.join(header)})",
            f"add a '{TRUE_COLUMN}' column holding each case's reference class",
            path,
        )
    score_columns = [h for h in header if h.startswith(SCORE_PREFIX)]
    names = [h[len(SCORE_PREFIX) :] for h in score_columns]
    if not score_columns:
        raise InputError(
            f"no score columns (columns named '{SCORE_PREFIX}<class>', e.g. 'p_osteoporosis')",
            "add one score column per class",
            path,
        )
    if "" in names or len(set(names)) != len(names) or header.count(TRUE_COLUMN) > 1:
        raise InputError(
            "empty or repeated column names among the score columns and 'true_class'",
            "give each class exactly one 'p_<class>' column",
            path,
        )
    if not body:
        raise InputError("the predictions file has a header but no cases", "", path)
    classes = order_classes(names)
    if len(classes) < 2:
        raise InputError(
            f"only one score column ({score_columns[0]}): one-vs-rest needs at least two classes",
            "add a score column for every class",
            path,
        )
    i_true = header.index(TRUE_COLUMN)
    i_score = [header.index(SCORE_PREFIX + c) for c in classes]
    # 'femurscreen classify' marks rows it could not classify with status != ok: they carry no
    # scores and are left out (and counted), rather than failing the whole evaluation.
    i_status = header.index("status") if "status" in header else None
    true_class = []
    scores = np.empty((len(body), len(classes)))
    kept = 0
    for k, row in enumerate(body):
        line = k + 2  # 1-based, after the header
        if len(row) != len(header):
            raise InputError(
                f"line {line} has {len(row)} fields but the header has {len(header)}", "", path
            )
        if i_status is not None and row[i_status].strip() not in ("", Status.OK):
            continue
        label = row[i_true].strip()
        if not label:
            raise InputError(
                f"line {line}: empty true_class", "give every case its reference class", path
            )
        if label not in classes:
            raise InputError(
                f"line {line}: true_class '{label}' has no score column "
                f"(classes: {', '.join(classes)})",
                f"add a '{SCORE_PREFIX}{label}' column or correct the label",
                path,
            )
        true_class.append(label)
        for j, i in enumerate(i_score):
            try:
                value = float(row[i])
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise InputError(
                    f"line {line}: score '{row[i].strip()}' in column '{header[i]}' is missing, "
                    "NaN or not a finite number",
                    "give every case a finite score for every class",
                    path,
                )
            scores[kept, j] = value
        kept += 1
    if kept == 0:
        raise InputError(
            "no row has status 'ok': nothing to evaluate", "classify some cases first", path
        )
    return Predictions(
        tuple(classes),
        np.array(true_class, dtype=object),
        scores[:kept],
        n_excluded=len(body) - kept,
    )


def _check_evaluable(pred: Predictions, path: str | Path | None) -> None:
    for name in pred.classes:
        n_pos = int(np.sum(pred.true_class == name))
        n_neg = int(pred.true_class.size - n_pos)
        if n_pos == 0 or n_neg == 0:
            missing = "positive" if n_pos == 0 else "negative"
            raise InputError(
                f"class '{name}' has {n_pos} positive and {n_neg} negative cases, so its "
                f"one-vs-rest AUC is undefined (no {missing} cases)",
                "evaluate on a set that holds cases of every class, or drop the "
                f"'{SCORE_PREFIX}{name}' column",
                path,
            )
    if not np.all(np.isfinite(pred.scores)):
        raise InputError("scores must be finite numbers (NaN or infinity found)", "", path)


def _pair(values: tuple[float, float]) -> list[float]:
    return [float(values[0]), float(values[1])]


def _point_dict(point: stats.OperatingPoint) -> dict[str, Any]:
    return {
        "sensitivity": point.sensitivity,
        "sensitivity_ci": _pair(point.sensitivity_ci),
        "specificity": point.specificity,
        "specificity_ci": _pair(point.specificity_ci),
        "tp": point.tp,
        "fn": point.fn,
        "tn": point.tn,
        "fp": point.fp,
    }


def confusion_matrix(pred: Predictions) -> np.ndarray:
    """Argmax confusion counts: rows = true class, columns = predicted, in ``pred.classes``."""
    predicted = np.argmax(pred.scores, axis=1)  # first maximum: ties go to the earlier class
    index = {c: i for i, c in enumerate(pred.classes)}
    truth = np.array([index[c] for c in pred.true_class], dtype=int)
    k = len(pred.classes)
    return np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k)


def evaluate_predictions(pred: Predictions, path: str | Path | None = None) -> dict[str, Any]:
    """The full report (JSON-ready) for a checked predictions table."""
    _check_evaluable(pred, path)
    predicted = np.argmax(pred.scores, axis=1)
    report_classes: dict[str, Any] = {}
    for j, name in enumerate(pred.classes):
        positive = pred.true_class == name
        score = pred.scores[:, j]
        auc = stats.delong_auc(positive, score)
        curve = stats.roc_curve(positive, score)
        youden = stats.youden_point(positive, score)
        entry: dict[str, Any] = {
            "auc": auc.auc,
            "auc_ci": _pair(auc.ci),
            "auc_variance": auc.variance,
            "threshold": youden.threshold,
            **_point_dict(youden),
            "argmax": _point_dict(stats.operating_point(positive, predicted == j)),
            "n_positive": auc.n_positive,
            "n_negative": auc.n_negative,
            "roc": {
                # thresholds[0] is +inf (the (0, 0) corner), written as null in JSON
                "thresholds": [None if math.isinf(t) else float(t) for t in curve.thresholds],
                "fpr": curve.fpr.tolist(),
                "tpr": curve.tpr.tolist(),
            },
        }
        report_classes[name] = entry
    matrix = confusion_matrix(pred)
    n_cases = int(pred.true_class.size)
    correct = int(np.trace(matrix))
    return {
        "classes": report_classes,
        "confusion_matrix": {"classes": list(pred.classes), "matrix": matrix.tolist()},
        "n_cases": n_cases,
        "n_excluded": pred.n_excluded,
        "accuracy": correct / n_cases,
        "accuracy_ci": _pair(stats.clopper_pearson(correct, n_cases)),
        "macro_auc": float(np.mean([c["auc"] for c in report_classes.values()])),
        "methods": dict(METHODS),
    }


def _json_ready(value: Any) -> Any:
    """Plain Python types with non-finite floats as null (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def _ci_text(value: float, ci: list[float] | tuple[float, float]) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if ci[0] is None or not all(math.isfinite(v) for v in ci):
        return f"{value:.3f} (n/a)"
    return f"{value:.3f} ({ci[0]:.3f}{EN_DASH}{ci[1]:.3f})"


def _grid(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_table(report: dict[str, Any]) -> str:
    """The paper's results table (per class: AUC, sensitivity, specificity with 95% CIs)."""
    head = ["Class", "AUC (95% CI)", "Sensitivity (95% CI)", "Specificity (95% CI)"]
    youden = [head + ["TP/P", "TN/N", "Threshold"]]
    argmax = [head[:1] + head[2:] + ["TP/P", "TN/N"]]
    for name, c in report["classes"].items():
        a = c["argmax"]
        youden.append(
            [
                name,
                _ci_text(c["auc"], c["auc_ci"]),
                _ci_text(c["sensitivity"], c["sensitivity_ci"]),
                _ci_text(c["specificity"], c["specificity_ci"]),
                f"{c['tp']}/{c['n_positive']}",
                f"{c['tn']}/{c['n_negative']}",
                f"{c['threshold']:.4g}",
            ]
        )
        argmax.append(
            [
                name,
                _ci_text(a["sensitivity"], a["sensitivity_ci"]),
                _ci_text(a["specificity"], a["specificity_ci"]),
                f"{a['tp']}/{c['n_positive']}",
                f"{a['tn']}/{c['n_negative']}",
            ]
        )
    cm = report["confusion_matrix"]
    matrix = [["true \\ predicted"] + list(cm["classes"])]
    matrix += [
        [n] + [str(v) for v in row] for n, row in zip(cm["classes"], cm["matrix"], strict=True)
    ]
    return "\n".join(
        [
            f"One-vs-rest results, {report['n_cases']} cases "
            + (
                f"({report['n_excluded']} unclassified rows left out) "
                if report.get("n_excluded")
                else ""
            )
            + "(sensitivity/specificity at each class's Youden-optimal threshold)",
            _grid(youden),
            "",
            "At the argmax decision (predicted class = highest score)",
            _grid(argmax),
            "",
            "Confusion matrix (argmax; rows = true class, columns = predicted)",
            _grid(matrix),
            "",
            f"Accuracy {_ci_text(report['accuracy'], report['accuracy_ci'])}; "
            f"macro AUC {report['macro_auc']:.3f}",
        ]
    )


def plot_roc(report: dict[str, Any], path: str | Path) -> Path:
    """One-vs-rest ROC curves with AUCs in the legend and each Youden point marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(5.5, 5.5))
    FigureCanvasAgg(fig)  # Agg without touching pyplot's global backend
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1)
    for j, (name, c) in enumerate(report["classes"].items()):
        (line,) = ax.plot(
            c["roc"]["fpr"],
            c["roc"]["tpr"],
            color=f"C{j}",
            linewidth=1.8,
            label=f"{name}: AUC {_ci_text(c['auc'], c['auc_ci'])}",
        )
        ax.plot(
            1.0 - c["specificity"],
            c["sensitivity"],
            marker="o",
            markersize=7,
            markerfacecolor="white",
            markeredgecolor=line.get_color(),
            markeredgewidth=2,
            linestyle="none",
        )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("Sensitivity")
    ax.set_title("One-vs-rest ROC (o = Youden-optimal threshold)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    _ensure_parent(path)
    try:
        fig.savefig(path, dpi=150)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot write the ROC plot ({exc})", "choose a writable .png path", path
        ) from exc
    return path


def _ensure_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc})", "", path) from exc


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report as strict JSON (NaN written as null)."""
    path = Path(path)
    _ensure_parent(path)
    try:
        path.write_text(json.dumps(_json_ready(report), indent=2, allow_nan=False) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write the JSON report ({exc})", "", path) from exc
    return path


def evaluate(
    predictions: str | Path,
    json_path: str | Path | None = None,
    plot_path: str | Path | None = None,
) -> dict[str, Any]:
    """Read a predictions CSV, compute the report, and write the JSON and ROC plot if asked."""
    pred = read_predictions(predictions)
    report = evaluate_predictions(pred, predictions)
    if json_path is not None:
        write_json(report, json_path)
    if plot_path is not None:
        plot_roc(report, plot_path)
    return report
