"""One voxel grid for the whole package: where voxel centres are in the world, nothing more.

Conventions (SimpleITK's, so a grid and an image agree without translation):

- ``size``, ``spacing`` and ``origin`` are in **index order (i, j, k)** = the image's x, y, z
  axes; ``direction`` is the row-major 3x3 matrix whose columns are those axes in world (LPS)
  millimetres. ``origin`` is the world position of the **centre** of voxel (0, 0, 0).
- numpy arrays on a grid are indexed **(k, j, i)** (``shape``), as ``sitk.GetArrayFromImage``
  returns them. Methods say which order they take: ``index_*`` work in (i, j, k), ``array_*``
  in numpy (k, j, i).
- A **box is always the box of voxel centres**: :meth:`Grid.corners_world` gives the 8 corner
  voxel centres; the physical extent of the image (its outer faces) is the same box grown by
  half a voxel, ``corners_world(margin=0.5)``. No other box convention exists.
- :meth:`Grid.slices_covering` turns world points into the array slices of every voxel whose
  centre may lie in their bounding box (floor/ceil, clipped to the grid).

The VB-Net (world-aligned and mirrored network grids), the phantom renderer (any orientation)
and the classical engine (axis-aligned LPS lattices) all use this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import SimpleITK as sitk

from femurscreen.hu import AIR_HU

IDENTITY: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
MIRROR_X: tuple[float, ...] = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _three(values: Any, kind: type) -> tuple[Any, Any, Any]:
    out = tuple(kind(v) for v in np.asarray(values).ravel().tolist())
    if len(out) != 3:
        raise ValueError(f"expected 3 values, got {len(out)}")
    return out[0], out[1], out[2]


@dataclass(frozen=True)
class Grid:
    """A 3-D voxel grid without pixels (see the module docstring for the conventions)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = IDENTITY

    @classmethod
    def make(
        cls,
        size: Sequence[int] | np.ndarray,
        spacing: Sequence[float] | np.ndarray,
        origin: Sequence[float] | np.ndarray,
        direction: Sequence[float] | np.ndarray = IDENTITY,
    ) -> Grid:
        """A grid from any sequences or arrays (values converted to plain int/float)."""
        d = tuple(float(v) for v in np.asarray(direction, dtype=np.float64).ravel().tolist())
        if len(d) != 9:
            raise ValueError(f"direction needs 9 values, got {len(d)}")
        return cls(_three(size, int), _three(spacing, float), _three(origin, float), d)

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        """The grid of an image."""
        return cls.make(
            image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()
        )

    # ------------------------------------------------------------------ shape and matrices

    @property
    def shape(self) -> tuple[int, int, int]:
        """numpy array shape (k, j, i), as ``sitk.GetArrayFromImage`` returns it."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Same as :attr:`shape` (the name the VB-Net code reads best with)."""
        return self.shape

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array order (k, j, i), e.g. for ``scipy.ndimage`` ``sampling=``."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.size))

    @property
    def matrix(self) -> np.ndarray:
        """Direction times spacing: world offset of one index step along each axis (columns)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3) * np.asarray(
            self.spacing, dtype=np.float64
        )

    @property
    def axis_aligned(self) -> bool:
        """True when the direction is the identity (index axes = LPS world axes)."""
        return self.direction == IDENTITY

    # ------------------------------------------------------------------ index <-> world

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """World points (..., 3) of continuous indices (..., 3) in (i, j, k) order."""
        return np.asarray(ijk, dtype=np.float64) @ self.matrix.T + np.asarray(self.origin)

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) indices (..., 3) of world points (..., 3)."""
        inv = np.linalg.inv(self.matrix)
        return (np.asarray(xyz, dtype=np.float64) - np.asarray(self.origin)) @ inv.T

    def array_to_world(self, kji: np.ndarray) -> np.ndarray:
        """World points (..., 3: x, y, z) of continuous array indices (..., 3: k, j, i).

        On an axis-aligned grid this is ``origin + index * spacing`` element by element
        (the same numbers as :meth:`index_to_world`, without the matrix product)."""
        kji = np.asarray(kji, dtype=np.float64)
        if self.axis_aligned:
            return np.asarray(self.origin) + kji[..., ::-1] * np.asarray(self.spacing)
        return self.index_to_world(kji[..., ::-1])

    def world_to_array(self, xyz: np.ndarray) -> np.ndarray:
        """Continuous array indices (..., 3: k, j, i) of world points (..., 3: x, y, z).

        On an axis-aligned grid this divides by the spacing (exact on a lattice snapped to
        the spacing, which is what the classical engine relies on); otherwise it is
        :meth:`world_to_index` reversed."""
        xyz = np.asarray(xyz, dtype=np.float64)
        if self.axis_aligned:
            return ((xyz - np.asarray(self.origin)) / np.asarray(self.spacing))[..., ::-1]
        return self.world_to_index(xyz)[..., ::-1]

    def axes_world(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinate of every voxel centre along each array axis, (k, j, i) order:
        z (nz,), y (ny,), x (nx,). Only meaningful on an axis-aligned grid."""
        if not self.axis_aligned:
            raise ValueError("axes_world needs an axis-aligned grid")
        z, y, x = (self.origin[a] + np.arange(self.size[a]) * self.spacing[a] for a in (2, 1, 0))
        return z, y, x

    # ------------------------------------------------------------------ boxes

    def corners_world(self, margin: float = 0.0) -> np.ndarray:
        """The 8 world corners (8, 3) of the box of voxel centres, grown by ``margin`` voxels
        on every side (0.5: the outer faces of the voxels, the image's physical extent)."""
        lo = np.full(3, -float(margin))
        hi = np.asarray(self.size, dtype=np.float64) - 1.0 + float(margin)
        corners = np.array(list(product(*zip(lo, hi, strict=True))))
        return self.index_to_world(corners)

    def world_bounds(self, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world bounding box (lowest, highest corner) of :meth:`corners_world`."""
        corners = self.corners_world(margin)
        return corners.min(axis=0), corners.max(axis=0)

    def _index_box(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        idx = self.world_to_index(np.atleast_2d(points_world))
        lo = np.maximum(np.floor(idx.min(axis=0)).astype(int), 0)
        hi = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + 1, np.asarray(self.size))
        if np.any(hi <= lo):
            return None
        return lo, hi

    def slices_covering(self, points_world: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Array slices (k, j, i) of the voxels whose centres may lie inside the bounding box
        of ``points_world`` (N, 3); None when that box misses the grid."""
        box = self._index_box(points_world)
        if box is None:
            return None
        lo, hi = box
        return (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))

    def sub_grid(self, points_world: np.ndarray) -> tuple[Grid, tuple[slice, slice, slice]] | None:
        """The part of this grid that covers ``points_world`` (N, 3), and its array slices
        (k, j, i) in this grid's array; None when the points lie outside the grid."""
        box = self._index_box(points_world)
        if box is None:
            return None
        lo, hi = box
        origin = self.index_to_world(lo[None, :].astype(np.float64))[0]
        grid = Grid.make(hi - lo, self.spacing, origin, self.direction)
        slices = tuple(slice(int(lo[a]), int(hi[a])) for a in (2, 1, 0))
        return grid, (slices[0], slices[1], slices[2])

    def grown(self, n: int = 1) -> Grid:
        """The same lattice with ``n`` more voxels on every side."""
        if self.axis_aligned:
            origin = np.asarray(self.origin) - n * np.asarray(self.spacing)
        else:
            origin = self.index_to_world(np.full((1, 3), -float(n)))[0]
        return Grid.make(np.asarray(self.size) + 2 * n, self.spacing, origin, self.direction)

    # ------------------------------------------------------------------ images

    def reference(self, pixel: int = sitk.sitkFloat32) -> sitk.Image:
        """An empty image with this geometry (a resampling target)."""
        image = sitk.Image(list(self.size), pixel)
        self._stamp(image)
        return image

    def image(self, array: np.ndarray) -> sitk.Image:
        """An image with this grid's geometry holding ``array`` (numpy (k, j, i) order)."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match grid shape {self.shape}")
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        self._stamp(image)
        return image

    def _stamp(self, image: sitk.Image) -> None:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)

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


__all__ = ["IDENTITY", "MIRROR_X", "Grid"]
