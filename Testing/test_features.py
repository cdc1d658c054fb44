"""Radiomics features, the fast path, the cache, density readouts and the extract-features verb.

Every test builds its own synthetic proximal femurs (head, neck, trochanteric block, shaft; a
2 mm cortex at ~1200 HU around a textured trabecular interior) so nothing depends on the
phantom generator or on data outside the repository.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from femurscreen.cli import main as cli_main
from femurscreen.errors import InputError
from femurscreen.features import (
    DENSITY_KEYS,
    LEADING_COLUMNS,
    default_params_path,
    density_readouts,
    extract_case_features,
    extract_cohort_features,
    params_sha256,
    sort_features,
    write_features_csv,
)
from femurscreen.features import case as case_module
from femurscreen.features.cache import FeatureCache
from femurscreen.features.fast_path import extract_fast, make_fast_extractor
from femurscreen.features.params import make_extractor, plan_features, read_feature_list
from femurscreen.features.radiomics_extract import clean_features, extract_full, prepare_inputs
from scipy import ndimage

# pykwalify (pyradiomics' schema checker) loads its extension with the deprecated load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

# A model-like subset: original + one LoG sigma + two wavelet sub-bands, several classes.
MODEL_FEATURES = [
    "original_shape_SurfaceVolumeRatio",
    "original_firstorder_Mean",
    "original_firstorder_Energy",
    "original_glcm_Contrast",
    "original_glszm_ZoneEntropy",
    "log-sigma-2-0-mm-3D_firstorder_Median",
    "log-sigma-2-0-mm-3D_glrlm_RunEntropy",
    "wavelet-LLH_glcm_Idmn",
    "wavelet-LLH_gldm_DependenceEntropy",
    "wavelet-HLL_firstorder_Skewness",
    "wavelet-HLL_ngtdm_Busyness",
]

# Cheap parameters for tests that exercise plumbing, not pyradiomics itself.
TEST_PARAMS = """\
imageType:
  Original: {}
featureClass:
  firstorder:
  glcm: [Contrast, Idmn]
setting:
  resampledPixelSpacing: [1.0, 1.0, 1.0]
  interpolator: sitkBSpline
  preCrop: true
  binWidth: 25
  label: 1
  correctMask: true
  additionalInfo: false
"""


def femur_case(
    scale: float = 0.5, trab: float = 200.0, cortex: float = 1200.0, seed: int = 0
) -> tuple[sitk.Image, sitk.Image]:
    """CT (int16 HU, 1 mm, LPS) and labels (1 = patient's left at +x, 2 = right at -x)."""
    rng = np.random.default_rng(seed)
    s = scale
    half_x, half_y = int(160 * s) + 8, int(22 * s) + 8
    xs = np.arange(-half_x, half_x + 1.0)
    ys = np.arange(-half_y, half_y + 1.0)
    zs = np.arange(int(-108 * s) - 4, int(24 * s) + 5.0)
    z, y, x = np.meshgrid(zs, ys, xs, indexing="ij")
    labels = np.zeros(x.shape, np.uint8)
    for label, sign in ((1, 1.0), (2, -1.0)):
        a = np.array([sign * 90 * s, 0, 0])
        b = np.array([sign * 128 * s, 0, -38 * s])
        axis = (b - a) / np.linalg.norm(b - a)
        rel = np.stack([x - a[0], y, z], -1)
        along = rel @ axis
        radial = np.linalg.norm(rel - along[..., None] * axis, axis=-1)
        head = (x - a[0]) ** 2 + y**2 + z**2 <= (22 * s) ** 2
        neck = (along >= 0) & (along <= np.linalg.norm(b - a)) & (radial <= 14 * s)
        cx = sign * 130 * s
        troch = ((x - cx) / (24 * s)) ** 2 + (y / (19 * s)) ** 2 + ((z + 42 * s) / (30 * s)) ** 2
        shaft = ((x - cx) ** 2 + y**2 <= (15 * s) ** 2) & (z <= -40 * s) & (z >= -105 * s)
        labels[head | neck | (troch <= 1) | shaft] = label
    bone = labels > 0
    depth = ndimage.distance_transform_edt(bone)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, x.shape), 1.2)
    texture /= texture.std()
    ct = np.where(np.abs(y) < half_y - 3, 40.0, -1000.0) + rng.normal(0, 12, x.shape)
    ct = np.where(bone, trab + 60 * texture, ct)
    ct = np.where(bone & (depth <= 2), cortex + rng.normal(0, 40, x.shape), ct)
    image = sitk.GetImageFromArray(np.round(ct).astype(np.int16))
    image.SetOrigin((float(xs[0]), float(ys[0]), float(zs[0])))
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(image)
    return image, mask


def flipped(image: sitk.Image) -> sitk.Image:
    """The same volume in world space, stored with the x and z voxel axes reversed."""
    array = sitk.GetArrayFromImage(image)[::-1, :, ::-1]
    out = sitk.GetImageFromArray(np.ascontiguousarray(array))
    out.SetSpacing(image.GetSpacing())
    size = image.GetSize()
    out.SetOrigin(image.TransformIndexToPhysicalPoint((size[0] - 1, 0, size[2] - 1)))
    out.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    return out


def with_label_blob(labels: sitk.Image, label: int, side_cube_mm: int) -> sitk.Image:
    """``labels`` with ``label`` replaced by a small cube (0 for an empty side)."""
    array = sitk.GetArrayFromImage(labels)
    centre = np.argwhere(array == label).mean(axis=0).astype(int)
    array[array == label] = 0
    if side_cube_mm:
        lo, hi = centre - side_cube_mm // 2, centre - side_cube_mm // 2 + side_cube_mm
        array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = label
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(labels)
    return out


@pytest.fixture(scope="module")
def small_case() -> tuple[sitk.Image, sitk.Image]:
    return femur_case(scale=0.5)


@pytest.fixture(scope="module")
def shipped_rows(small_case) -> list[dict]:
    """Both sides with the shipped parameter file, full extraction (computed once)."""
    ct, labels = small_case
    return extract_case_features(ct, labels, case_id="synthetic01")


@pytest.fixture()
def test_params(tmp_path: Path) -> Path:
    path = tmp_path / "test_params.yaml"
    path.write_text(TEST_PARAMS, encoding="utf-8")
    return path


def _feature_names(row: dict) -> list[str]:
    return [k for k in row if k not in LEADING_COLUMNS and not k.startswith("density_")]


# --- names, shipped parameter file ------------------------------------------------------------


def test_shipped_params_give_named_features_per_side(shipped_rows):
    assert [r["side"] for r in shipped_rows] == ["left", "right"]
    sha = params_sha256(default_params_path())
    for row in shipped_rows:
        assert row["status"] == "ok", row["error"]
        assert list(row)[:5] == list(LEADING_COLUMNS)
        assert row["case_id"] == "synthetic01" and row["error"] == ""
        assert row["radiomics_params_sha256"] == sha
        names = _feature_names(row)
        assert len(names) > 1000
        assert not any(k.startswith("diagnostics_") for k in row)
        for name in (
            "original_firstorder_Mean",
            "original_shape_VoxelVolume",
            "log-sigma-1-0-mm-3D_glcm_Contrast",
            "log-sigma-3-0-mm-3D_ngtdm_Busyness",
            "wavelet-LLH_glszm_ZoneEntropy",
            "wavelet-LLL_gldm_DependenceEntropy",
        ):
            assert name in row
        assert all(isinstance(row[n], float) and math.isfinite(row[n]) for n in names)
        assert names == sort_features(names)  # pyradiomics' own order
        assert [k for k in row if k.startswith("density_")] == list(DENSITY_KEYS)
    left, right = shipped_rows
    # the two mirrored femurs have the same volume but their own voxels
    assert left["original_shape_VoxelVolume"] == pytest.approx(right["original_shape_VoxelVolume"])
    assert left["original_firstorder_Mean"] != right["original_firstorder_Mean"]


def test_shipped_params_sha256_is_the_file_hash():
    import hashlib

    path = default_params_path()
    assert params_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "femurscreen-radiomics-v1" in path.read_text(encoding="utf-8")


FILTER_PARAMS = """\
imageType:
  Original: {}
  LoG: {sigma: [2.0]}
  Wavelet: {}
featureClass:
  firstorder:
  glcm: [Contrast]
setting:
  resampledPixelSpacing: [1.0, 1.0, 1.0]
  interpolator: sitkBSpline
  preCrop: true
  padDistance: 10
  binWidth: 25
  label: 1
  additionalInfo: false
"""


def test_resampling_from_a_crop_equals_pyradiomics_on_the_whole_ct(small_case, tmp_path):
    ct, labels = small_case
    spacing = (0.8, 0.8, 1.5)  # a typical clinical grid, so pyradiomics must resample
    size = [int(n / s) for n, s in zip(ct.GetSize(), spacing, strict=True)]
    args = (sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), spacing, ct.GetDirection())
    ct2 = flipped(sitk.Resample(ct, size, *args, -1000, sitk.sitkInt16))  # and reversed axes
    left = sitk.Cast(labels == 1, sitk.sitkUInt8)
    side = sitk.Resample(left, ct2, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    params = tmp_path / "filters.yaml"
    params.write_text(FILTER_PARAMS, encoding="utf-8")

    image, mask, settings = prepare_inputs(ct2, side, make_extractor(params).settings)
    assert settings["resampledPixelSpacing"] is None and settings["preCrop"] is False
    assert image.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    assert image.GetNumberOfPixels() < ct2.GetNumberOfPixels() / 2

    ours = extract_full(ct2, side, params)
    plain = clean_features(make_extractor(params).execute(ct2, side, label=1))
    assert len(plain) == 10 * 19 and ours == plain  # original, LoG, 8 wavelet bands


# --- fast path --------------------------------------------------------------------------------


def test_fast_path_equals_full_extraction(small_case, shipped_rows):
    ct, labels = small_case
    left_full = shipped_rows[0]
    side_mask = sitk.Cast(labels == 1, sitk.sitkUInt8)
    fast = extract_fast(ct, side_mask, default_params_path(), MODEL_FEATURES)
    assert sorted(fast) == sorted(MODEL_FEATURES)
    for name in MODEL_FEATURES:
        assert float(fast[name]) == left_full[name], name


def test_fast_path_rows_through_the_case_api(small_case, shipped_rows):
    ct, labels = small_case
    only = [*MODEL_FEATURES, "density_neck_mean_hu"]
    rows = extract_case_features(ct, labels, case_id="synthetic01", only=only, sides=("right",))
    (row,) = rows
    assert row["status"] == "ok"
    assert _feature_names(row) == sort_features(MODEL_FEATURES)
    assert [k for k in row if k.startswith("density_")] == ["density_neck_mean_hu"]
    for name in only:
        assert row[name] == shipped_rows[1][name], name


def test_fast_path_enables_only_the_needed_image_types():
    extractor, plan = make_fast_extractor(default_params_path(), MODEL_FEATURES)
    assert extractor.enabledImagetypes == {"Original": {}, "LoG": {"sigma": [2.0]}, "Wavelet": {}}
    assert set(extractor.enabledFeatures) == {
        "shape",
        "firstorder",
        "glcm",
        "glrlm",
        "glszm",
        "gldm",
        "ngtdm",
    }
    assert extractor.enabledFeatures["glcm"] == ["Contrast", "Idmn"]
    # each filtered image runs only its own classes; unused sub-bands are skipped
    assert set(plan.by_image) == {"original", "log-sigma-2-0-mm-3D", "wavelet-LLH", "wavelet-HLL"}
    assert plan.by_image["wavelet-HLL"] == {"firstorder": ["Skewness"], "ngtdm": ["Busyness"]}

    only_original = ["original_firstorder_Mean", "original_glcm_Contrast"]
    extractor, _ = make_fast_extractor(default_params_path(), only_original)
    assert extractor.enabledImagetypes == {"Original": {}}
    assert extractor.enabledFeatures == {"firstorder": ["Mean"], "glcm": ["Contrast"]}


def test_fast_path_refuses_names_the_params_cannot_produce():
    with pytest.raises(InputError, match="original_glcm_Dissimilarity"):  # deprecated
        plan_features(["original_glcm_Dissimilarity"], default_params_path())
    with pytest.raises(InputError, match="log-sigma-5-0-mm-3D_firstorder_Mean"):
        plan_features(["log-sigma-5-0-mm-3D_firstorder_Mean"], default_params_path())
    with pytest.raises(InputError, match="original_glcm_NoSuchFeature"):
        plan_features(["original_glcm_NoSuchFeature", "Mean"], default_params_path())


def test_feature_list_from_comma_text_and_json(tmp_path):
    assert read_feature_list("a_b_c, d_e_f") == ["a_b_c", "d_e_f"]
    text = tmp_path / "features.txt"
    text.write_text("# model v1\noriginal_firstorder_Mean\nwavelet-LLH_glcm_Idmn\n")
    assert read_feature_list(text) == ["original_firstorder_Mean", "wavelet-LLH_glcm_Idmn"]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"version": "1", "features": ["original_firstorder_Mean"]}))
    assert read_feature_list(manifest) == ["original_firstorder_Mean"]


# --- cache ------------------------------------------------------------------------------------


def test_cache_hit_miss_and_corrupt_entry(small_case, test_params, tmp_path, monkeypatch):
    ct, labels = small_case
    calls: list[str] = []
    real = case_module.extract_full

    def spy(ct_, mask_, params_):
        calls.append("full")
        return real(ct_, mask_, params_)

    monkeypatch.setattr(case_module, "extract_full", spy)
    cache_dir = tmp_path / "cache"
    kwargs = dict(case_id="c1", params=test_params, cache_dir=cache_dir)

    first = extract_case_features(ct, labels, **kwargs)
    assert [r["status"] for r in first] == ["ok", "ok"] and len(calls) == 2
    entries = sorted(cache_dir.rglob("*.json"))
    assert len(entries) == 2

    second = extract_case_features(ct, labels, **{**kwargs, "case_id": "c1-again"})
    assert len(calls) == 2  # pyradiomics not called: both sides from the cache
    assert [{**r, "case_id": "c1"} for r in second] == first
    assert second[0]["case_id"] == "c1-again"

    # a subset of a cached full row comes from that row too
    subset = extract_case_features(ct, labels, only=["original_glcm_Idmn"], **kwargs)
    assert len(calls) == 2 and subset[0]["original_glcm_Idmn"] == first[0]["original_glcm_Idmn"]

    # a changed left mask misses the cache for the left side only
    array = sitk.GetArrayFromImage(labels)
    z = np.argwhere(array == 1)[:, 0].min()
    array[z][array[z] == 1] = 0  # drop the top slice of the left femur
    edited = sitk.GetImageFromArray(array)
    edited.CopyInformation(labels)
    third = extract_case_features(ct, edited, **kwargs)
    assert len(calls) == 3
    assert third[1] == first[1]
    assert third[0]["original_firstorder_Mean"] != first[0]["original_firstorder_Mean"]

    # a corrupt entry is ignored, recomputed and rewritten
    for entry in entries:
        entry.write_text('{"key": "trunc', encoding="utf-8")
    fourth = extract_case_features(ct, labels, **kwargs)
    assert len(calls) == 5
    assert fourth == first
    for entry in entries:
        assert json.loads(entry.read_text(encoding="utf-8"))["row"]["status"] == "ok"


def test_cache_ignores_an_entry_for_another_key(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put("ab" * 32, {"status": "ok", "x": 1.0})
    assert cache.get("ab" * 32) == {"status": "ok", "x": 1.0}
    other = "cd" * 32
    cache.path(other).parent.mkdir(parents=True, exist_ok=True)
    cache.path(other).write_text(cache.path("ab" * 32).read_text(encoding="utf-8"))
    assert cache.get(other) is None
    cache.put("ef" * 32, {"status": "ok", "x": float("nan")})  # never cached
    assert cache.get("ef" * 32) is None


# --- per-side errors --------------------------------------------------------------------------


def test_tiny_or_empty_mask_fails_that_side_only(small_case, test_params):
    ct, labels = small_case
    tiny = with_label_blob(labels, 1, 7)  # 7 mm cube = 0.34 ml
    rows = extract_case_features(ct, tiny, case_id="t", params=test_params)
    left, right = rows
    assert left["status"] == "error"
    assert "left proximal femur mask is only 0.34 ml (< 1 ml)" in left["error"]
    assert "segment or correct the mask" in left["error"]
    assert right["status"] == "ok" and right["error"] == ""
    assert "original_firstorder_Mean" in right and "original_firstorder_Mean" not in left

    empty = with_label_blob(labels, 2, 0)
    left, right = extract_case_features(ct, empty, case_id="t", params=test_params)
    assert left["status"] == "ok"
    assert right["status"] == "error" and "right proximal femur mask is empty" in right["error"]


def test_nan_features_fail_that_side_with_their_names(small_case, test_params, monkeypatch):
    ct, labels = small_case
    real = case_module.extract_full

    def nan_on_left(ct_, mask_, params_):
        features = real(ct_, mask_, params_)
        if sitk.GetArrayViewFromImage(mask_)[:, :, -40:].any():  # the left femur lies at +x
            features["original_glcm_Idmn"] = float("nan")
            features["original_firstorder_Mean"] = float("inf")
        return features

    monkeypatch.setattr(case_module, "extract_full", nan_on_left)
    left, right = extract_case_features(ct, labels, case_id="n", params=test_params)
    assert left["status"] == "error"
    assert "NaN/inf" in left["error"]
    assert "original_glcm_Idmn" in left["error"] and "original_firstorder_Mean" in left["error"]
    assert right["status"] == "ok"


# --- density ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_size_cases() -> dict[float, tuple[sitk.Image, sitk.Image]]:
    return {trab: femur_case(scale=1.0, trab=trab) for trab in (200.0, 320.0)}


def test_density_rois_exclude_cortex(full_size_cases):
    ct, labels = full_size_cases[200.0]
    for label, side in ((1, "left"), (2, "right")):
        readouts = density_readouts(ct, labels == label, side)
        assert list(readouts) == list(DENSITY_KEYS)
        for roi in ("head", "neck", "intertroch"):
            assert readouts[f"density_{roi}_mean_hu"] == pytest.approx(200, abs=20), roi
            assert readouts[f"density_{roi}_sd_hu"] < 100, roi  # no 1200 HU cortex inside
            assert readouts[f"density_{roi}_ml"] > 2, roi
        # head ROI = head sphere (r 22 mm) eroded by 3 mm: 4/3 pi 19^3 = 28.7 ml
        assert readouts["density_head_ml"] == pytest.approx(28.7, rel=0.1)
        assert readouts["density_whole_mean_hu"] > 300  # the whole mask keeps its cortex
        assert readouts["density_whole_ml"] == pytest.approx(
            float((sitk.GetArrayViewFromImage(labels) == label).sum()) / 1000
        )


def test_denser_bone_reads_higher(full_size_cases):
    loose = density_readouts(full_size_cases[200.0][0], full_size_cases[200.0][1] == 1, "left")
    dense = density_readouts(full_size_cases[320.0][0], full_size_cases[320.0][1] == 1, "left")
    for roi in ("head", "neck", "intertroch", "whole"):
        assert dense[f"density_{roi}_mean_hu"] > loose[f"density_{roi}_mean_hu"] + 60, roi


def test_density_is_the_same_in_any_voxel_order(full_size_cases):
    ct, labels = full_size_cases[200.0]
    plain = density_readouts(ct, labels == 2, "right")
    flipped_ct, flipped_labels = flipped(ct), flipped(labels)
    assert flipped_ct.TransformIndexToPhysicalPoint((0, 0, 0)) != ct.GetOrigin()
    other = density_readouts(flipped_ct, flipped_labels == 2, "right")
    assert other == pytest.approx(plain, rel=1e-9)


# --- table and command line -------------------------------------------------------------------


def test_write_features_csv_orders_columns_atomically(tmp_path):
    rows = [
        {
            "case_id": "a",
            "side": "left",
            "status": "ok",
            "error": "",
            "radiomics_params_sha256": "0" * 64,
            "density_head_mean_hu": 1.0,
            "wavelet-LLH_glcm_Idmn": 2.0,
            "original_firstorder_Mean": 3.0,
            "original_shape_VoxelVolume": 4.0,
        },
        {"case_id": "b", "side": "left", "status": "error", "error": "x is empty"},
    ]
    out = write_features_csv(rows, tmp_path / "sub" / "features.csv")
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == [
        *LEADING_COLUMNS,
        "original_shape_VoxelVolume",
        "original_firstorder_Mean",
        "wavelet-LLH_glcm_Idmn",
        "density_head_mean_hu",
    ]
    assert table["error"].tolist() == ["", "x is empty"]
    assert [p.name for p in out.parent.iterdir()] == ["features.csv"]


def test_bmd_columns_come_last_empty_when_not_graded_and_are_no_features(tmp_path):
    """A screen's features.csv carries the calibrated-density numbers after the features; a side
    whose density was not graded has them empty, and a model never takes them for features."""
    from femurscreen.classifier.columns import feature_columns
    from femurscreen.output.columns import BMD_COLUMNS

    graded = {
        "fn_abmd_g_cm2": 0.7312,
        "th_abmd_g_cm2": 0.8127,
        "fn_t_score": -1.06,
        "th_t_score": -1.06,
        "who_class": "osteopenia",
    }
    common = {"status": "ok", "error": "", "radiomics_params_sha256": "0" * 64}
    rows = [
        {"case_id": "a", "side": "right", **common, **graded, "original_firstorder_Mean": 3.0},
        {
            "case_id": "a",
            "side": "left",
            **common,
            **dict.fromkeys(BMD_COLUMNS),
            "original_firstorder_Mean": 4.0,
        },
    ]
    out = write_features_csv(rows, tmp_path / "features.csv")
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == [*LEADING_COLUMNS, "original_firstorder_Mean", *BMD_COLUMNS]
    assert float(table.loc[0, "fn_t_score"]) == -1.06 and table.loc[0, "who_class"] == "osteopenia"
    assert [table.loc[1, c] for c in BMD_COLUMNS] == [""] * len(BMD_COLUMNS)
    assert not set(feature_columns(table.columns)) & set(BMD_COLUMNS)


def test_quality_columns_follow_the_density_and_are_no_features(tmp_path):
    """The segmentation quality (seg_quality, seg_quality_method) comes after the density
    columns in features.csv, whatever order the row had; a model never takes it for a feature,
    and an unknown quality is an empty cell, not a number."""
    from femurscreen.classifier.columns import feature_columns
    from femurscreen.output.columns import BMD_COLUMNS, QUALITY_COLUMNS

    common = {"status": "ok", "error": "", "radiomics_params_sha256": "0" * 64}
    rows = [
        {"seg_quality": 0.912, "seg_quality_method": "dice_with_vbnet", "case_id": "a",
         "side": "right", **common, "original_firstorder_Mean": 3.0,
         **dict.fromkeys(BMD_COLUMNS)},
        {"seg_quality": None, "seg_quality_method": "edited", "case_id": "a", "side": "left",
         **common, "original_firstorder_Mean": 4.0, **dict.fromkeys(BMD_COLUMNS)},
    ]  # fmt: skip
    out = write_features_csv(rows, tmp_path / "features.csv")
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == [
        *LEADING_COLUMNS, "original_firstorder_Mean", *BMD_COLUMNS, *QUALITY_COLUMNS
    ]  # fmt: skip
    assert float(table.loc[0, "seg_quality"]) == 0.912
    assert table.loc[1, "seg_quality"] == "" and table.loc[1, "seg_quality_method"] == "edited"
    assert not set(feature_columns(table.columns)) & set(QUALITY_COLUMNS)


def _write_case(folder: Path, ct: sitk.Image, labels: sitk.Image) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(ct, str(folder / "ct.nii.gz"))
    sitk.WriteImage(labels, str(folder / "femur.nii.gz"))


def test_cli_cohort_records_a_missing_ct_and_goes_on(small_case, test_params, tmp_path, capsys):
    ct, labels = small_case
    _write_case(tmp_path / "c1", ct, labels)
    _write_case(tmp_path / "c2", ct, with_label_blob(labels, 2, 0))
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(
        "case_id,ct,mask,t_score,bone_status\n"
        "c1,c1/ct.nii.gz,c1/femur.nii.gz,-0.5,normal\n"
        "gone,gone/ct.nii.gz,gone/femur.nii.gz,-3.0,osteoporosis\n"
        "c2,c2/ct.nii.gz,c2/femur.nii.gz,-1.5,osteopenia\n"
    )
    out = tmp_path / "features.csv"
    code = cli_main(
        ["extract-features", str(cohort), "--out", str(out), "--params", str(test_params)]
        + ["--cache", str(tmp_path / "cache")]
    )
    assert code == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns)[:5] == list(LEADING_COLUMNS)
    assert table[["case_id", "side"]].values.tolist() == [
        ["c1", "left"],
        ["c1", "right"],
        ["gone", "left"],
        ["gone", "right"],
        ["c2", "left"],
        ["c2", "right"],
    ]
    assert table["status"].tolist() == ["ok", "ok", "error", "error", "ok", "error"]
    assert table.loc[2, "error"].endswith("CT file not found. check the path.")
    assert "gone/ct.nii.gz" in table.loc[2, "error"]
    assert "original_firstorder_Mean" in table.columns and "density_head_mean_hu" in table.columns
    summary = capsys.readouterr()
    assert "3 case(s): 2 ok, 1 failed; sides 3 ok, 3 failed" in summary.out
    assert "[3/3]" in summary.err


def test_cli_single_case_fast_path_and_total_failure(small_case, tmp_path, capsys):
    ct, labels = small_case
    _write_case(tmp_path / "one", ct, labels)
    out = tmp_path / "one.csv"
    args = ["extract-features", "--ct", str(tmp_path / "one" / "ct.nii.gz")]
    args += ["--mask", str(tmp_path / "one" / "femur.nii.gz"), "--case-id", "P1", "--no-cache"]
    only = "original_firstorder_Mean,wavelet-LLH_firstorder_Mean,density_head_mean_hu"
    assert cli_main([*args, "--out", str(out), "--only-features", only]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == [
        *LEADING_COLUMNS,
        "original_firstorder_Mean",
        "wavelet-LLH_firstorder_Mean",
        "density_head_mean_hu",
    ]
    assert table["case_id"].tolist() == ["P1", "P1"] and set(table["status"]) == {"ok"}

    _write_case(tmp_path / "none", ct, with_label_blob(with_label_blob(labels, 1, 0), 2, 0))
    bad = ["extract-features", "--ct", str(tmp_path / "none" / "ct.nii.gz"), "--no-cache"]
    bad += ["--mask", str(tmp_path / "none" / "femur.nii.gz"), "--out", str(tmp_path / "x.csv")]
    assert cli_main([*bad, "--only-features", "original_firstorder_Mean"]) == 1
    assert "no features could be computed" in capsys.readouterr().err
    assert (tmp_path / "x.csv").exists()


def test_cohort_with_two_workers_matches_one(small_case, test_params, tmp_path):
    ct, labels = small_case
    lines = ["case_id,ct,mask"]
    for i in range(2):
        _write_case(tmp_path / f"p{i}", ct, labels)
        lines.append(f"p{i},p{i}/ct.nii.gz,p{i}/femur.nii.gz")
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("\n".join(lines) + "\n")
    serial = extract_cohort_features(cohort, params=test_params)
    parallel = extract_cohort_features(cohort, params=test_params, workers=2)
    pd.testing.assert_frame_equal(serial, parallel)
    assert serial["status"].tolist() == ["ok"] * 4
