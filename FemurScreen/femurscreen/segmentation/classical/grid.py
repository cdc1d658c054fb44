"""World-aligned working grids for the classical engine.

The classical engine never reasons in array indices of the input file: it resamples the CT onto
grids whose axes are the LPS world axes (x to the patient's left, y posterior, z superior), so
that "lateral", "superior" and "axial slice" mean the same thing for every file, whatever its
direction matrix (flipped, permuted or oblique). Grids are snapped to one lattice anchored at the
corner of the image's world bounding box, so a file that is only flipped resamples exactly onto
the same voxel centres as the unflipped one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Grid:
    """An axis-aligned LPS grid. Arrays on it are indexed (z, y, x); points are world (x, y, z)."""

    origin: np.ndarray  # world position (x, y, z) of voxel (0, 0, 0), mm
    spacing: np.ndarray  # (sx, sy, sz), mm
    size: tuple[int, int, int]  # (nx, ny, nz)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Numpy shape (z, y, x)."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return (float(self.spacing[2]), float(self.spacing[1]), float(self.spacing[0]))

    def world(self, zyx: np.ndarray) -> np.ndarray:
        """World points (..., 3: x, y, z) of (fractional) array indices (..., 3: z, y, x)."""
        zyx = np.asarray(zyx, dtype=float)
        return self.origin + zyx[..., ::-1] * self.spacing

    def index(self, xyz: np.ndarray) -> np.ndarray:
        """Fractional array indices (..., 3: z, y, x) of world points (..., 3: x, y, z)."""
        xyz = np.asarray(xyz, dtype=float)
        return ((xyz - self.origin) / self.spacing)[..., ::-1]

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates along each array axis: z (nz,), y (ny,), x (nx,)."""
        return tuple(self.origin[a] + np.arange(self.size[a]) * self.spacing[a] for a in (2, 1, 0))

    def grown(self, n: int = 1) -> Grid:
        """The same lattice with ``n`` more voxels on every side."""
        nx, ny, nz = (int(v) + 2 * n for v in self.size)
        return Grid(origin=self.origin - n * self.spacing, spacing=self.spacing, size=(nx, ny, nz))

    def reference(self, pixel: int = sitk.sitkFloat32) -> sitk.Image:
        image = sitk.Image([int(n) for n in self.size], pixel)
        image.SetOrigin([float(v) for v in self.origin])
        image.SetSpacing([float(v) for v in self.spacing])
        return image

    def image(self, array: np.ndarray) -> sitk.Image:
        """Wrap an array (z, y, x) on this grid as a SimpleITK image."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetOrigin([float(v) for v in self.origin])
        image.SetSpacing([float(v) for v in self.spacing])
        return image


def world_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest world coordinates (x, y, z) of the image's voxel centres."""
    size = np.array(image.GetSize())
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint(
                [float((size[i] - 1) * c[i]) for i in range(3)]
            )
            for c in np.ndindex(2, 2, 2)
        ]
    )
    return corners.min(axis=0), corners.max(axis=0)


def world_spacing(image: sitk.Image) -> np.ndarray:
    """Voxel extent along the world axes x, y, z (for oblique files: the projected extent)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.abs(direction) @ np.array(image.GetSpacing())


def lattice_grid(
    image: sitk.Image,
    spacing: float,
    box: tuple[np.ndarray, np.ndarray] | None = None,
) -> Grid:
    """Isotropic LPS grid over the image's world bounds (or a world box clipped to them).

    The grid's voxel centres lie on a lattice anchored at the image's lowest world corner, so
    crops taken at the same spacing line up with the whole-image grid.
    """
    lo, hi = world_bounds(image)
    anchor = lo
    if box is not None:
        lo = np.maximum(lo, box[0])
        hi = np.minimum(hi, box[1])
        lo = anchor + np.floor((lo - anchor) / spacing + 1e-6) * spacing
    hi = np.maximum(hi, lo)
    size = np.floor((hi - lo) / spacing + 1e-6).astype(int) + 1
    nx, ny, nz = (int(n) for n in size)
    return Grid(origin=lo, spacing=np.full(3, float(spacing)), size=(nx, ny, nz))


def resample(
    image: sitk.Image,
    grid: Grid,
    *,
    interpolator: int = sitk.sitkLinear,
    default: float = -1024.0,
) -> np.ndarray:
    """The image's values on a grid, as a float32 array (z, y, x).

    Only the part of the image under the grid (plus a margin) is touched, so sampling a small
    crop of a 512 x 512 x 300 CT costs little.
    """
    image = _region_under(image, grid)
    image = _antialias(image, float(np.min(grid.spacing)))
    out = sitk.Resample(
        image, grid.reference(), sitk.Transform(), interpolator, float(default), sitk.sitkFloat32
    )
    return sitk.GetArrayFromImage(out).astype(np.float32, copy=False)


def _region_under(image: sitk.Image, grid: Grid, margin: int = 3) -> sitk.Image:
    """The sub-image (index box) that covers the grid's world box."""
    corners = np.array(
        [grid.world(np.array(c) * (np.array(grid.shape) - 1)) for c in np.ndindex(2, 2, 2)]
    )
    cont = np.array([image.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in corners])
    size = np.array(image.GetSize())
    lo = np.clip(np.floor(cont.min(axis=0)).astype(int) - margin, 0, size - 1)
    hi = np.clip(np.ceil(cont.max(axis=0)).astype(int) + margin, 0, size - 1)
    if np.all(lo == 0) and np.all(hi == size - 1):
        return image
    return image[
        int(lo[0]) : int(hi[0]) + 1, int(lo[1]) : int(hi[1]) + 1, int(lo[2]) : int(hi[2]) + 1
    ]


def _antialias(image: sitk.Image, target_spacing: float) -> sitk.Image:
    """Block-average a fine image before sampling it on a much coarser grid.

    Sampling a 0.8 mm CT at 3 mm without it aliases: a 2 mm joint space can vanish or a
    trabecula dominate a voxel. Averaging integer blocks (``BinShrink``) is fast and close to
    what a thicker reconstruction would show.
    """
    factors = [max(1, int(np.floor(target_spacing / s + 1e-6))) for s in image.GetSpacing()]
    if max(factors) < 2:
        return image
    return sitk.BinShrink(image, factors)  # integer input: averages rounded to whole HU


def paste_into(
    target: sitk.Image,
    values: np.ndarray,
    grid: Grid,
    *,
    label: int,
    out: np.ndarray,
) -> None:
    """Map a soft mask (0..1 on ``grid``) onto ``target``'s voxels and set ``label`` where > 0.5.

    Only the part of ``target`` under the grid's box is resampled, and only still-empty voxels of
    ``out`` (the target's label array, z, y, x) are written, so two sides never overwrite each
    other.
    """
    corners = np.array(
        [grid.world(np.array(c) * (np.array(grid.shape) - 1)) for c in np.ndindex(2, 2, 2)]
    )
    cont = np.array([target.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in corners])
    size = np.array(target.GetSize())
    lo = np.clip(np.floor(cont.min(axis=0)).astype(int) - 1, 0, size - 1)
    hi = np.clip(np.ceil(cont.max(axis=0)).astype(int) + 1, 0, size - 1)
    sub = sitk.Image([int(n) for n in hi - lo + 1], sitk.sitkFloat32)
    sub.SetSpacing(target.GetSpacing())
    sub.SetDirection(target.GetDirection())
    sub.SetOrigin(target.TransformIndexToPhysicalPoint([int(v) for v in lo]))
    soft = sitk.Resample(
        grid.image(values.astype(np.float32)), sub, sitk.Transform(), sitk.sitkLinear, 0.0
    )
    hit = sitk.GetArrayViewFromImage(soft) > 0.5
    view = out[lo[2] : hi[2] + 1, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1]
    view[hit & (view == 0)] = label
