"""The classical engine: proximal femur segmentation without training data.

Pipeline (each step in its own module):
1. ``grid``: resample the CT onto a 3 mm grid aligned with the LPS world axes.
2. ``heads``: find each femoral head as a sphere lateral to the body midline; the
   side follows from world x (+x = patient's left), never from array order.
3. ``femur``: per side, a crop around the head at fine spacing (the CT's own spacing,
   but not finer than 1.2 mm), a filled bone mask, and a seeded watershed that splits femur
   from pelvis at the joint. The crop has one voxel more on every side; where that layer or
   the crop's inside lies beyond the scan (an image edge, the padding of an oblique grid), it
   walls the marrow cut by the field of view instead of draining it (``scan_crop``).
4. The soft mask is mapped back onto the CT's own voxel grid (any direction matrix).

The shared post-processing (largest component, holes, anatomical cut) and the flags run after
any engine, in ``pipeline.segment``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from femurscreen.errors import NoFemurError
from femurscreen.segmentation.classical.femur import crop_box, segment_femur
from femurscreen.segmentation.classical.grid import (
    Grid,
    lattice_grid,
    paste_into,
    region_under,
    resample,
    world_bounds,
    world_spacing,
)
from femurscreen.segmentation.classical.heads import HeadSphere, find_heads

log = logging.getLogger(__name__)

FINE_SPACING_MM = (1.2, 3.0)
NECK_REACH_MM = 20.0
# a femoral head (fine radius >= 17.5 mm) with the bone below it needs at least this much of
# the body along every world axis; a CT of one or a few slices cannot hold one (and its
# coarse 3 mm grid would be too thin for the resampling and the gradient votes)
MIN_EXTENT_MM = 30.0
PADDING_HU = -1020.0  # at or below: no patient (the padding of an oblique or tilted grid)
RIM_HU = -400.0  # next to padding and darker than this: padding mixed in by interpolation


def check_extent(image: sitk.Image) -> None:
    """Refuse, with a clear error, a CT too thin along some world axis to show a femoral head."""
    lo, hi = world_bounds(image)
    extent = hi - lo + world_spacing(image)
    if np.any(extent < MIN_EXTENT_MM):
        axis = "xyz"[int(np.argmin(extent))]
        raise NoFemurError(
            f"the CT covers only {float(extent.min()):.1f} mm along world {axis} "
            f"({'x'.join(str(n) for n in image.GetSize())} voxels): too little to hold a "
            "femoral head",
            "load the whole hip series (a volume from above the femoral heads to below the "
            "lesser trochanters), not a single slice or a thin slab",
        )


def has_neck(
    femur: np.ndarray, grid: Grid, head: HeadSphere, box: tuple[np.ndarray, np.ndarray]
) -> bool:
    """Does the segmented femur reach out laterally below its head (neck, trochanters)?

    A ball of cancellous bone inside the ilium just above the acetabulum can pass every test
    a femoral head passes when the real head lies below the scan; what it lacks is a neck.
    The femur must reach ``NECK_REACH_MM`` beyond the head's radius laterally, below the head
    centre, unless the crop was cut by the image's side (a truncated femur, flagged later).
    """
    if not femur.any():
        return False
    zs, _, xs = grid.axes_world()
    below = zs < head.centre[2] - 0.3 * head.radius
    cols = femur[below].any(axis=(0, 1))
    if not cols.any():
        return False
    lateral = (xs[cols] - head.centre[0]) * head.lateral
    if float(lateral.max()) >= head.radius + NECK_REACH_MM:
        return True
    wanted = box[1][0] if head.lateral > 0 else box[0][0]
    edge = xs[-1] if head.lateral > 0 else xs[0]
    return abs(edge - wanted) > float(grid.spacing[0])  # the image's side cut the crop


def padding_of(values: np.ndarray) -> np.ndarray | None:
    """The padding among an image's voxels (see ``scan_crop``), or None when there is none."""
    flat = ndi.maximum_filter(values, size=3) - ndi.minimum_filter(values, size=3) < 0.5
    core = (values <= PADDING_HU) & flat
    if not core.any():
        return None
    return ndi.binary_dilation(core, iterations=2, mask=values < RIM_HU)


def clear_padding(image: sitk.Image, grid: Grid, labels: np.ndarray, label: int) -> None:
    """Remove ``label`` from the image's padding voxels under the crop ``grid`` (in place)."""
    sub = region_under(image, grid)
    padding = padding_of(sitk.GetArrayFromImage(sub).astype(np.float32))
    if padding is None:
        return
    x, y, z = image.TransformPhysicalPointToIndex(sub.GetOrigin())
    nz, ny, nx = padding.shape
    view = labels[z : z + nz, y : y + ny, x : x + nx]
    view[padding & (view == label)] = 0


def scan_crop(image: sitk.Image, grid: Grid) -> tuple[np.ndarray, np.ndarray | None]:
    """The image's values on a crop ``grid``, and the crop voxels that show no patient: outside
    the image's grid, or padding (None when there are none).

    An axis-aligned CT's field of view is the crop's own border; an oblique or tilted one's
    edge cuts through the crop, and its corners are padded with air. Hole filling must see that
    edge as a wall: on the real CT on a grid turned 10 degrees, the femur's marrow lay open to
    the padding in the lowest slices and the right femur lost 14 ml (Dice 0.81). Padding is
    one value (``PADDING_HU`` or below) over whole blocks of voxels; the streaks beside metal
    are as dark but never flat, and taking them for padding cut them out of the femur. The
    interpolated rim between padding and the patient (darker than ``RIM_HU``) counts too.

    Padding is found on the image's own voxels, and the crop is interpolated from the patient's
    voxels only (normalised interpolation: the weights of padding voxels are dropped and the
    rest renormalised). Plain interpolation would mix the padding's -1024 HU into the voxels
    along the field of view's edge, so that bone in the last slice of an oblique scan turned
    into soft tissue there (oblique grid, left femur: 86 of 263 voxels of the lowest slice
    lost). A crop voxel is beyond the scan when it lies nearer padding than patient (the
    patient's weight below a half). On an axis-aligned grid this is the same as before.
    """
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    inside = resample(ones, grid, interpolator=sitk.sitkNearestNeighbor, default=0.0) > 0.5
    sub = region_under(image, grid)
    values = sitk.GetArrayFromImage(sub).astype(np.float32)
    padding = padding_of(values)
    if padding is None:
        crop = resample(image, grid)
        beyond = ~inside
        return crop, (beyond if beyond.any() else None)
    weight = sitk.GetImageFromArray((~padding).astype(np.float32))
    weight.CopyInformation(sub)
    patient = sitk.GetImageFromArray(np.where(padding, 0.0, values).astype(np.float32))
    patient.CopyInformation(sub)
    total = resample(patient, grid, default=0.0)
    share = resample(weight, grid, default=0.0)
    crop = np.where(
        share > 1e-3, total / np.maximum(share, 1e-3), np.float32(PADDING_HU - 4.0)
    ).astype(np.float32)
    beyond = ~inside | (share < 0.5)
    return crop, (beyond if beyond.any() else None)


class ClassicalEngine:
    """Training-free femur segmentation; ``predict`` returns a raw 0/1/2 label image."""

    name = "classical"

    def __init__(self) -> None:
        self.heads: dict[int, HeadSphere] = {}
        self.timing_s: dict[str, float] = {}

    def predict(self, image: sitk.Image) -> sitk.Image:
        t0 = time.perf_counter()
        check_extent(image)
        fine_spacing = float(np.clip(world_spacing(image).min(), *FINE_SPACING_MM))
        self.heads = find_heads(image, fine_spacing)
        t1 = time.perf_counter()
        labels = np.zeros(image.GetSize()[::-1], dtype=np.uint8)
        for label, head in sorted(self.heads.items()):
            log.debug(
                "head %d: centre %s r %.1f support %.2f",
                label,
                head.centre,
                head.radius,
                head.support,
            )
            box = crop_box(head)
            grid = lattice_grid(image, fine_spacing, box)
            # one voxel more on every side: where the crop ends at the scan's edge, that layer
            # lies beyond it and walls the marrow cut by the field of view
            padded = grid.grown(1)
            crop, outside = scan_crop(image, padded)
            femur = segment_femur(crop, padded, head, outside)
            if outside is not None:
                # one voxel layer past the field of view's edge, so that mapping the mask onto
                # the image's own (oblique) voxels does not erode it there; the image's padding
                # voxels are cleared again after pasting
                femur |= ndi.binary_dilation(femur, mask=outside)
            femur = np.ascontiguousarray(femur[1:-1, 1:-1, 1:-1])
            if not has_neck(femur, grid, head, box):
                log.debug("head %d rejected: no neck reaches out from it", label)
                femur[:] = False
            if femur.any():
                paste_into(image, femur.astype(np.float32), grid, label=label, out=labels)
                if outside is not None:
                    clear_padding(image, padded, labels, label)
        self.heads = {k: h for k, h in self.heads.items() if (labels == k).any()}
        t2 = time.perf_counter()
        self.timing_s = {"locate": t1 - t0, "segment": t2 - t1}
        out = sitk.GetImageFromArray(labels)
        out.CopyInformation(image)
        return out
