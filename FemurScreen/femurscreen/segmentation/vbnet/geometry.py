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
from dataclasses import dataclass
from itertools import product

import numpy as np
import SimpleITK as sitk

from femurscreen.hu import AIR_HU  # value of anything outside the scanned field of view

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
MIRROR_X = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Grid:
    """A voxel grid (size x, y, z; spacing; origin; row-major 3x3 direction) without pixels."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = IDENTITY

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        return cls(
            tuple(int(s) for s in image.GetSize()),
            tuple(float(s) for s in image.GetSpacing()),
            tuple(float(s) for s in image.GetOrigin()),
            tuple(float(d) for d in image.GetDirection()),
        )

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return (self.size[2], self.size[1], self.size[0])

    @property
    def matrix(self) -> np.ndarray:
        """Direction times spacing: world offset of one index step along each axis (columns)."""
        return np.asarray(self.direction, float).reshape(3, 3) * np.asarray(self.spacing)

    def to_world(self, index_xyz: np.ndarray) -> np.ndarray:
        """World points (N, 3) of continuous indices (N, 3) in x, y, z order."""
        index_xyz = np.atleast_2d(np.asarray(index_xyz, float))
        return np.asarray(self.origin) + index_xyz @ self.matrix.T

    def to_index(self, world: np.ndarray) -> np.ndarray:
        """Continuous indices (N, 3) of world points (N, 3)."""
        world = np.atleast_2d(np.asarray(world, float))
        return (world - np.asarray(self.origin)) @ np.linalg.inv(self.matrix).T

    def corners_world(self) -> np.ndarray:
        """The 8 outer corners of the voxel box (half a voxel beyond the first/last centres)."""
        lo = np.full(3, -0.5)
        hi = np.asarray(self.size, float) - 0.5
        corners = np.array(list(product(*zip(lo, hi, strict=True))))
        return self.to_world(corners)

    def wrap(self, array_zyx: np.ndarray) -> sitk.Image:
        """An image with this grid's geometry holding ``array_zyx`` (numpy z, y, x order)."""
        if tuple(array_zyx.shape) != self.shape_zyx:
            raise ValueError(f"array shape {array_zyx.shape} does not match grid {self.shape_zyx}")
        image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def resample(
        self,
        image: sitk.Image,
        interpolator: int = sitk.sitkLinear,
        default: float = AIR_HU,
        pixel_type: int = sitk.sitkFloat32,
        transform: sitk.Transform | None = None,
    ) -> sitk.Image:
        """``image`` sampled at this grid's voxel centres (``transform`` maps grid -> image)."""
        f = sitk.ResampleImageFilter()
        f.SetSize(self.size)
        f.SetOutputSpacing(self.spacing)
        f.SetOutputOrigin(self.origin)
        f.SetOutputDirection(self.direction)
        f.SetInterpolator(interpolator)
        f.SetDefaultPixelValue(float(default))
        f.SetOutputPixelType(pixel_type)
        if transform is not None:
            f.SetTransform(transform)
        return f.Execute(image)


def world_box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world bounding box (min, max corners) of an image's voxel box."""
    corners = Grid.of(image).corners_world()
    return corners.min(axis=0), corners.max(axis=0)


def round_up(n: float, multiple: int) -> int:
    return max(multiple, int(math.ceil(n / multiple - 1e-9)) * multiple)


def world_grid(image: sitk.Image, spacing: float, multiple: int = 16) -> Grid:
    """World-aligned grid at ``spacing`` mm covering the whole image, sizes padded to ``multiple``.

    The padding is split evenly around the image's box, so the image sits in the middle.
    """
    lo, hi = world_box(image)
    extent = hi - lo
    size = tuple(round_up(e / spacing, multiple) for e in extent)
    center = (lo + hi) / 2
    return centered_grid(center, size, (spacing,) * 3, mirror=False)


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
    spacing = tuple(float(s) for s in spacing)
    half = (np.asarray(size_xyz, float) - 1) / 2 * np.asarray(spacing)
    origin = np.asarray(center, float) - np.asarray(direction).reshape(3, 3) @ half
    return Grid(tuple(int(s) for s in size_xyz), spacing, tuple(origin.tolist()), direction)


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
    """The part of ``target`` that covers the world points ``box_world`` (N, 3).

    Returns the sub-grid and the numpy (z, y, x) slices of it in ``target``'s array, or None
    when the points lie outside ``target`` entirely.
    """
    idx = target.to_index(box_world)
    lo = np.maximum(np.floor(idx.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + 1, np.asarray(target.size))
    if np.any(hi <= lo):
        return None
    origin = target.to_world(lo[None, :])[0]
    grid = Grid(
        tuple(int(v) for v in hi - lo), target.spacing, tuple(origin.tolist()), target.direction
    )
    slices = tuple(slice(int(lo[a]), int(hi[a])) for a in (2, 1, 0))
    return grid, slices
