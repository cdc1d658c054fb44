"""Segmentation pipeline: the classical engine on the real sample CT, orientations, thick
slices, the no-femur path, post-processing rules, flags, the registry and the CLI verb."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from femurscreen.cli import main
from femurscreen.errors import ModelError, NoFemurError
from femurscreen.evaluation.seg_metrics import dice
from femurscreen.io.ctio import read_ct
from femurscreen.labels import LEFT, RIGHT
from femurscreen.segmentation import DEFAULT_ENGINE, segment
from femurscreen.segmentation.flags import primary_status, side_flags
from femurscreen.segmentation.pipeline import get_engine, resolve_engine
from femurscreen.segmentation.postprocess import (
    CUT_BELOW_LESSER_TROCHANTER_MM,
    lesser_trochanter_bottom,
    postprocess,
)

SAMPLE = Path(__file__).resolve().parents[1] / "FemurScreen" / "Resources" / "SampleData"
REAL_CT = SAMPLE / "totalseg_example_ct.nii.gz"
REAL_DICOM = SAMPLE / "totalseg_example_ct_dicom"


def world_centroid_x(labels: sitk.Image, value: int) -> float:
    idx = np.argwhere(sitk.GetArrayViewFromImage(labels) == value)[:, ::-1]  # x, y, z index
    direction = np.array(labels.GetDirection()).reshape(3, 3)
    world = np.array(labels.GetOrigin()) + (idx * np.array(labels.GetSpacing())) @ direction.T
    return float(world[:, 0].mean())


def same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetOrigin(), b.GetOrigin())
        and np.allclose(a.GetSpacing(), b.GetSpacing())
        and np.allclose(a.GetDirection(), b.GetDirection())
    )


# ------------------------------------------------------------------------------ real CT


def test_real_ct_both_sides_found_left_implant_right_graded(real_ct, real_ct_classical):
    left, right = real_ct_classical.sides["left"], real_ct_classical.sides["right"]
    assert left.status == "implant" and "implant" in left.flags
    # the scan ends near the intertrochanteric level: flagged, but still graded
    assert right.status == "ok"
    assert "truncated" not in right.flags
    assert 60.0 < right.volume_ml < 160.0  # head, neck and trochanters, cut by the FOV
    assert 60.0 < left.volume_ml < 180.0
    labels = real_ct_classical.labels
    assert same_geometry(labels, real_ct)
    assert labels.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) == {0, LEFT, RIGHT}
    # this file's direction is diag(-1, -1, 1): world +x is toward array index 0
    assert world_centroid_x(labels, RIGHT) < 0.0 < world_centroid_x(labels, LEFT)


def test_real_ct_implant_voxels_are_in_the_left_label(real_ct, real_ct_classical):
    ct = sitk.GetArrayViewFromImage(real_ct)
    labels = sitk.GetArrayViewFromImage(real_ct_classical.labels)
    metal = ct > 2000
    assert metal.sum() > 50
    assert (labels[metal] == LEFT).mean() > 0.9


def test_flipped_file_gives_the_same_femurs(real_ct, real_ct_classical):
    array = sitk.GetArrayFromImage(real_ct)[:, :, ::-1]  # flip x of the array ...
    flipped = sitk.GetImageFromArray(np.ascontiguousarray(array))
    flipped.SetSpacing(real_ct.GetSpacing())
    direction = np.array(real_ct.GetDirection()).reshape(3, 3) @ np.diag([-1.0, 1.0, 1.0])
    flipped.SetDirection(direction.ravel().tolist())  # ... and the direction: same world image
    flipped.SetOrigin(real_ct.TransformIndexToPhysicalPoint([real_ct.GetSize()[0] - 1, 0, 0]))
    result = segment(flipped, engine="classical")
    assert world_centroid_x(result.labels, LEFT) > 0.0 > world_centroid_x(result.labels, RIGHT)
    back = sitk.GetArrayFromImage(result.labels)[:, :, ::-1]
    base = sitk.GetArrayViewFromImage(real_ct_classical.labels)
    for value in (LEFT, RIGHT):
        assert dice(back == value, base == value) > 0.95


def _rotated(image: sitk.Image, degrees: float, axis=(0.0, 0.0, 1.0)) -> sitk.Image:
    """The same world content on an oblique grid (direction rotated about the image centre)."""
    rotation = sitk.VersorRigid3DTransform()
    rotation.SetRotation(axis, np.deg2rad(degrees))
    direction = np.array(rotation.GetMatrix()).reshape(3, 3) @ np.array(
        image.GetDirection()
    ).reshape(3, 3)
    size = np.array(image.GetSize())
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))
    reference = sitk.Image(image.GetSize(), sitk.sitkInt16)
    reference.SetSpacing(image.GetSpacing())
    reference.SetDirection(direction.ravel().tolist())
    reference.SetOrigin((centre - direction @ ((size - 1) / 2 * image.GetSpacing())).tolist())
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1024)


def test_oblique_file_keeps_sides_and_shape(real_ct, real_ct_classical):
    oblique = _rotated(real_ct, 3.0)
    assert not np.allclose(oblique.GetDirection(), real_ct.GetDirection())
    result = segment(oblique, engine="classical")
    assert world_centroid_x(result.labels, LEFT) > 0.0 > world_centroid_x(result.labels, RIGHT)
    back = sitk.GetArrayFromImage(
        sitk.Resample(result.labels, real_ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    )
    base = sitk.GetArrayViewFromImage(real_ct_classical.labels)
    for value in (LEFT, RIGHT):
        assert dice(back == value, base == value) > 0.85


def test_five_mm_slices_still_find_both_sides(real_ct):
    size = real_ct.GetSize()
    reference = sitk.Image([size[0], size[1], int(size[2] * 3 / 5)], sitk.sitkInt16)
    reference.SetSpacing((3.0, 3.0, 5.0))
    reference.SetDirection(real_ct.GetDirection())
    reference.SetOrigin(real_ct.GetOrigin())
    # a 5 mm reconstruction averages along z: blur before sampling
    blurred = sitk.SmoothingRecursiveGaussian(sitk.Cast(real_ct, sitk.sitkFloat32), (0.1, 0.1, 1.6))
    thick = sitk.Cast(
        sitk.Resample(blurred, reference, sitk.Transform(), sitk.sitkLinear, -1024), sitk.sitkInt16
    )
    result = segment(thick, engine="classical")
    assert result.sides["left"].status == "implant"
    assert result.sides["right"].status == "ok"
    assert world_centroid_x(result.labels, LEFT) > 0.0 > world_centroid_x(result.labels, RIGHT)


# ------------------------------------------------------------------------ no femur in view


def test_upper_abdomen_dicom_has_no_femur():
    ct = read_ct(REAL_DICOM)
    with pytest.raises(NoFemurError, match="check that the scan covers the hips"):
        segment(ct, engine="classical")


def test_cli_segment_no_femur_exits_1_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(REAL_DICOM), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no proximal femur found" in err and str(REAL_DICOM) in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_segment_writes_labels_with_the_ct_geometry(tmp_path, capsys, real_ct):
    out = tmp_path / "sub" / "mask.nrrd"
    assert main(["segment", str(REAL_CT), "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["engine"] == "classical"
    assert report["sides"]["left"]["status"] == "implant"
    assert report["sides"]["right"]["status"] == "ok"
    assert "100%" in captured.err  # progress on stderr, results on stdout
    written = sitk.ReadImage(str(out))
    assert same_geometry(written, real_ct)
    assert [p.name for p in out.parent.iterdir()] == ["mask.nrrd"]  # no temporary left


@pytest.mark.parametrize("n_slices", [1, 2])
def test_a_slice_or_two_of_the_hips_is_refused_clearly(real_ct, n_slices):
    lps = sitk.DICOMOrient(real_ct, "LPS")
    k = lps.GetSize()[2] // 2  # through the femoral heads of the sample CT
    with pytest.raises(NoFemurError, match="too little to hold a femoral head"):
        segment(lps[:, :, k : k + n_slices], engine="classical")


def test_cli_segment_two_slices_exits_1_and_writes_nothing(tmp_path, capsys, real_ct):
    # a single slice is refused when read (not a 3D volume); two slices are a volume
    lps = sitk.DICOMOrient(real_ct, "LPS")
    k = lps.GetSize()[2] // 2
    slab = tmp_path / "in" / "two_slices.nii.gz"
    slab.parent.mkdir()
    sitk.WriteImage(lps[:, :, k : k + 2], str(slab))
    out = tmp_path / "out" / "mask.nii.gz"
    assert main(["segment", str(slab), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "too little to hold a femoral head" in err and "Traceback" not in err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def _roof_slice_above(ct: sitk.Image, labels: np.ndarray, value: int) -> tuple[int, int]:
    """(label's top slice, acetabular roof slice) of one hip on this axis-aligned CT.

    The roof is measured from the CT alone: in a 15 x 15 mm column over the head (centred on
    the label's top 20 mm), the brightest slice in the 45 mm above the label's centre there is
    the dense acetabular roof (sourcil) that caps the head; on the sample CT's right hip it
    averages 475 HU against 220-260 HU in the slices around it.
    """
    array = sitk.GetArrayViewFromImage(ct)
    dz = ct.GetSpacing()[2]
    idx = np.argwhere(labels == value)
    top = int(idx[:, 0].max())
    head = idx[idx[:, 0] >= top - int(round(20.0 / dz))]
    zc, yc, xc = np.round(head.mean(axis=0)).astype(int)
    h = int(round(7.5 / ct.GetSpacing()[0]))
    column = array[:, yc - h : yc + h + 1, xc - h : xc + h + 1].mean(axis=(1, 2))
    zs = np.arange(zc, min(array.shape[0], zc + int(round(45.0 / dz)) + 1))
    return top, int(zs[np.argmax(column[zs])])


def test_real_ct_right_femur_stops_under_the_acetabular_roof(real_ct, real_ct_classical):
    """Issue 11: the head label must not fill the acetabular roof, and must hold the whole head
    (it reaches the slice right under the roof: at 3 mm the head top and the roof are one
    slice apart, as the axial and coronal overlays show)."""
    labels = sitk.GetArrayViewFromImage(real_ct_classical.labels)
    assert np.allclose(real_ct.GetDirection(), (-1, 0, 0, 0, -1, 0, 0, 0, 1))  # z index = up
    top, roof = _roof_slice_above(real_ct, labels, RIGHT)
    assert top == roof - 1, (top, roof)


# ------------------------------------------------------------------------------- phantoms


def test_phantom_dice_against_ground_truth():
    phantom = pytest.importorskip("femurscreen.phantom")
    for seed, t_score in ((3, -1.5), (8, 0.5)):
        options = phantom.PhantomOptions(spacing=(1.5, 1.5, 1.5))
        ct, truth, _ = phantom.make_case(seed, t_score, options)
        result = segment(ct, engine="classical")
        pred = sitk.GetArrayViewFromImage(result.labels)
        ref = sitk.GetArrayViewFromImage(truth)
        for value in (LEFT, RIGHT):
            assert dice(pred == value, ref == value) > 0.9, (seed, value)


def test_phantom_cut_through_one_trochanter_keeps_both_hips():
    # the field of view ends inside the body on the right (truncated femur): the body is cut
    # by the image's side, yet both hips are in view, so the midline is not that border
    phantom = pytest.importorskip("femurscreen.phantom")
    options = phantom.PhantomOptions(spacing=(1.5, 1.5, 1.5), implant="left", truncate="right")
    ct, truth, _ = phantom.make_case(11, -2.0, options)
    result = segment(ct, engine="classical")
    pred = sitk.GetArrayViewFromImage(result.labels)
    ref = sitk.GetArrayViewFromImage(truth)
    for value in (LEFT, RIGHT):
        assert dice(pred == value, ref == value) > 0.8, value


def test_sheetness_marks_bright_plates_and_dark_gaps():
    """Krčah's sheetness on a synthetic stack (1 mm): +1 inside a 2 mm cortex-like plate, clearly
    negative in a 2 mm dark gap between two bone slabs (a joint space), 0 in flat soft tissue;
    computing it only where needed gives the same values there."""
    from femurscreen.segmentation.classical.femur import sheetness

    vol = np.full((40, 40, 40), 40.0, np.float32)
    vol[8:10] = 1000.0  # the plate
    vol[20:27] = 600.0  # two slabs with a gap at 27-28
    vol[29:36] = 600.0
    full = sheetness(vol, 1.0)
    assert full[8:10, 20, 20].min() > 0.9
    assert full[27:29, 20, 20].max() < -0.6
    assert abs(full[15, 20, 20]) < 0.05
    where = np.zeros(vol.shape, dtype=bool)
    where[25:32] = True
    part = sheetness(vol, 1.0, where)
    assert np.allclose(part[where], full[where]) and not part[~where].any()


def test_hard_joint_phantom_femur_stops_at_the_joint(monkeypatch):
    """Issue 11: a joint as hard as on real CT (no joint space at all, a dense roof right above
    a thin-shelled head, pelvic bone as dense as the femur) on the real CT's 3 mm grid: no femur
    label above the true head top (nothing of the acetabulum), the femur found, and the
    min-cut at the joint does better than the watershed alone (measured Dice 0.902 / 0.900
    without it, 0.910 / 0.909 with it)."""
    phantom = pytest.importorskip("femurscreen.phantom")
    from femurscreen.phantom import case
    from femurscreen.segmentation.classical import femur

    monkeypatch.setattr(case, "HARD_JOINT_GAP_MM", (0.0, 0.0))
    options = phantom.PhantomOptions(spacing=(3.0, 3.0, 3.0), joint="hard")
    ct, truth, info = phantom.make_case(2000, -2.0, options)
    assert info["joint"] == "hard"
    assert np.allclose(ct.GetDirection(), np.eye(3).ravel())  # LPS: z index = up
    ref = sitk.GetArrayFromImage(truth)
    assert femur.JOINT_MINCUT  # the default engine cuts
    pred = sitk.GetArrayFromImage(segment(ct, engine="classical").labels)
    monkeypatch.setattr(femur, "JOINT_MINCUT", False)
    without = sitk.GetArrayFromImage(segment(ct, engine="classical").labels)
    for value in (LEFT, RIGHT):
        top = int(np.argwhere(ref == value)[:, 0].max())
        assert not (pred[top + 1 :] == value).any(), value  # nothing above the head top
        score = dice(pred == value, ref == value)
        assert score > 0.9, value
        assert score > dice(without == value, ref == value) + 0.004, value


# ------------------------------------------------------------------- post-processing rules


def _cylinder_labels(n_z: int, *, lt_at: int | None, top_margin: int = 5) -> sitk.Image:
    """A synthetic 'femur' on a 1 mm grid: a round head (r 22) on a shaft (r 14), with an
    optional medial bump (the lesser trochanter) whose bottom is at slice ``lt_at``."""
    shape = (n_z, 80, 80)
    z, y, x = np.indices(shape)
    top = n_z - top_margin
    head_c = top - 22
    mask = (z - head_c) ** 2 + (y - 40) ** 2 + (x - 40) ** 2 <= 22**2
    mask |= ((y - 40) ** 2 + (x - 40) ** 2 <= 14**2) & (z <= head_c)
    if lt_at is not None:
        mask |= ((y - 40) ** 2 + (x - 52) ** 2 <= 9**2) & (z >= lt_at) & (z <= lt_at + 20)
    image = sitk.GetImageFromArray(mask.astype(np.uint8) * LEFT)
    image.SetOrigin((0.0, 0.0, -100.0))
    return image


def test_cut_below_the_lesser_trochanter():
    image = _cylinder_labels(200, lt_at=90)
    out, info = postprocess(image)
    geo = info[LEFT]
    lt_z = -100.0 + 90
    assert geo.lesser_trochanter_z == pytest.approx(lt_z, abs=4.0)
    assert geo.cut_z == pytest.approx(geo.lesser_trochanter_z - CUT_BELOW_LESSER_TROCHANTER_MM)
    kept = np.argwhere(sitk.GetArrayViewFromImage(out) == LEFT)[:, 0]
    assert kept.min() - 100.0 == pytest.approx(geo.cut_z, abs=1.0)
    assert geo.flags == []  # bottom of the femur is inside the image: nothing to flag


def test_short_field_of_view_is_flagged_not_cut():
    # the image starts 15 mm below the lesser trochanter: the cut level is outside the scan
    image = _cylinder_labels(200, lt_at=90)[:, :, 75:]
    out, info = postprocess(image)
    geo = info[LEFT]
    assert geo.cut_z is None
    assert "distal_fov_short" in geo.flags and "truncated" not in geo.flags
    assert (sitk.GetArrayViewFromImage(out) == LEFT).sum() == (
        sitk.GetArrayViewFromImage(image) == LEFT
    ).sum()


def test_shaft_leaving_the_image_below_the_cut_is_not_truncation():
    image = _cylinder_labels(200, lt_at=90)
    array = sitk.GetArrayFromImage(image)
    array[:40, 40, :] = LEFT  # a strip to the in-plane border, 20 mm below the cut level
    leaky = sitk.GetImageFromArray(array)
    leaky.CopyInformation(image)
    _, info = postprocess(leaky)
    assert info[LEFT].cut_z is not None
    assert info[LEFT].flags == []


def test_truncation_flags_for_head_and_in_plane_borders():
    top_cut = _cylinder_labels(200, lt_at=90)[:, :, :185]  # head top outside the image
    assert "truncated" in postprocess(top_cut)[1][LEFT].flags
    side_cut = _cylinder_labels(200, lt_at=90)[:55, :, :]  # x border through head and shaft
    assert "truncated" in postprocess(side_cut)[1][LEFT].flags
    within_head = _cylinder_labels(200, lt_at=90)[:, :, 150:]  # scan starts inside the head
    assert "truncated" in postprocess(within_head)[1][LEFT].flags


def test_postprocess_keeps_largest_component_and_fills_holes():
    array = np.zeros((40, 40, 40), dtype=np.uint8)
    array[5:35, 10:30, 10:30] = RIGHT
    array[15:25, 15:25, 15:25] = 0  # a cavity
    array[1:3, 1:3, 1:3] = RIGHT  # a stray island
    out, info = postprocess(sitk.GetImageFromArray(array))
    result = sitk.GetArrayViewFromImage(out)
    assert result[20, 20, 20] == RIGHT
    assert result[2, 2, 2] == 0
    assert info[RIGHT].found and not info[LEFT].found


def test_no_lesser_trochanter_when_the_scan_ends_in_the_trochanteric_region():
    # area largest at the bottom of the scan, falling toward the head: no bump above a shaft
    z = np.arange(0.0, 90.0)
    area = np.linspace(2200.0, 900.0, z.size)
    assert lesser_trochanter_bottom(z, area, head_top=90.0) is None
    # the same femur with a shaft and a bump: found at the bump's bottom
    z = np.arange(-80.0, 90.0)
    area = np.where(z < 0, 650.0, 2200.0 - 13.0 * z)
    area[(z >= -30) & (z < 0)] += 250.0
    assert lesser_trochanter_bottom(z, area, head_top=90.0) == pytest.approx(-30.0, abs=3.0)
    # a mask down to the knee: the condyles far below do not spoil the shaft baseline
    z = np.arange(-450.0, 90.0)
    area = np.where(z < 0, 650.0, 2200.0 - 13.0 * z)
    area[(z >= -30) & (z < 0)] += 250.0
    area[z < -380] = 3000.0
    assert lesser_trochanter_bottom(z, area, head_top=90.0) == pytest.approx(-30.0, abs=3.0)


# ---------------------------------------------------------------------------------- flags


def test_status_precedence():
    assert primary_status(False, []) == "not_found"
    assert primary_status(True, ["implant", "truncated"]) == "implant"
    assert primary_status(True, ["truncated", "distal_fov_short"]) == "truncated"
    assert primary_status(True, ["distal_fov_short", "small"]) == "ok"
    flags = side_flags(volume_ml=20.0, metal_mm3=500.0, geometry_flags=["distal_fov_short"])
    assert flags == ["implant", "distal_fov_short", "small"]
    assert side_flags(volume_ml=150.0, metal_mm3=100.0, geometry_flags=[]) == []


# ------------------------------------------------------------------------------- registry


def test_engine_registry(monkeypatch):
    assert resolve_engine("default") == DEFAULT_ENGINE == "classical"
    assert type(get_engine("classical")).__name__ == "ClassicalEngine"
    with pytest.raises(ModelError, match="unknown segmentation engine"):
        resolve_engine("magic")
    # an unavailable VB-Net engine is reported as such, with the way out
    import femurscreen.segmentation.pipeline as pipeline

    pipeline._vbnet_engine.cache_clear()
    monkeypatch.setitem(sys.modules, "femurscreen.segmentation.vbnet", None)
    with pytest.raises(ModelError, match="VB-Net segmentation engine cannot be loaded") as info:
        get_engine("vbnet")
    assert "--engine classical" in info.value.message
    pipeline._vbnet_engine.cache_clear()


# Held-out phantoms (cohort seed 2000) whose correctly fitted heads the roof check used to move
# 5-9 mm down: it took the head's own dense trabeculae, or a shoulder on the rising edge of a
# blurred joint, for the acetabular roof (phantom Dice 0.973 -> 0.969 until it was fixed).
ROOF_CASES = [
    (9107949853350265002, -1.163, "case 14"),  # cohort seed 2000, case_0014 (both sides)
    (1308709304020982223, -3.273, "case 16"),  # case_0016 (left: a shoulder on the edge)
]


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "t_score", "name"), ROOF_CASES, ids=[c[2] for c in ROOF_CASES])
def test_roof_check_leaves_a_true_centred_phantom_head_in_place(seed, t_score, name):
    from femurscreen.phantom.case import PhantomOptions, make_case
    from femurscreen.segmentation.classical import heads
    from femurscreen.segmentation.classical.grid import lattice_grid, resample
    from scipy import ndimage as ndi

    ct, _, info = make_case(seed, t_score, PhantomOptions())
    for side, lateral in (("left", 1.0), ("right", -1.0)):
        centre = np.asarray(info[f"{side}_head_center"], dtype=float)
        radius = float(info[f"{side}_head_radius"])
        grid = lattice_grid(ct, 1.2, (centre - 45.0, centre + 45.0))
        crop = resample(ct, grid)
        smooth = ndi.gaussian_filter(np.clip(crop, *heads.EDGE_CLIP_HU), heads.SCAN_SIGMA_MM / 1.2)
        moved = heads.below_roof(smooth, grid, centre, radius, lateral, raw=crop) - centre
        assert np.linalg.norm(moved) < heads.ROOF_MIN_DEPTH_MM, (name, side, moved)
