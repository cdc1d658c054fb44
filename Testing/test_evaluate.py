"""``femurscreen evaluate`` end to end: JSON contract, paper-style table, plot, refusals."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from femurscreen.cli import main
from femurscreen.errors import InputError
from femurscreen.evaluation import classification as evaluation

ASAH = Path(__file__).parent / "data" / "aSAH.csv"

CONTRACT_CLASS_KEYS = {
    "auc",
    "auc_ci",
    "threshold",
    "sensitivity",
    "sensitivity_ci",
    "specificity",
    "specificity_ci",
    "argmax",
    "n_positive",
    "n_negative",
}
CONTRACT_ARGMAX_KEYS = {"sensitivity", "sensitivity_ci", "specificity", "specificity_ci"}
# Everything we write today; a change here is a deliberate change of the JSON layout.
ALL_TOP_KEYS = {
    "classes",
    "confusion_matrix",
    "n_cases",
    "n_excluded",
    "accuracy",
    "accuracy_ci",
    "macro_auc",
    "methods",
}
ALL_CLASS_KEYS = CONTRACT_CLASS_KEYS | {"auc_variance", "tp", "fn", "tn", "fp", "roc"}
ALL_ARGMAX_KEYS = CONTRACT_ARGMAX_KEYS | {"tp", "fn", "tn", "fp"}


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def asah_predictions(path: Path) -> Path:
    with ASAH.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    body = [[r["outcome"], -float(r["s100b"]), float(r["s100b"])] for r in rows]
    return write_csv(path, ["true_class", "p_Good", "p_Poor"], body)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["evaluate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_asah_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preds = asah_predictions(tmp_path / "preds.csv")
    out_json = tmp_path / "out" / "metrics.json"
    out_png = tmp_path / "out" / "roc.png"
    code, out, err = run_cli(
        capsys, "--predictions", str(preds), "--json", str(out_json), "--plot", str(out_png)
    )
    assert code == 0, err
    report = json.loads(out_json.read_text(encoding="utf-8"))

    assert list(report["classes"]) == ["Good", "Poor"]  # not project classes: column order
    poor = report["classes"]["Poor"]
    good = report["classes"]["Good"]
    # pROC: roc(aSAH$outcome, aSAH$s100b): AUC 0.7314, 95% CI 0.6301-0.8326 (DeLong)
    for c in (poor, good):
        assert round(c["auc"], 4) == 0.7314
        assert [round(v, 4) for v in c["auc_ci"]] == [0.6301, 0.8326]
    assert (poor["n_positive"], poor["n_negative"]) == (41, 72)
    assert (good["n_positive"], good["n_negative"]) == (72, 41)
    # Youden point for Poor: s100b >= 0.22 -> 26/41 Poor, 58/72 Good correctly called
    assert poor["threshold"] == 0.22
    assert (poor["tp"], poor["tn"]) == (26, 58)
    assert poor["sensitivity"] == pytest.approx(26 / 41)
    assert poor["specificity"] == pytest.approx(58 / 72)
    # argmax of (-s100b, s100b) calls Poor whenever s100b > 0: every case here
    assert report["confusion_matrix"] == {
        "classes": ["Good", "Poor"],
        "matrix": [[0, 72], [0, 41]],
    }
    assert poor["argmax"]["sensitivity"] == 1.0 and poor["argmax"]["specificity"] == 0.0
    assert report["n_cases"] == 113
    assert report["accuracy"] == pytest.approx(41 / 113)

    assert "0.731 (0.630\u20130.833)" in out
    assert "0.634 (0.469\u20130.779)" in out  # Poor sensitivity 26/41 at Youden
    assert "Confusion matrix" in out

    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out_png.stat().st_size > 10_000


def test_json_has_the_contract_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preds = asah_predictions(tmp_path / "preds.csv")
    out_json = tmp_path / "m.json"
    assert run_cli(capsys, "--predictions", str(preds), "--json", str(out_json))[0] == 0
    report = json.loads(out_json.read_text(encoding="utf-8"))  # strict JSON: no NaN tokens either
    assert set(report) == ALL_TOP_KEYS
    for c in report["classes"].values():
        assert set(c) >= CONTRACT_CLASS_KEYS
        assert set(c) == ALL_CLASS_KEYS
        assert set(c["argmax"]) >= CONTRACT_ARGMAX_KEYS
        assert set(c["argmax"]) == ALL_ARGMAX_KEYS
        for key in ("auc_ci", "sensitivity_ci", "specificity_ci"):
            lo, hi = c[key]
            assert 0.0 <= lo <= hi <= 1.0
        assert len(c["roc"]["fpr"]) == len(c["roc"]["tpr"]) == len(c["roc"]["thresholds"])
        assert c["roc"]["thresholds"][0] is None  # the +inf corner
    assert set(report["confusion_matrix"]) == {"classes", "matrix"}


def per_class_counts_table(path: Path) -> Path:
    """52 normal, 30 osteopenia, 19 osteoporosis; each class's score column is built so its
    Youden point calls exactly the paper's counts (tp of P, tn of N) positive/negative."""
    n = {"normal": 52, "osteopenia": 30, "osteoporosis": 19}
    paper = {"normal": (44, 41), "osteopenia": (23, 53), "osteoporosis": (18, 79)}
    truth = [c for c, k in n.items() for _ in range(k)]
    rng = np.random.default_rng(7)
    columns = {}
    for name, (tp, tn) in paper.items():
        pos = [i for i, t in enumerate(truth) if t == name]
        neg = [i for i, t in enumerate(truth) if t != name]
        score = np.zeros(len(truth))
        score[rng.permutation(pos)[:tp]] = 1.0  # detected positives
        score[rng.permutation(neg)[: len(neg) - tn]] = 1.0  # false positives
        columns[name] = score
    # columns deliberately out of the project's order
    header = ["case", "p_osteoporosis", "true_class", "p_normal", "p_osteopenia"]
    rows = [
        [f"c{i}", columns["osteoporosis"][i], t, columns["normal"][i], columns["osteopenia"][i]]
        for i, t in enumerate(truth)
    ]
    return write_csv(path, header, rows)


def test_reproduces_the_papers_table_from_its_counts(tmp_path: Path) -> None:
    report = evaluation.evaluate(per_class_counts_table(tmp_path / "p.csv"))
    assert list(report["classes"]) == ["normal", "osteopenia", "osteoporosis"]
    table = evaluation.format_table(report)
    lines = {line.split()[0]: line for line in table.splitlines()[:5] if line.strip()}
    # The paper's sensitivity and specificity (95% CI), in its own printed form.
    assert "0.846 (0.719\u20130.931)" in lines["normal"]
    assert "0.837 (0.703\u20130.927)" in lines["normal"]
    assert "0.767 (0.577\u20130.901)" in lines["osteopenia"]
    assert "0.746 (0.629\u20130.842)" in lines["osteopenia"]
    assert "0.947 (0.740\u20130.999)" in lines["osteoporosis"]
    assert "0.963 (0.897\u20130.992)" in lines["osteoporosis"]
    assert report["classes"]["normal"]["threshold"] == 1.0


def test_argmax_confusion_matrix_small_example(tmp_path: Path) -> None:
    header = ["true_class", "p_normal", "p_osteopenia", "p_osteoporosis"]
    rows = [
        ["normal", 0.7, 0.2, 0.1],  # -> normal
        ["normal", 0.4, 0.4, 0.2],  # tie normal/osteopenia -> normal (first in class order)
        ["normal", 0.1, 0.6, 0.3],  # -> osteopenia
        ["osteopenia", 0.2, 0.5, 0.3],  # -> osteopenia
        ["osteopenia", 0.1, 0.45, 0.45],  # tie -> osteopenia
        ["osteoporosis", 0.1, 0.3, 0.6],  # -> osteoporosis
        ["osteoporosis", 0.5, 0.3, 0.2],  # -> normal
    ]
    report = evaluation.evaluate(write_csv(tmp_path / "p.csv", header, rows))
    assert report["confusion_matrix"]["matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    normal = report["classes"]["normal"]["argmax"]
    assert (normal["tp"], normal["fn"], normal["tn"], normal["fp"]) == (2, 1, 3, 1)
    assert normal["sensitivity"] == pytest.approx(2 / 3)
    assert normal["specificity"] == pytest.approx(3 / 4)
    assert report["accuracy"] == pytest.approx(5 / 7)
    assert "Confusion matrix" in evaluation.format_table(report)


def test_score_direction_is_not_flipped(tmp_path: Path) -> None:
    header = ["true_class", "p_a", "p_b"]
    rows = [["a", 0.1, 0.9], ["a", 0.2, 0.8], ["b", 0.8, 0.2], ["b", 0.9, 0.1]]
    report = evaluation.evaluate(write_csv(tmp_path / "p.csv", header, rows))
    assert report["classes"]["a"]["auc"] == 0.0
    assert report["classes"]["b"]["auc"] == 0.0


@pytest.mark.parametrize(
    ("header", "rows", "expect"),
    [
        (["label", "p_a", "p_b"], [["a", 1, 0], ["b", 0, 1]], "no 'true_class' column"),
        (["true_class", "a", "b"], [["a", 1, 0], ["b", 0, 1]], "no score columns"),
        (["true_class", "p_a", "p_b"], [["a", 1, 0], ["c", 0, 1]], "'c' has no score column"),
        (["true_class", "p_a", "p_b"], [["a", 1, 0], ["b", "nan", 1]], "NaN"),
        (["true_class", "p_a", "p_b"], [["a", 1, 0], ["b", "", 1]], "NaN"),
        (["true_class", "p_a", "p_b"], [["a", 1, 0], ["a", 0, 1]], "AUC is undefined"),
        (["true_class", "p_a"], [["a", 1], ["a", 0]], "at least two classes"),
        (["true_class", "p_a", "p_b"], [], "no cases"),
    ],
)
def test_bad_input_exits_1_with_a_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    header: list[str],
    rows: list[list[object]],
    expect: str,
) -> None:
    preds = write_csv(tmp_path / "bad.csv", header, rows)
    code, out, err = run_cli(capsys, "--predictions", str(preds))
    assert code == 1
    assert expect in err
    assert "bad.csv" in err
    assert "Traceback" not in err and out == ""


def test_class_without_positives_names_the_class(tmp_path: Path) -> None:
    preds = write_csv(
        tmp_path / "p.csv",
        ["true_class", "p_normal", "p_osteopenia", "p_osteoporosis"],
        [["normal", 0.8, 0.1, 0.1], ["osteopenia", 0.2, 0.7, 0.1]],
    )
    with pytest.raises(InputError, match="'osteoporosis' has 0 positive"):
        evaluation.evaluate(preds)


def test_missing_file_via_the_installed_command(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "femurscreen", "evaluate", "--predictions", str(missing)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "nope.csv" in proc.stderr and "not found" in proc.stderr
    assert proc.stdout == ""


def test_rows_that_classify_could_not_grade_are_left_out_and_counted(tmp_path):
    """A classify output with an error row evaluates the graded rows and says one was left out."""
    from femurscreen.evaluation.classification import evaluate

    rng = np.random.default_rng(3)
    lines = ["case_id,side,status,p_normal,p_osteopenia,p_osteoporosis,true_class"]
    for i in range(30):
        truth = ("normal", "osteopenia", "osteoporosis")[i % 3]
        p = rng.dirichlet([1, 1, 1])
        lines.append(f"c{i},left,ok,{p[0]},{p[1]},{p[2]},{truth}")
    lines.append("bad,left,error,,,,normal")
    path = tmp_path / "preds.csv"
    path.write_text("\n".join(lines) + "\n")
    report = evaluate(path)
    assert report["n_cases"] == 30
    assert report["n_excluded"] == 1
