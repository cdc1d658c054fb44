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

Grading adds three flags of its own (``femurscreen.grading``): ``feature_error`` and
``classification_error`` (the side's status becomes ``error``) and
``outside_training_distribution`` (graded, probabilities unreliable).

``FLAGS`` is the one flag table: code, plain words, whether it blocks grading and with which
status, and who sets it. Segmentation, grading, the report, the CLI and the Slicer module all
take their wording from it; ``FLAG_HELP``, ``FLAG_STATUS`` and ``GUARD_FLAGS`` are views of it.

Primary status (``femurscreen.status.Status``), by precedence (the first that applies):
``not_found`` > ``implant`` > ``truncated`` > ``ok``. A flag with a ``status`` blocks grading
and gives its side that status; every other flag is informative.
Why this order: a side without a femur has nothing else to say; metal makes a side unusable
whatever the field of view, and is the more specific message for the reader; truncation comes
next. ``distal_fov_short`` and ``small`` never change the status: a scan that ends at the
intertrochanteric level (common in abdominal CT) still shows the head, the neck and the
trochanters that the screening is about, so such a side is graded, with its flag shown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from femurscreen.hu import METAL_HU
from femurscreen.status import STATUS_PRECEDENCE, Status

MIN_METAL_MM3 = 200.0
METAL_NEAR_MM = 3.0
SMALL_ML = 40.0


@dataclass(frozen=True)
class Flag:
    """One flag: its code (as result.json writes it), plain words for a reader, the status it
    gives its side when it blocks grading (None: informative only) and who sets it."""

    code: str
    words: str
    status: Status | None = None
    source: str = "segmentation"  # "segmentation", "guard" (wrong-bone guard), "grading", "density"

    @property
    def blocks_grading(self) -> bool:
        return self.status is not None


_TABLE: tuple[Flag, ...] = (
    Flag("implant", "metal implant in or against the femur: not graded", Status.IMPLANT),
    Flag(
        "truncated",
        "femur cut by the edge of the scan (head, neck or in-plane): not graded",
        Status.TRUNCATED,
    ),
    Flag("distal_fov_short", "scan ends above the anatomical cut level: ROI shorter than defined"),
    Flag("small", "mask implausibly small for a proximal femur"),
    Flag(
        "not_femur",
        "no femoral head, neck and trochanteric region found: not a proximal femur, not graded",
        Status.NOT_FOUND,
        "guard",
    ),
    Flag(
        "pelvis_in_mask",
        "segmentation runs from the femoral head into the pelvis: wrong bone in the region, "
        "not graded",
        Status.NOT_FOUND,
        "guard",
    ),
    Flag(
        "neck_not_in_view",
        "femoral neck not in view (the scan ends at the femoral head): not graded",
        Status.TRUNCATED,
        "guard",
    ),
    Flag(
        "review_segmentation",
        "segmentation quality low (engines or passes disagree): check the mask before trusting "
        "the result",
    ),
    Flag("feature_error", "features could not be computed", Status.ERROR, "grading"),
    Flag("classification_error", "could not be classified", Status.ERROR, "grading"),
    Flag(
        "outside_training_distribution",
        "outside the training data: probabilities unreliable",
        None,
        "grading",
    ),
    # the calibrated density's own flags (femurscreen.bmd): informative for the classifier
    Flag(
        "class_uncertain",
        "CT-derived T-score within its uncertainty of a WHO class limit",
        None,
        "density",
    ),
    Flag(
        "shaft_axis_assumed",
        "too little femoral shaft in view: the DXA pose assumes a vertical shaft",
        None,
        "density",
    ),
    Flag(
        "contrast",
        "contrast-enhanced scan: bone density not reported (contrast raises bone HU)",
        None,
        "density",
    ),
    Flag(
        "kvp_unknown",
        "tube voltage unknown: the density's calibration is less certain (give --kvp)",
        None,
        "density",
    ),
)

FLAGS: dict[str, Flag] = {f.code: f for f in _TABLE}

# views of FLAGS kept for callers
FLAG_HELP: dict[str, str] = {f.code: f.words for f in _TABLE}
# flags that block grading, and the status they give a side (see the module docstring)
FLAG_STATUS: dict[str, Status] = {f.code: f.status for f in _TABLE if f.status is not None}
GUARD_FLAGS: tuple[str, ...] = tuple(f.code for f in _TABLE if f.source == "guard")


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


def primary_status(found: bool, flags: list[str]) -> Status:
    """The one status a side is graded by (see the module docstring for the precedence)."""
    if not found:
        return Status.NOT_FOUND
    statuses = {FLAG_STATUS[f] for f in flags if f in FLAG_STATUS}
    for status in STATUS_PRECEDENCE[:-1]:
        if status in statuses:
            return status
    return Status.OK
