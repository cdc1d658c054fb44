"""Flags and the primary status of each side: can its radiomics be trusted for grading?

Flags (a side may carry several):
- ``implant``: metal (above ``METAL_HU``) of at least ``MIN_METAL_MM3`` lies in or against the
  femur (within ``METAL_NEAR_MM``). Metal and its streaks make density and texture artefact.
- ``truncated``: the femur is cut by the image border where it matters for the ROI: the top of
  the head, an in-plane border, or a bottom border within the head/neck (see ``postprocess``).
- ``distal_fov_short``: the scan ends below the head, neck and trochanteric region but above
  the anatomical cut level, so the ROI is shorter than its definition. Informative only.
- ``small``: the mask is implausibly small for a proximal femur (below ``SMALL_ML``).
- ``not_femur``: the wrong-bone guard (``guard``) found no femoral head, neck and
  trochanteric region in an anatomical configuration: the mask is not a proximal femur (an
  iliac wing, a head without its neck). The side becomes ``not_found`` and its label removed.
- ``pelvis_in_mask``: the mask continues above the femoral head into the acetabulum or ilium:
  the region of interest holds the wrong bone. ``not_found`` as well, label removed.
- ``neck_not_in_view``: the scan ends at or just below the femoral head, so the neck and
  trochanteric region that the screening measures are missing: ``truncated``.
- ``review_segmentation``: the segmentation quality signal (``quality``) is low: check the
  mask before trusting its numbers. Informative only; the side is still graded.

Primary status, by precedence (the first that applies):
``not_found`` > ``implant`` > ``truncated`` > ``ok``. ``FLAG_STATUS`` says which flags block
grading and with which status; every other flag is informative.
Why this order: a side without a femur has nothing else to say; metal makes a side unusable
whatever the field of view, and is the more specific message for the reader; truncation comes
next. ``distal_fov_short`` and ``small`` never change the status: a scan that ends at the
intertrochanteric level (common in abdominal CT) still shows the head, the neck and the
trochanters that the screening is about, so such a side is graded, with its flag shown.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

METAL_HU = 2000.0
MIN_METAL_MM3 = 200.0
METAL_NEAR_MM = 3.0
SMALL_ML = 40.0

STATUS_PRECEDENCE: tuple[str, ...] = ("not_found", "implant", "truncated", "ok")

FLAG_HELP: dict[str, str] = {
    "implant": "metal implant in or against the femur: not graded",
    "truncated": "femur cut by the edge of the scan (head, neck or in-plane): not graded",
    "distal_fov_short": "scan ends above the anatomical cut level: ROI shorter than defined",
    "small": "mask implausibly small for a proximal femur",
    "not_femur": "no femoral head, neck and trochanteric region found: not a proximal femur, "
    "not graded",
    "pelvis_in_mask": "segmentation runs from the femoral head into the pelvis: wrong bone in "
    "the region, not graded",
    "neck_not_in_view": "femoral neck not in view (the scan ends at the femoral head): not graded",
    "review_segmentation": "segmentation quality low (engines or passes disagree): check the "
    "mask before trusting the result",
}

# flags that block grading, and the status they give a side (see the module docstring)
FLAG_STATUS: dict[str, str] = {
    "not_femur": "not_found",
    "pelvis_in_mask": "not_found",
    "implant": "implant",
    "truncated": "truncated",
    "neck_not_in_view": "truncated",
}
GUARD_FLAGS: tuple[str, ...] = ("not_femur", "pelvis_in_mask", "neck_not_in_view")


def metal_volume_mm3(
    mask: np.ndarray, ct: np.ndarray, spacing_zyx: tuple[float, float, float]
) -> float:
    """Volume of metal voxels in or within ``METAL_NEAR_MM`` of a mask (arrays z, y, x)."""
    if not mask.any():
        return 0.0
    idx = np.argwhere(mask)
    margin = [int(np.ceil(METAL_NEAR_MM / s)) + 1 for s in spacing_zyx]
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + np.array(margin) + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    metal = np.asarray(ct[box]) > METAL_HU
    if not metal.any():
        return 0.0
    dist = ndi.distance_transform_edt(~mask[box], sampling=spacing_zyx)
    return float((metal & (dist <= METAL_NEAR_MM)).sum() * np.prod(spacing_zyx))


def side_flags(
    *,
    volume_ml: float,
    metal_mm3: float,
    geometry_flags: list[str],
    guard_flag: str | None = None,
) -> list[str]:
    """All flags of one found side, in a fixed order. ``guard_flag``: the wrong-bone guard's
    verdict when it is not ``ok`` (one of ``GUARD_FLAGS``)."""
    flags = []
    if guard_flag is not None:
        if guard_flag not in GUARD_FLAGS:
            raise ValueError(f"unknown guard flag {guard_flag!r}")
        flags.append(guard_flag)
    if metal_mm3 >= MIN_METAL_MM3:
        flags.append("implant")
    for name in ("truncated", "distal_fov_short"):
        if name in geometry_flags:
            flags.append(name)
    if volume_ml < SMALL_ML:
        flags.append("small")
    return flags


def blocks_grading(flag: str) -> bool:
    """Whether a flag keeps its side from being graded."""
    return flag in FLAG_STATUS


def primary_status(found: bool, flags: list[str]) -> str:
    """The one status a side is graded by (see the module docstring for the precedence)."""
    if not found:
        return "not_found"
    statuses = {FLAG_STATUS[f] for f in flags if f in FLAG_STATUS}
    for status in STATUS_PRECEDENCE[:-1]:
        if status in statuses:
            return status
    return "ok"
