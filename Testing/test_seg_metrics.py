"""Segmentation metrics (Dice, HD95, volume difference) and the ``evaluate-seg`` verb."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from femurscreen.cli import main
from femurscreen.evaluation.seg_metrics import (
    compare_labels,
    dice,
    evaluate_seg,
    hd95,
    side_metrics,
)


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    """Boolean ball (array order z, y, x) with centre/radius in mm."""
    grids = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    dist2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
    return dist2 <= radius**2


def label_image(array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def test_dice_identical_disjoint_and_empty():
    a = ball((40, 40, 40), (20, 20, 20), 10)
    assert dice(a, a) == pytest.approx(1.0)
    b = np.zeros_like(a)
    b[:5, :5, :5] = True
    assert dice(a, b) == 0.0
    assert math.isnan(dice(np.zeros_like(a), np.zeros_like(a)))
    # VB-Net validation's convention: nothing to find, nothing found is a perfect score
    assert dice(np.zeros_like(a), np.zeros_like(a), empty=1.0) == 1.0
    assert dice(np.zeros_like(a), a, empty=1.0) == 0.0
    # label maps work directly: anything non-zero is inside
    assert dice(a.astype(np.uint8) * 2, a) == pytest.approx(1.0)
    half = a.copy()
    half[20:] = False  # half the ball: Dice = 2 * |half| / (|a| + |half|)
    expected = 2 * half.sum() / (a.sum() + half.sum())
    assert dice(half, a) == pytest.approx(expected)


@pytest.mark.parametrize("shift_mm, spacing", [(5.0, (1.0, 1.0, 1.0)), (4.0, (2.0, 1.0, 1.0))])
def test_hd95_of_a_shifted_sphere_matches_geometry(shift_mm, spacing):
    # a point on a sphere at angle t from the shift direction lies |shift * cos t| from the
    # shifted sphere; cos t is uniform on [-1, 1] over the surface, so the 95th percentile of
    # the distances is 0.95 * shift
    shape = tuple(int(64 / s) for s in spacing)
    a = ball(shape, (32.0, 32.0, 32.0), 20.0, spacing)
    b = ball(shape, (32.0 + shift_mm, 32.0, 32.0), 20.0, spacing)
    value = hd95(a, b, spacing)
    assert value == pytest.approx(0.95 * shift_mm, abs=0.6)
    assert hd95(a, a, spacing) == pytest.approx(0.0)
    assert hd95(a, np.zeros_like(a), spacing) == math.inf


def test_volume_difference_in_ml_and_percent():
    spacing = (2.0, 2.0, 2.0)  # 8 mm^3 per voxel
    ref = np.zeros((20, 20, 20), dtype=bool)
    ref[:10, :10, :10] = True  # 1000 voxels = 8 ml
    pred = np.zeros_like(ref)
    pred[:12, :10, :10] = True  # 1200 voxels = 9.6 ml
    m = side_metrics(pred, ref, spacing)
    assert m.volume_ref_ml == pytest.approx(8.0)
    assert m.volume_pred_ml == pytest.approx(9.6)
    assert m.volume_diff_ml == pytest.approx(1.6)
    assert m.volume_diff_pct == pytest.approx(20.0)


def test_compare_labels_per_side_and_other_grid():
    ref = np.zeros((30, 30, 60), dtype=np.uint8)
    ref[ball(ref.shape, (15, 15, 15), 8)] = 2  # right femur at low x
    ref[ball(ref.shape, (15, 15, 45), 8)] = 1
    pred = ref.copy()
    pred[pred == 1] = 0  # left side missed
    metrics = compare_labels(label_image(pred), label_image(ref))
    assert metrics["right"].dice == pytest.approx(1.0)
    assert metrics["left"].dice == 0.0
    assert metrics["left"].volume_diff_pct == pytest.approx(-100.0)
    # a prediction on a finer grid is resampled onto the reference first
    fine = sitk.Resample(
        label_image(ref),
        [120, 60, 60],  # x, y, z: the same extent at half the spacing
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        (0.0, 0.0, 0.0),
        (0.5, 0.5, 0.5),
        (1, 0, 0, 0, 1, 0, 0, 0, 1),
        0,
    )
    again = compare_labels(fine, label_image(ref))
    assert again["left"].dice > 0.97 and again["right"].dice > 0.97


def _write_case(folder, name, array, spacing=(1.0, 1.0, 1.0)):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    sitk.WriteImage(label_image(array, spacing), str(path))
    return path


def test_evaluate_seg_files_and_folders(tmp_path, capsys):
    ref = np.zeros((24, 24, 48), dtype=np.uint8)
    ref[ball(ref.shape, (12, 12, 12), 7)] = 2
    ref[ball(ref.shape, (12, 12, 36), 7)] = 1
    shifted = np.roll(ref, 2, axis=2)

    # two files
    p = _write_case(tmp_path / "p", "a.nii.gz", shifted)
    r = _write_case(tmp_path / "r", "a.nii.gz", ref)
    out = tmp_path / "m.json"
    assert main(["evaluate-seg", "--pred", str(p), "--ref", str(r), "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    left = report["cases"][0]["sides"]["left"]
    assert 0.6 < left["dice"] < 1.0
    assert left["hd95_mm"] == pytest.approx(2.0, abs=0.6)
    assert "mean" in capsys.readouterr().out

    # folders: phantom layout (case/ct.nii.gz + case/femur.nii.gz) vs flat predictions
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    for case, pred in (("c1", ref), ("c2", shifted)):
        _write_case(refs / case, "femur.nii.gz", ref)
        _write_case(refs / case, "ct.nii.gz", ref.astype(np.int16) * 500 - 100)
        _write_case(preds, f"{case}.nii.gz", pred)
    _write_case(refs / "c3", "femur.nii.gz", ref)  # no prediction: reported, not fatal
    report = evaluate_seg(preds, refs)
    assert [c["case"] for c in report["cases"]] == ["c1", "c2"]
    assert report["cases"][0]["sides"]["right"]["dice"] == pytest.approx(1.0)
    assert report["unmatched_ref"] == ["c3"]
    assert report["mean"]["all"]["n"] == 4
    mean_dice = np.mean([c["sides"][s]["dice"] for c in report["cases"] for s in ("left", "right")])
    assert report["mean"]["all"]["dice"] == pytest.approx(mean_dice, abs=1e-3)


def test_evaluate_seg_refuses_unmatched_folders(tmp_path, capsys):
    ref = np.zeros((8, 8, 8), dtype=np.uint8)
    ref[2:5, 2:5, 2:5] = 1
    _write_case(tmp_path / "p", "x.nii.gz", ref)
    _write_case(tmp_path / "r", "y.nii.gz", ref)
    code = main(["evaluate-seg", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r")])
    assert code == 1
    assert "no case has both" in capsys.readouterr().err
