"""Sampling grids in world coordinates: where the networks look, and how results go back.

Every network input is resampled onto a grid whose axes are the world (LPS) axes, so array
index x always grows toward the patient's left whatever the file's direction matrix says. A
grid may instead run x backwards (``mirror=True``): resampling onto it mirrors the anatomy in
world x, which is how a RIGHT femur is shown to the fine network as if it were a left one.
Results come back to the input's own grid by resampling through the same geometry, so no step
ever depends on the voxel order of a file.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from femurscreen.geometry import IDENTITY, MIRROR_X, Grid
from femurscreen.hu import AIR_HU  # value of anything outside the scanned field of view

__all__ = [
    "AIR_HU",
    "IDENTITY",
    "MIRROR_X",
    "Grid",
    "centered_grid",
    "round_up",
    "shrink_for",
    "sub_grid",
    "world_box",
    "world_grid",
]


def world_box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world bounding box (min, max corners) of an image's physical extent (the
    outer faces of its voxels, half a voxel beyond the corner centres)."""
    return Grid.of(image).world_bounds(margin=0.5)


def round_up(n: float, multiple: int) -> int:
    return max(multiple, int(math.ceil(n / multiple - 1e-9)) * multiple)


def world_grid(image: sitk.Image, spacing: float, multiple: int = 16) -> Grid:
    """World-aligned grid at ``spacing`` mm covering the whole image, sizes padded to ``multiple``.

    The padding is split evenly around the image's box, so the image sits in the middle.
    """
    lo, hi = world_box(image)
    extent = hi - lo
    size = [round_up(e / spacing, multiple) for e in extent]
    center = (lo + hi) / 2
    return centered_grid(center, (size[0], size[1], size[2]), (spacing,) * 3, mirror=False)


def centered_grid(
    center: np.ndarray,
    size_xyz: tuple[int, int, int],
    spacing: tuple[float, float, float],
    mirror: bool = False,
) -> Grid:
    """World-aligned grid centred on ``center``; ``mirror`` runs its x axis toward world -x.

    Resampling onto a mirrored grid flips the anatomy in world x about the grid centre: the
    array of a right femur then looks like the array of a left one.
    """
    direction = MIRROR_X if mirror else IDENTITY
    half = (np.asarray(size_xyz, float) - 1) / 2 * np.asarray(spacing, float)
    origin = np.asarray(center, float) - np.asarray(direction).reshape(3, 3) @ half
    return Grid.make(size_xyz, spacing, origin, direction)


def shrink_for(image: sitk.Image, spacing: float) -> sitk.Image:
    """Average blocks of voxels down toward ``spacing`` mm before a coarse resample.

    Linear interpolation from 0.7 mm to 5 mm would alias (it reads 1 voxel in ~300); block
    averaging is the cheap anti-alias and touches the big volume only once.
    """
    factors = [max(1, int(spacing // s)) for s in image.GetSpacing()]
    if max(factors) == 1:
        return image
    return sitk.BinShrink(image, factors)


def sub_grid(target: Grid, box_world: np.ndarray) -> tuple[Grid, tuple[slice, slice, slice]] | None:
    """The part of ``target`` that covers the world points ``box_world`` (N, 3), and its
    numpy (z, y, x) slices in ``target``'s array; None when the points lie outside it."""
    return target.sub_grid(box_world)
