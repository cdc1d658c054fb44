"""World-aligned working grids for the classical engine.

The classical engine never reasons in array indices of the input file: it resamples the CT onto
grids whose axes are the LPS world axes (x to the patient's left, y posterior, z superior), so
that "lateral", "superior" and "axial slice" mean the same thing for every file, whatever its
direction matrix (flipped, permuted or oblique). Grids are snapped to one lattice anchored at the
corner of the image's world bounding box, so a file that is only flipped resamples exactly onto
the same voxel centres as the unflipped one.

The grids are :class:`femurscreen.geometry.Grid` with the identity direction: arrays on them are
indexed (z, y, x) (``array_to_world`` / ``world_to_array`` / ``axes_world``), points are world
(x, y, z), and a grid's box is the box of its voxel centres.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from femurscreen.geometry import Grid


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
    return Grid.make(size, np.full(3, float(spacing)), lo)


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
    image = region_under(image, grid)
    image = _antialias(image, min(grid.spacing))
    out = sitk.Resample(
        image, grid.reference(), sitk.Transform(), interpolator, float(default), sitk.sitkFloat32
    )
    return sitk.GetArrayFromImage(out).astype(np.float32, copy=False)


def region_under(image: sitk.Image, grid: Grid, margin: int = 3) -> sitk.Image:
    """The sub-image (index box) that covers the grid's world box."""
    corners = np.array(
        [grid.array_to_world(np.array(c) * (np.array(grid.shape) - 1)) for c in np.ndindex(2, 2, 2)]
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
        [grid.array_to_world(np.array(c) * (np.array(grid.shape) - 1)) for c in np.ndindex(2, 2, 2)]
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
