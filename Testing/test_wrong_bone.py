"""Wrong-bone guard: no side is graded unless its mask shows a femoral head, neck and
trochanteric region, for both engines, on the real sample CT cut short and on phantoms whose
scan ends at or just below the femoral heads; complete scans still grade their femurs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from femurscreen import phantom
from femurscreen.errors import NoFemurError
from femurscreen.io.ctio import read_ct
from femurscreen.labels import LEFT, RIGHT
from femurscreen.segmentation import segment
from femurscreen.segmentation.flags import FLAG_HELP, FLAG_STATUS, primary_status, side_flags
from femurscreen.segmentation.guard import check_labels
from femurscreen.segmentation.postprocess import bounding_box

REAL_CT = Path(__file__).resolve().parents[1] / "FemurScreen/Resources/SampleData"
REAL_CT = REAL_CT / "totalseg_example_ct.nii.gz"
SEED, T_SCORE, SPACING = 3, -1.0, (1.5, 1.5, 1.5)
ENGINES = ("classical", "vbnet")


def graded(ct: sitk.Image, engine: str) -> dict[str, str]:
    """Status per side, {} when segment() finds no proximal femur at all."""
    try:
        result = segment(ct, engine=engine)
    except NoFemurError:
        return {}
    for side in result.sides.values():  # a side that is not graded always says why
        assert (side.status == "ok") == (side.reason is None), side
    return {name: side.status for name, side in result.sides.items()}


def assert_nothing_graded(statuses: dict[str, str]) -> None:
    assert "ok" not in statuses.values(), statuses


# ------------------------------------------------------------------------------ real CT


def _ends_at(ct: sitk.Image, z_mm: float) -> sitk.Image:
    """The CT with every slice below world z removed (the scan then ends at ``z_mm``)."""
    z0, dz = ct.GetOrigin()[2], ct.GetSpacing()[2]
    assert np.allclose(ct.GetDirection(), (-1, 0, 0, 0, -1, 0, 0, 0, 1))  # z index = world z
    return ct[:, :, int(np.ceil((z_mm - z0) / dz)) :]


@pytest.fixture(scope="module")
def real_head_tops(real_ct_classical_shared) -> dict[str, float]:
    tops = {name: side.head_top_z for name, side in real_ct_classical_shared.sides.items()}
    assert all(t is not None for t in tops.values())
    return tops  # type: ignore[return-value]


def test_real_ct_complete_right_graded_left_implant(real_ct_classical):
    result = real_ct_classical
    assert result.sides["right"].status == "ok"
    assert result.sides["left"].status == "implant"
    right = result.sides["right"].anatomy
    assert right is not None and right["verdict"] == "ok"
    assert 17.0 <= right["head_radius_mm"] <= 26.0  # the real right femoral head


@pytest.mark.parametrize(
    ("engine", "below_top_mm"), [("classical", 0.0), ("classical", 10.0), ("vbnet", 0.0)]
)
def test_real_ct_ending_at_the_head_tops_grades_nothing(
    real_ct, real_head_tops, engine, below_top_mm
):
    # the scan ends at the lower of the two head tops (or 10 mm below): no neck in view
    cut = _ends_at(real_ct, min(real_head_tops.values()) - below_top_mm)
    assert_nothing_graded(graded(cut, engine))


def test_vbnet_leak_into_the_pelvis_on_the_real_ct_is_not_graded(real_ct):
    # the demo VB-Net's right femur climbs from the head into the acetabulum and ilium
    result = segment(real_ct, engine="vbnet")
    right = result.sides["right"]
    assert right.status == "not_found"
    assert "pelvis_in_mask" in right.flags and "pelvis" in (right.reason or "")
    assert not (sitk.GetArrayViewFromImage(result.labels) == RIGHT).any()  # label removed
    assert result.sides["left"].status == "implant"


# ------------------------------------------------------------------------------- phantoms


def _phantom(kind: str, mm: float, direction: str = "lps") -> tuple[sitk.Image, sitk.Image]:
    """Case SEED with its field of view changed: ``ends`` mm below the lower head top,
    ``above`` (scan starts, at its lower end, mm above the higher head top) or ``top`` (scan
    starts, at its upper end, mm above the higher head top: hips fully in view)."""
    base = phantom.PhantomOptions(spacing=SPACING)
    anatomy, grid = phantom.prepare(SEED, T_SCORE, base)
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    world = grid.index_to_world(corners * (np.array(grid.size) - 1))
    lo, hi = world.min(axis=0), world.max(axis=0)
    tops = [anatomy.head_top_z(s) for s in ("left", "right")]
    if kind == "ends":
        lo[2] = min(tops) - mm
    elif kind == "above":
        lo[2] = max(tops) + mm
    elif kind == "top":
        hi[2] = max(tops) + mm
    options = phantom.PhantomOptions(
        spacing=SPACING, direction=direction, fov=(tuple(lo), tuple(hi))
    )
    ct, truth, _ = phantom.make_case(SEED, T_SCORE, options)
    return ct, truth


@pytest.fixture(scope="module")
def hips_in_view() -> tuple[sitk.Image, sitk.Image]:
    return _phantom("top", 20.0)


# the VB-Net takes 20-60 s per CT on 2 shared cores: it runs on one case of each kind
@pytest.mark.parametrize(
    ("engine", "below_top_mm"),
    [("classical", 0.0), ("classical", 5.0), ("classical", 15.0), ("vbnet", 5.0)],
)
def test_phantom_scan_ending_at_the_heads_grades_nothing(engine, below_top_mm):
    ct, _ = _phantom("ends", below_top_mm)
    assert_nothing_graded(graded(ct, engine))


@pytest.mark.parametrize("engine", ENGINES)
def test_phantom_scan_above_the_hips_has_no_femur(engine):
    ct, _ = _phantom("above", 10.0)  # iliac wings and sacrum only
    assert_nothing_graded(graded(ct, engine))


@pytest.mark.parametrize("engine", ENGINES)
def test_phantom_starting_just_above_the_hips_grades_both_femurs(engine, hips_in_view):
    ct, truth = hips_in_view
    result = segment(ct, engine=engine)
    labels = sitk.GetArrayViewFromImage(result.labels)
    ref = sitk.GetArrayViewFromImage(truth)
    for name, value in (("left", LEFT), ("right", RIGHT)):
        side = result.sides[name]
        assert side.status == "ok", (name, side)
        overlap = np.logical_and(labels == value, ref == value).sum()
        assert overlap > 0.9 * (ref == value).sum()  # the femur, not an iliac wing


def _truth_checks(truth: sitk.Image):
    array = sitk.GetArrayViewFromImage(truth)
    return check_labels(truth, {v: bounding_box(array == v) for v in (LEFT, RIGHT)})


def test_guard_measures_the_phantom_femur_on_any_grid(hips_in_view):
    _, truth = hips_in_view
    anatomy, _ = phantom.prepare(SEED, T_SCORE, phantom.PhantomOptions(spacing=SPACING))
    oblique_ct, oblique_truth = _phantom("top", 20.0, direction="oblique")
    assert not np.allclose(oblique_truth.GetDirection(), truth.GetDirection())
    for labels in (truth, oblique_truth):
        checks = _truth_checks(labels)
        for value, name in ((LEFT, "left"), (RIGHT, "right")):
            a = checks[value]
            femur = anatomy.femurs[name]
            assert a.verdict == "ok", (name, a)
            assert a.head_radius_mm == pytest.approx(femur.head_radius, abs=2.0)
            centre = anatomy.to_world(femur.head_center)
            assert np.linalg.norm(np.array(a.head_centre) - centre) < 3.0
            assert a.neck_shaft_angle_deg == pytest.approx(femur.neck_shaft_angle, abs=8.0)
            assert 20.0 <= a.head_shaft_offset_mm <= 70.0


def test_guard_rejects_a_head_without_its_neck(hips_in_view):
    # the truth mask cut 10 mm below the head centre inside a scan that goes on below:
    # a ball with no neck is not a proximal femur
    _, truth = hips_in_view
    anatomy, _ = phantom.prepare(SEED, T_SCORE, phantom.PhantomOptions(spacing=SPACING))
    array = sitk.GetArrayFromImage(truth)
    z = truth.GetOrigin()[2] + np.arange(array.shape[0]) * truth.GetSpacing()[2]
    centre_z = anatomy.to_world(anatomy.femurs["left"].head_center)[2]
    array[z < centre_z - 10.0] = 0
    head_only = sitk.GetImageFromArray(array)
    head_only.CopyInformation(truth)
    checks = _truth_checks(head_only)
    assert checks[LEFT].verdict == "not_femur"
    assert "neck" in (checks[LEFT].reason or "")


@pytest.fixture(scope="module", params=[3.0, 2.0], ids=["3mm", "2mm"])
def coarse_case(request):
    """A whole phantom on a coarse grid (3 mm like the bundled sample, 2 mm): its anatomy and
    its truth labels."""
    options = phantom.PhantomOptions(spacing=(request.param,) * 3)
    anatomy, _ = phantom.prepare(1, T_SCORE, options)
    _, truth, _ = phantom.make_case(1, T_SCORE, options)
    return anatomy, truth


def test_guard_grades_true_femurs_on_coarse_grids(coarse_case):
    # measured: neck ratio 0.65-0.73 on 3 mm and 2 mm truth masks (seeds 0, 1, 2, 5), head
    # centre within 1.5 mm of the truth: far inside the limits, so coarse grids are no reason
    # to loosen them
    anatomy, truth = coarse_case
    checks = _truth_checks(truth)
    for value, name in ((LEFT, "left"), (RIGHT, "right")):
        a = checks[value]
        assert a.verdict == "ok", (name, a)
        assert a.neck_ratio is not None and a.neck_ratio <= 0.85
        centre = anatomy.to_world(anatomy.femurs[name].head_center)
        assert np.linalg.norm(np.array(a.head_centre) - centre) < 3.0


def test_guard_rejects_a_femur_without_its_head(coarse_case):
    # the truth with each femoral head removed (neck stump, trochanters and shaft left): the
    # guard's deepest ball is then the greater trochanter, 30-40 mm lateral of the true head,
    # with no neck running infero-laterally from it. A segmentation that misses the head (the
    # classical engine on the bundled 3 mm phantom does) must not be graded.
    anatomy, truth = coarse_case
    array = sitk.GetArrayFromImage(truth)
    idx = np.argwhere(array > 0)
    world = np.array([truth.TransformIndexToPhysicalPoint([int(i) for i in p[::-1]]) for p in idx])
    for value, name in ((LEFT, "left"), (RIGHT, "right")):
        femur = anatomy.femurs[name]
        centre = anatomy.to_world(femur.head_center)
        head = np.linalg.norm(world - centre, axis=1) <= femur.head_radius + 2.0
        array[tuple(idx[head & (array[tuple(idx.T)] == value)].T)] = 0
    headless = sitk.GetImageFromArray(array)
    headless.CopyInformation(truth)
    checks = _truth_checks(headless)
    for value in (LEFT, RIGHT):
        assert checks[value].verdict == "not_femur", checks[value]
        assert "neck" in (checks[value].reason or "")


BUNDLED_PHANTOM = REAL_CT.parent / "femurscreen_phantom_ct.nii.gz"


def test_bundled_3mm_phantom_grades_both_femurs_with_the_classical_engine():
    # the phantom's coarse trabecular texture used to collapse every coarse head fit to 12 mm,
    # leaving only the trochanters (masks of 61 and 66 ml that the guard rightly rejected)
    result = segment(read_ct(BUNDLED_PHANTOM), engine="classical")
    for name, side in result.sides.items():
        assert side.status == "ok", (name, side.reason)
        assert 21.0 <= side.anatomy["head_radius_mm"] <= 28.0  # phantom heads are 21-27 mm


# ---------------------------------------------------------------------------------- flags


def test_guard_flags_block_grading_with_plain_words():
    for flag in ("not_femur", "pelvis_in_mask", "neck_not_in_view"):
        assert flag in FLAG_HELP and "not graded" in FLAG_HELP[flag]
    assert FLAG_STATUS["neck_not_in_view"] == "truncated"
    assert primary_status(True, ["neck_not_in_view", "distal_fov_short"]) == "truncated"
    assert primary_status(True, ["pelvis_in_mask"]) == "not_found"
    assert primary_status(True, ["review_segmentation"]) == "ok"  # informative only
    flags = side_flags(
        volume_ml=150.0, metal_mm3=0.0, geometry_flags=[], guard_flag="neck_not_in_view"
    )
    assert flags == ["neck_not_in_view"]
    with pytest.raises(ValueError, match="unknown guard flag"):
        side_flags(volume_ml=150.0, metal_mm3=0.0, geometry_flags=[], guard_flag="oops")
