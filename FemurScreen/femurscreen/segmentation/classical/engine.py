"""The classical engine: proximal femur segmentation without training data.

Pipeline (each step in its own module):
1. ``grid``: resample the CT onto a 3 mm grid aligned with the LPS world axes.
2. ``heads``: find each femoral head as a sphere lateral to the body midline; the
   side follows from world x (+x = patient's left), never from array order.
3. ``femur``: per side, a crop around the head at fine spacing (the CT's own spacing,
   but not finer than 1.2 mm), a filled bone mask, and a seeded watershed that splits femur
   from pelvis at the joint. The crop has one voxel more on every side; where that layer or
   the crop's inside lies beyond the scan (an image edge, the padding of an oblique grid), it
   walls the marrow cut by the field of view instead of draining it (``beyond_scan``).
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


def beyond_scan(image: sitk.Image, grid: Grid, array: np.ndarray) -> np.ndarray | None:
    """Voxels of a crop (``array`` on ``grid``) that show no patient: outside the image's grid,
    or padding. None when there are none.

    An axis-aligned CT's field of view is the crop's own border; an oblique or tilted one's
    edge cuts through the crop, and its corners are padded with air. Hole filling must see that
    edge as a wall: on the real CT on a grid turned 10 degrees, the femur's marrow lay open to
    the padding in the lowest slices and the right femur lost 14 ml (Dice 0.81). Padding is
    one value (``PADDING_HU`` or below) over whole blocks of voxels; the streaks beside metal
    are as dark but never flat, and taking them for padding cut them out of the femur. The
    interpolated rim between padding and the patient (darker than ``RIM_HU``) counts too.
    """
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(image)
    inside = resample(ones, grid, interpolator=sitk.sitkNearestNeighbor, default=0.0) > 0.5
    flat = ndi.maximum_filter(array, size=3) - ndi.minimum_filter(array, size=3) < 0.5
    core = inside & (array <= PADDING_HU) & flat
    beyond = ~inside
    if core.any():
        beyond |= ndi.binary_dilation(core, iterations=2, mask=inside & (array < RIM_HU))
    return beyond if beyond.any() else None


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
            crop = resample(image, padded)
            femur = segment_femur(crop, padded, head, beyond_scan(image, padded, crop))
            femur = np.ascontiguousarray(femur[1:-1, 1:-1, 1:-1])
            if not has_neck(femur, grid, head, box):
                log.debug("head %d rejected: no neck reaches out from it", label)
                femur[:] = False
            if femur.any():
                paste_into(image, femur.astype(np.float32), grid, label=label, out=labels)
        self.heads = {k: h for k, h in self.heads.items() if (labels == k).any()}
        t2 = time.perf_counter()
        self.timing_s = {"locate": t1 - t0, "segment": t2 - t1}
        out = sitk.GetImageFromArray(labels)
        out.CopyInformation(image)
        return out
