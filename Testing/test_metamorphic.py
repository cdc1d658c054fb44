"""Metamorphic tests of the default segmentation engine on the real sample CT.

No reference mask is needed: the same patient, shown differently (resampled finer or to thick
slices, rotated, on an oblique grid, stored in another index order, or with only one hip in
view), must give the same femur in world space. Each variant's labels are brought back onto
the original CT's grid (nearest neighbour; for rotated content through the inverse rotation)
and compared per side with the labels of the CT as shipped.

The 1 mm and 1.5 mm variants are made from the CT cropped to the hips (a band from below the
scan's floor to 90 mm above the heads), so that 1 mm sampling holds 14 million voxels rather
than 37 million; the crop is a metamorphic change of its own (less field of view).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import SimpleITK as sitk
from femurscreen.evaluation.seg_metrics import dice
from femurscreen.labels import LEFT, RIGHT
from femurscreen.segmentation import DEFAULT_ENGINE, segment

HIPS_ABOVE_FLOOR_MM = 135.0  # the crop for fine resampling: scan floor to 90 mm above the heads

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------ variants


def _world_centre(image: sitk.Image) -> np.ndarray:
    size = np.array(image.GetSize())
    return np.array(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))


def hips(image: sitk.Image) -> sitk.Image:
    """The CT from its lowest slice up to ``HIPS_ABOVE_FLOOR_MM`` (world z; axis-aligned CT)."""
    lps = sitk.DICOMOrient(image, "LPS")
    n = int(round(HIPS_ABOVE_FLOOR_MM / lps.GetSpacing()[2])) + 1
    return lps[:, :, : min(n, lps.GetSize()[2])]


def resampled(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    """The same world box sampled at ``spacing`` (blurred first when a voxel gets thicker)."""
    old = np.array(image.GetSpacing())
    new = np.array(spacing, dtype=float)
    size = np.maximum(1, np.round((np.array(image.GetSize()) - 1) * old / new).astype(int) + 1)
    reference = sitk.Image([int(n) for n in size], sitk.sitkInt16)
    reference.SetSpacing(new.tolist())
    reference.SetDirection(image.GetDirection())
    reference.SetOrigin(image.GetOrigin())
    source = sitk.Cast(image, sitk.sitkFloat32)
    sigma = np.sqrt(np.maximum(new**2 - old**2, 0.0)) / 2.355  # a thicker reconstruction
    if sigma.max() > 0:
        source = sitk.SmoothingRecursiveGaussian(source, np.maximum(sigma, 1e-3).tolist())
    out = sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, -1024.0)
    return sitk.Cast(sitk.Round(out), sitk.sitkInt16)


def on_rotated_grid(image: sitk.Image, rotation: np.ndarray) -> sitk.Image:
    """The same world content on a grid whose axes are turned by ``rotation`` (oblique file).

    The grid is made large enough to hold the whole original field of view, so that no part
    of the femur is lost at a corner (that would be a different scan, not a different grid).
    """
    direction = rotation @ np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    extent = (np.array(image.GetSize()) - 1) * spacing
    old = np.array(image.GetDirection()).reshape(3, 3)
    # extent of the original box along the new axes
    span = np.abs(direction.T @ old) @ extent
    size = np.ceil(span / spacing).astype(int) + 1
    reference = sitk.Image([int(n) for n in size], sitk.sitkInt16)
    reference.SetSpacing(spacing.tolist())
    reference.SetDirection(direction.ravel().tolist())
    reference.SetOrigin((_world_centre(image) - direction @ ((size - 1) / 2 * spacing)).tolist())
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1024.0)


def rotation_matrix(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    transform = sitk.VersorRigid3DTransform()
    transform.SetRotation(axis, float(np.deg2rad(degrees)))
    return np.array(transform.GetMatrix()).reshape(3, 3)


def content_rotation(image: sitk.Image, degrees: float) -> sitk.Euler3DTransform:
    """A rotation of the patient about the world z axis through the image centre."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(_world_centre(image).tolist())
    transform.SetRotation(0.0, 0.0, float(np.deg2rad(degrees)))
    return transform


def index_flipped(image: sitk.Image) -> sitk.Image:
    """Array x and z reversed, direction reversed with them: the same world image."""
    array = sitk.GetArrayFromImage(image)[::-1, :, ::-1]
    out = sitk.GetImageFromArray(np.ascontiguousarray(array))
    out.SetSpacing(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3) @ np.diag([-1.0, 1.0, -1.0])
    out.SetDirection(direction.ravel().tolist())
    size = image.GetSize()
    out.SetOrigin(image.TransformIndexToPhysicalPoint([size[0] - 1, 0, size[2] - 1]))
    return out


def right_half(image: sitk.Image) -> sitk.Image:
    """Only the patient's right side (world x below the body's midline): one hip in view."""
    lps = sitk.DICOMOrient(image, "LPS")
    array = sitk.GetArrayViewFromImage(lps)
    body = (array > -400).sum(axis=(0, 1)).astype(float)
    xs = lps.GetOrigin()[0] + np.arange(lps.GetSize()[0]) * lps.GetSpacing()[0]
    midline = float((body * xs).sum() / body.sum())
    n = int(np.searchsorted(xs, midline))
    return lps[:n, :, :]


def to_reference(
    labels: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None
) -> np.ndarray:
    """A variant's labels on the original grid (nearest neighbour), as an array (z, y, x).

    ``transform`` maps a point of the original patient to where it lies in the variant (the
    content rotation the variant was made with), so resampling through it undoes the rotation.
    """
    moved = sitk.Resample(
        labels, reference, transform or sitk.Transform(), sitk.sitkNearestNeighbor, 0
    )
    return sitk.GetArrayFromImage(moved)


Variant = Callable[[sitk.Image], tuple[sitk.Image, sitk.Transform | None]]


def _rotated_content(degrees: float) -> Variant:
    def make(ct: sitk.Image) -> tuple[sitk.Image, sitk.Transform | None]:
        transform = content_rotation(ct, degrees)
        # the variant shows the patient turned by +degrees: a patient point x of the
        # original lies at T(x) in the variant, so the variant samples the original at T^-1
        moved = sitk.Resample(ct, ct, transform.GetInverse(), sitk.sitkLinear, -1024.0)
        return moved, transform

    return make


VARIANTS: dict[str, Variant] = {
    "1mm": lambda ct: (resampled(hips(ct), (1.0, 1.0, 1.0)), None),
    "1.5mm": lambda ct: (resampled(hips(ct), (1.5, 1.5, 1.5)), None),
    "5mm_slices": lambda ct: (resampled(ct, (3.0, 3.0, 5.0)), None),
    "rotated+6": _rotated_content(6.0),
    "rotated-6": _rotated_content(-6.0),
    "oblique10": lambda ct: (
        on_rotated_grid(
            ct, rotation_matrix((0.0, 0.0, 1.0), 10.0) @ rotation_matrix((1.0, 0.0, 0.0), 10.0)
        ),
        None,
    ),
    "index_flipped": lambda ct: (index_flipped(ct), None),
    "direction_RAI": lambda ct: (sitk.DICOMOrient(ct, "RAI"), None),
    "right_hip_only": lambda ct: (right_half(ct), None),
}
THRESHOLD = {"5mm_slices": 0.85}
SIDES = {"right_hip_only": (RIGHT,)}
# measured (classical engine with the min-cut at the joint), Dice with the CT as shipped, right /
# left: 1 mm 0.937 / 0.935, 1.5 mm 0.942 / 0.941, 5 mm slices 0.890 / 0.922, rotated +6
# 0.940 / 0.931, rotated -6 0.937 / 0.922, oblique 10 degrees 0.909 / 0.901, flips and one hip
# 1.0 (without the cut: right 0.937, 0.942, 0.887, 0.940, 0.937, 0.910; the left, an implant
# side, is not cut: cut, it gave 0.899 on the oblique grid)
XFAIL: dict[str, str] = {}  # variant name -> reason, for a strict xfail


# ------------------------------------------------------------------------------- fixtures


# ``real_ct`` and ``real_ct_classical_shared`` come from conftest.py (once per session)


@pytest.fixture(scope="session")
def base_labels(request: pytest.FixtureRequest, real_ct: sitk.Image) -> np.ndarray:
    if DEFAULT_ENGINE == "classical":  # the session's shared segmentation of the CT as shipped
        shared = request.getfixturevalue("real_ct_classical_shared")
        return sitk.GetArrayFromImage(shared.labels)
    return sitk.GetArrayFromImage(segment(real_ct, engine=DEFAULT_ENGINE).labels)


def agreement(real_ct: sitk.Image, base: np.ndarray, name: str) -> dict[int, float]:
    """Dice per side between the variant's world mask and the original one."""
    image, transform = VARIANTS[name](real_ct)
    result = segment(image, engine=DEFAULT_ENGINE)
    back = to_reference(result.labels, real_ct, transform)
    return {side: dice(back == side, base == side) for side in SIDES.get(name, (LEFT, RIGHT))}


# ---------------------------------------------------------------------------------- tests


def test_base_has_both_femurs(base_labels):
    assert (base_labels == RIGHT).sum() > 0 and (base_labels == LEFT).sum() > 0


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=XFAIL[n])) if n in XFAIL else n
        for n in VARIANTS
    ],
)
def test_variant_gives_the_same_world_femur(real_ct, base_labels, name):
    scores = agreement(real_ct, base_labels, name)
    wanted = THRESHOLD.get(name, 0.90)
    assert all(score >= wanted for score in scores.values()), (name, scores)
