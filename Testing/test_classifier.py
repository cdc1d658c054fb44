"""Bone-status classifier: selection, grouped nested CV, safe persistence, classify, CLI.

The tables are synthetic (built here): three informative features that follow the class, a
near-copy of one of them, a constant column and many case-level noise columns, two rows per
case (left and right) that share the label, as a real FEATURES.csv does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from femurscreen.classifier import (
    DEMO_NOTICE,
    classify,
    fit_classifier,
    load_model,
    save_classifier,
)
from femurscreen.classifier.columns import feature_columns
from femurscreen.classifier.cv import case_folds, nested_cv
from femurscreen.classifier.from_cohort import train_classifier_from_cohort
from femurscreen.classifier.persistence import REQUIRED_KEYS, sha256_file
from femurscreen.cli import main
from femurscreen.errors import InputError, ModelError
from femurscreen.labels import CLASSES
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

PARAMS_SHA = "a1" * 32
INFORMATIVE = ("density_trabecular_mean_hu", "original_glcm_Contrast")
MEAN_PAIR = ("original_firstorder_Mean", "wavelet-LLL_firstorder_Mean")  # |r| > 0.99
SMALL_GRID = {
    "mrmr__k": [3, 5],
    "forest__n_estimators": [40],
    "forest__min_samples_leaf": [1],
    "forest__max_features": ["sqrt"],
}
FAST = {"param_grid": SMALL_GRID, "outer_folds": 3, "inner_folds": 2}


def synthetic_table(
    n_per_class: int = 16, n_noise: int = 24, seed: int = 0
) -> tuple[pd.DataFrame, pd.Series]:
    """A FEATURES-like table (two sides per case) and the per-case labels."""
    rng = np.random.default_rng(seed)
    rows, labels = [], {}
    for c, name in enumerate(CLASSES):
        for i in range(n_per_class):
            case = f"{name}-{i:03d}"
            labels[case] = name
            latent = c + rng.normal(0, 0.5, 3)  # three partly independent signals
            case_noise = rng.normal(0, 1, n_noise)
            for side in ("left", "right"):
                mean = 180 - 60 * latent[0] + rng.normal(0, 5)
                row = {
                    "case_id": case,
                    "side": side,
                    "status": "ok",
                    "error": "",
                    "radiomics_params_sha256": PARAMS_SHA,
                    MEAN_PAIR[0]: mean,
                    MEAN_PAIR[1]: 0.98 * mean + rng.normal(0, 1),
                    INFORMATIVE[0]: 150 - 50 * latent[1] + rng.normal(0, 5),
                    INFORMATIVE[1]: np.exp(0.4 * latent[2] + rng.normal(0, 0.05)),
                    "original_shape_Flatness": 0.7,
                }
                for j in range(n_noise):
                    name_j = f"log-sigma-{j % 3 + 1}-0-mm-3D_glszm_Noise{j}"
                    row[name_j] = case_noise[j] + rng.normal(0, 0.3)
                rows.append(row)
    return pd.DataFrame(rows), pd.Series(labels)


@pytest.fixture(scope="module")
def table() -> tuple[pd.DataFrame, pd.Series]:
    return synthetic_table()


@pytest.fixture(scope="module")
def trained(table):
    features, labels = table
    return fit_classifier(features, labels, seed=0, **FAST)


@pytest.fixture(scope="module")
def model_dir(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "clf"
    return save_classifier(trained, out, demo=True, source="synthetic.csv", command="pytest")


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    return target


def test_training_selects_informative_features_and_cv_auc_is_high(trained, table):
    metrics = trained.cv.metrics
    for name in CLASSES:
        assert metrics["auc_ovr"][name]["mean"] > 0.8, (name, metrics["auc_ovr"][name])
        assert metrics["auc_ovr"][name]["sd"] is not None
        assert len(metrics["auc_ovr"][name]["folds"]) == 3
    assert metrics["accuracy"]["mean"] > 0.6
    assert set(INFORMATIVE) <= set(trained.features)
    # exactly one of the near-identical pair survives the correlation filter
    assert len(set(MEAN_PAIR) & set(trained.features)) == 1
    assert "original_shape_Flatness" not in trained.features
    assert trained.model.n_features_in_ == len(trained.features)
    # the stored forest on the selected columns equals the full selection pipeline
    features = table[0]
    candidates = feature_columns(features.columns)
    full = trained.selection_pipeline.predict_proba(features[candidates].to_numpy(dtype=float))
    np.testing.assert_allclose(trained.model.predict_proba(features[trained.features]), full)
    assert trained.radiomics_params_sha256 == PARAMS_SHA


def test_model_folder_has_manifest_with_required_keys_and_correct_sha256(model_dir, trained):
    assert (model_dir / "model.skops").is_file()
    manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    assert set(REQUIRED_KEYS) <= set(manifest)
    digest = hashlib.sha256((model_dir / "model.skops").read_bytes()).hexdigest()
    assert manifest["sha256"] == digest
    assert manifest["classes"] == list(CLASSES)
    assert manifest["features"] == trained.features
    assert manifest["radiomics_params_sha256"] == PARAMS_SHA
    assert manifest["demo"] is True and manifest["demo_notice"] == DEMO_NOTICE
    assert manifest["training_data"]["n_cases"] == {c: 16 for c in CLASSES}
    assert manifest["training_data"]["synthetic"] is True
    assert manifest["package_versions"]["scikit-learn"]
    assert manifest["cv_metrics"]["auc_ovr"]["normal"]["mean"] > 0.8
    assert manifest["hyperparameters"]["selected"]["mrmr__k"] in SMALL_GRID["mrmr__k"]
    # case ids stay out of a model that may be shipped
    assert "normal-000" not in (model_dir / "manifest.json").read_text(encoding="utf-8")
    assert not list(model_dir.parent.glob(".clf*")), "temporary folders left behind"


def test_case_folds_never_put_a_case_on_both_sides(table):
    features, labels = table
    groups = features["case_id"].to_numpy()
    y = np.array([CLASSES.index(labels[c]) for c in groups])
    seen = []
    for train, test in case_folds(y, groups, 4, seed=3):
        assert not set(groups[train]) & set(groups[test])
        assert len(set(y[test])) == 3  # stratified: every class in every test fold
        seen.extend(set(groups[test]))
    assert sorted(seen) == sorted(set(groups))  # each case tested exactly once


def test_grouping_by_case_prevents_twin_leakage():
    """Labels are random per case; the two sides are near-identical. Only leakage scores high."""
    rng = np.random.default_rng(7)
    n_cases, n_features = 45, 8
    case_values = rng.normal(size=(n_cases, n_features))
    case_class = rng.permutation(np.arange(n_cases) % 3)
    X = np.repeat(case_values, 2, axis=0) + rng.normal(0, 0.01, (2 * n_cases, n_features))
    y = np.repeat(case_class, 2)
    cases = np.repeat(np.array([f"c{i}" for i in range(n_cases)], dtype=object), 2)
    names = [f"original_firstorder_F{j}" for j in range(n_features)]
    grid = {"mrmr__k": [4], "forest__n_estimators": [40], "forest__min_samples_leaf": [1]}

    def mean_auc(groups):
        result = nested_cv(
            X, y, groups, CLASSES, feature_names=names, param_grid=grid, outer_folds=3,
            inner_folds=2, seed=0,
        )  # fmt: skip
        return np.mean([v["mean"] for v in result.metrics["auc_ovr"].values()]), result

    grouped, result = mean_auc(cases)
    leaky, _ = mean_auc(np.arange(len(y)).astype(object))  # every row its own "case"
    assert grouped < 0.7, grouped
    assert leaky > grouped + 0.2, (leaky, grouped)  # the check can see leakage
    tested = [c for fold in result.outer_test_cases for c in fold]
    assert len(tested) == len(set(tested)) == n_cases


def test_classify_reproduces_in_memory_model(model_dir, trained, table):
    features, labels = table
    features = features.assign(bone_status=features["case_id"].map(labels))
    out = classify(features, model_dir)
    expected = trained.model.predict_proba(features[trained.features])
    p_columns = [f"p_{c}" for c in CLASSES]
    assert [c for c in out.columns if c.startswith("p_")] == p_columns
    np.testing.assert_allclose(out[p_columns].to_numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out[p_columns].sum(axis=1), 1.0, atol=1e-12)
    assert list(out["predicted"]) == [CLASSES[j] for j in expected.argmax(axis=1)]
    assert (out["status"] == "ok").all()
    assert list(out["true_class"]) == list(features["bone_status"])
    assert list(out["case_id"]) == list(features["case_id"])
    assert out.attrs["demo"] is True


def test_tampered_model_file_is_refused(model_dir, table, tmp_path):
    copy = _copy(model_dir, tmp_path)
    data = bytearray((copy / "model.skops").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "model.skops").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match") as info:
        load_model(copy)
    assert "model.skops" in str(info.value) and "modified or corrupted" in str(info.value)
    with pytest.raises(ModelError, match="does not match"):
        classify(table[0], copy)


def test_untrusted_type_in_model_file_is_refused(model_dir, tmp_path):
    copy = _copy(model_dir, tmp_path)
    rng = np.random.default_rng(0)
    foreign = Pipeline([("lr", LogisticRegression())]).fit(
        rng.normal(size=(30, 2)), np.arange(30) % 3
    )
    sio.dump(foreign, copy / "model.skops")
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["sha256"] = sha256_file(copy / "model.skops")  # a consistent but foreign file
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="trusted list") as info:
        load_model(copy)
    assert "LogisticRegression" in str(info.value)


def test_other_radiomics_parameters_are_refused_naming_both_hashes(model_dir, table):
    features = table[0].assign(radiomics_params_sha256="b2" * 32)
    with pytest.raises(ModelError) as info:
        classify(features, model_dir)
    message = str(info.value)
    assert PARAMS_SHA[:16] in message and ("b2" * 8) in message


def test_missing_feature_columns_are_listed(model_dir, trained, table):
    dropped = trained.features[:2]
    with pytest.raises(ModelError) as info:
        classify(table[0].drop(columns=dropped), model_dir)
    assert all(name in str(info.value) for name in dropped)


def test_nan_row_errors_and_other_rows_are_classified(model_dir, trained, table):
    features = table[0].copy()
    features.loc[3, trained.features[0]] = np.nan
    features.loc[5, "status"] = "error"
    features.loc[5, "error"] = "mask is empty"
    out = classify(features, model_dir)
    assert out.loc[3, "status"] == "error" and trained.features[0] in out.loc[3, "error"]
    assert out.loc[5, "status"] == "error" and "mask is empty" in out.loc[5, "error"]
    assert out.loc[[3, 5], "p_normal"].isna().all()
    others = out.drop(index=[3, 5])
    assert (others["status"] == "ok").all()
    assert np.isfinite(others[[f"p_{c}" for c in CLASSES]].to_numpy()).all()


def test_applicability_flags_far_rows_and_passes_typical_rows(model_dir, trained, table):
    features = table[0].copy()
    out = classify(features, model_dir)
    assert out["applicable"].mean() >= 0.95
    assert (out.loc[out["applicable"], "reliability"] == "").all()
    far = features.iloc[[0, 1]].copy()
    far[trained.features] = far[trained.features] * 100
    flagged = classify(far, model_dir)
    assert not flagged["applicable"].any()
    assert flagged["reliability"].str.contains("unreliable").all()
    stored = json.loads((model_dir / "applicability.json").read_text(encoding="utf-8"))
    assert stored["features"] == trained.features  # plain JSON statistics, no pickle


def test_label_and_case_checks_of_the_cohort_path(table, tmp_path):
    features, labels = table
    cohort = pd.DataFrame(
        {"case_id": labels.index, "ct": "ct.nii.gz", "mask": "", "t_score": "",
         "bone_status": list(labels)}
    )  # fmt: skip
    cohort_csv = tmp_path / "cohort.csv"
    cohort.to_csv(cohort_csv, index=False)
    partial = tmp_path / "partial.csv"
    features[features["case_id"] != labels.index[0]].to_csv(partial, index=False)
    with pytest.raises(InputError, match="does not match the cohort") as info:
        train_classifier_from_cohort(cohort_csv, out_dir=tmp_path / "m", features_csv=partial)
    assert labels.index[0] in str(info.value)
    with pytest.raises(InputError, match="segmentation is needed"):
        train_classifier_from_cohort(cohort_csv, out_dir=tmp_path / "m")
    cohort.loc[0, "bone_status"] = "osteo"
    cohort.to_csv(cohort_csv, index=False)
    with pytest.raises(InputError, match="valid label"):
        train_classifier_from_cohort(cohort_csv, out_dir=tmp_path / "m", features_csv=partial)


def test_cli_train_refuses_a_bad_cohort_with_what_to_do(table, tmp_path, capsys):
    """A bad cohort or bad numbers: exit 1 and one line saying what is wrong and what to do,
    never a traceback, and no model folder written."""
    features, labels = table
    features_csv = tmp_path / "FEATURES.csv"
    features.to_csv(features_csv, index=False)
    cohort_csv = tmp_path / "cohort.csv"
    pd.DataFrame(
        {"case_id": labels.index, "ct": "scans/x.nii.gz", "mask": "x-seg.nii.gz", "t_score": "",
         "bone_status": list(labels)}
    ).to_csv(cohort_csv, index=False)  # fmt: skip
    model = tmp_path / "model"
    given = ["--features", str(features_csv)]
    cases = [
        (cohort_csv, [*given, "--folds", "1", "1"], "at least 2 outer and 2 inner folds"),
        (cohort_csv, [*given, "--repeats", "0"], "--repeats must be at least 1"),
        (cohort_csv, [], "image file(s) that do not exist"),  # extraction would need them
        (tmp_path / "nowhere.csv", [], "cohort CSV not found"),
    ]
    for cohort, extra, message in cases:
        code = main(["train-classifier", str(cohort), "--out", str(model), *extra])
        err = capsys.readouterr().err
        assert code == 1, (message, err)
        assert message in err and "Traceback" not in err, err
        assert not model.exists()
    code = main(["train-classifier", str(cohort_csv), "--out", str(model)])
    err = capsys.readouterr().err
    assert str(tmp_path / "scans" / "x.nii.gz") in err  # names the file, resolved


def test_cli_train_then_classify(table, tmp_path, capsys):
    features, labels = table
    features = features.copy()
    features.loc[0, ["status", "error"]] = ["error", "no femur found"]
    features_csv = tmp_path / "FEATURES.csv"
    features.to_csv(features_csv, index=False)
    cohort_csv = tmp_path / "cohort.csv"
    pd.DataFrame(
        {"case_id": labels.index, "ct": "x.nii.gz", "mask": "x-seg.nii.gz", "t_score": "",
         "bone_status": list(labels)}
    ).to_csv(cohort_csv, index=False)  # fmt: skip
    model = tmp_path / "model"
    code = main(
        ["train-classifier", str(cohort_csv), "--features", str(features_csv), "--out",
         str(model), "--folds", "3", "2", "--grid", json.dumps(SMALL_GRID), "--seed", "1"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "DEMO MODEL" in captured.err
    assert "AUC normal" in captured.out
    manifest = json.loads((model / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["training_data"]["n_rows_skipped"] == 1
    assert manifest["training_data"]["source"] == "cohort.csv"

    predictions = tmp_path / "pred.csv"
    code = main(["classify", str(features_csv), "--model", str(model), "--out", str(predictions)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "DEMO MODEL" in captured.err
    out = pd.read_csv(predictions)
    assert list(out.columns[:4]) == ["case_id", "side", "status", "error"]
    for column in ("p_normal", "p_osteopenia", "p_osteoporosis", "predicted", "applicable",
                   "reliability"):  # fmt: skip
        assert column in out.columns
    assert len(out) == len(features) and out.loc[0, "status"] == "error"

    code = main(["classify", str(features_csv), "--model", str(model), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["demo"] is True and report["demo_notice"] == DEMO_NOTICE
    assert len(report["predictions"]) == len(features)
    assert report["predictions"][0]["p_normal"] is None


def test_cli_classify_refuses_a_bad_model(model_dir, table, tmp_path, capsys):
    copy = _copy(model_dir, tmp_path)
    data = bytearray((copy / "model.skops").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.skops").write_bytes(bytes(data))
    features_csv = tmp_path / "FEATURES.csv"
    table[0].to_csv(features_csv, index=False)
    code = main(["classify", str(features_csv), "--model", str(copy)])
    err = capsys.readouterr().err
    assert code == 1
    assert "does not match" in err and "model.skops" in err
    code = main(["classify", str(features_csv), "--model", str(tmp_path / "nowhere")])
    assert code == 1 and "model folder not found" in capsys.readouterr().err


def test_train_from_cohort_extracts_features_when_available(table, tmp_path, monkeypatch):
    """The cohort -> features path, through femurscreen.features' contract."""
    import femurscreen.features as features_module

    features, labels = table
    calls = []

    def extract(cohort_csv, *, params=None, only=None, cache_dir=None, workers=1):
        calls.append((Path(cohort_csv), cache_dir, workers))
        return features.copy()

    monkeypatch.setattr(features_module, "extract_cohort_features", extract)
    cohort_csv = tmp_path / "cohort.csv"
    pd.DataFrame(
        {"case_id": labels.index, "ct": "x.nii.gz", "mask": "x-seg.nii.gz", "t_score": "",
         "bone_status": list(labels)}
    ).to_csv(cohort_csv, index=False)  # fmt: skip
    out = train_classifier_from_cohort(
        cohort_csv, out_dir=tmp_path / "m", cache_dir=tmp_path / "cache", **FAST
    )
    assert calls == [(cohort_csv, tmp_path / "cache", 1)]
    assert load_model(out).features


def test_cli_classify_with_truth_feeds_evaluate(model_dir, table, tmp_path, capsys):
    """--truth copies the cohort's bone_status so the output goes straight to evaluate."""
    features, labels = table
    features_csv = tmp_path / "FEATURES.csv"
    features.to_csv(features_csv, index=False)
    cohort = tmp_path / "cohort.csv"
    pd.DataFrame({"case_id": labels.index, "bone_status": labels.values}).to_csv(
        cohort, index=False
    )
    predictions = tmp_path / "pred.csv"
    args = ["classify", str(features_csv), "--model", str(model_dir), "--truth", str(cohort)]
    assert main([*args, "--out", str(predictions)]) == 0
    out = pd.read_csv(predictions)
    expected = out["case_id"].map(labels)
    assert (out["true_class"] == expected).all()
    assert main(["evaluate", "--predictions", str(predictions)]) == 0
    assert "osteoporosis" in capsys.readouterr().out

    pd.DataFrame({"case_id": ["someone-else"], "bone_status": ["normal"]}).to_csv(
        cohort, index=False
    )
    assert main(args) == 1
    assert "not in the cohort" in capsys.readouterr().err
