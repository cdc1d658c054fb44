"""Image grids: size, spacing, origin and direction, and the orientations the phantom emits.

The anatomy lives in world millimetres (LPS); a grid only says where its voxel centres are.
Keeping the two apart is what lets one case be written in any orientation (flipped,
permuted, oblique) and still carry the same patient: the renderer evaluates the anatomy at
the world position of every voxel.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from femurscreen.phantom.shapes import rotation, unit

# Voxel spacing per world axis (x, y, z) in mm and, for fixed-size presets, the voxel count per
# world axis. "hips": a low-dose CT of the hips sized to the patient; "abdomen": a full
# 512 x 512 x 300 abdominal CT (used for benchmarks).
SIZES: dict[str, dict] = {
    "hips": {"spacing": (0.8, 0.8, 1.0), "counts": None},
    "abdomen": {"spacing": (0.8, 0.8, 1.0), "counts": (512, 512, 300)},
}
DIRECTION_MODES = ("lps", "ras", "random", "oblique")
OBLIQUE_DEGREES = (3.0, 10.0)  # range of the extra rotation of an oblique grid


def _signed_permutations() -> tuple[tuple[float, ...], ...]:
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            for col, (row, sign) in enumerate(zip(perm, signs, strict=True)):
                m[row, col] = sign
            out.append(tuple(float(v) for v in m.ravel()))
    # identity (LPS) first, so that index 0 is the default orientation
    out.sort(key=lambda d: d != (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return tuple(out)


# All 48 axis-aligned orientations (flips and permutations, both handednesses) that
# `--direction random` draws from; row-major 3x3 like SimpleITK's GetDirection().
SIGNED_PERMUTATIONS = _signed_permutations()
LPS = SIGNED_PERMUTATIONS[0]
RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def direction_for(mode: str, rng: np.random.Generator) -> tuple[float, ...]:
    """Direction matrix for a ``--direction`` mode (``rng`` draws the random ones)."""
    if mode == "lps":
        return LPS
    if mode == "ras":
        return RAS
    if mode == "random":
        return SIGNED_PERMUTATIONS[int(rng.integers(len(SIGNED_PERMUTATIONS)))]
    if mode == "oblique":
        axis = unit(rng.normal(size=3))
        angle = float(rng.uniform(*OBLIQUE_DEGREES))
        return tuple(float(v) for v in rotation(axis, angle).ravel())
    raise ValueError(f"unknown direction mode {mode!r}; choose from {', '.join(DIRECTION_MODES)}")


@dataclass(frozen=True)
class Grid:
    """A 3-D image grid in SimpleITK's conventions (index order i, j, k; LPS world)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """numpy array shape (k, j, i), as returned by sitk.GetArrayFromImage."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def matrix(self) -> np.ndarray:
        """3x3 map from (i, j, k) index to world offset from the origin."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3) @ np.diag(self.spacing)

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.size))

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """World points (..., 3) of continuous indices (..., 3) in (i, j, k) order."""
        return np.asarray(ijk, dtype=np.float64) @ self.matrix.T + np.asarray(self.origin)

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) indices of world points (..., 3)."""
        inv = np.linalg.inv(self.matrix)
        return (np.asarray(xyz, dtype=np.float64) - np.asarray(self.origin)) @ inv.T

    def box_of(self, corners_world: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Array slices (k, j, i) of the voxels whose centres may lie inside the convex hull
        of ``corners_world`` (N, 3); None when that is outside the grid."""
        idx = self.world_to_index(corners_world)
        lo = np.floor(idx.min(axis=0)).astype(int)
        hi = np.ceil(idx.max(axis=0)).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, np.asarray(self.size))
        if np.any(hi <= lo):
            return None
        return (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))

    def image(self, array: np.ndarray) -> sitk.Image:
        """A SimpleITK image of ``array`` (shape k, j, i) carrying this geometry."""
        if array.shape != self.shape:
            raise ValueError(f"array shape {array.shape} does not match grid shape {self.shape}")
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img


def grid_around(
    lo: np.ndarray,
    hi: np.ndarray,
    spacing_world: tuple[float, float, float],
    direction: tuple[float, ...],
    counts_world: tuple[int, int, int] | None = None,
    anchor: tuple[str, str, str] = ("center", "center", "center"),
) -> Grid:
    """A grid covering the world box [lo, hi] (mm) in the given orientation.

    Axis-aligned directions reorder the world axes exactly (same voxel centres as the LPS
    grid), so every flip/permutation of a case shows the very same samples. An oblique
    direction gets a rotated box large enough to contain [lo, hi].
    ``counts_world`` fixes the voxel count per world axis instead of covering the box;
    ``anchor`` then says which end of the box the fixed count starts from ("low", "high")
    or whether it is centred on it.
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    sp = np.asarray(spacing_world, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    is_perm = np.allclose(np.abs(d).sum(axis=0), 1.0) and np.allclose(np.abs(d).max(axis=0), 1.0)

    if is_perm:
        n_w = np.maximum(1, np.ceil((hi - lo) / sp - 1e-6).astype(int))
        if counts_world is not None:
            n_w = np.asarray(counts_world, dtype=int)
        first = np.empty(3)
        for w in range(3):
            length_w = (n_w[w] - 1) * sp[w]
            if anchor[w] == "low":
                first[w] = lo[w]
            elif anchor[w] == "high":
                first[w] = hi[w] - length_w
            else:
                first[w] = 0.5 * (lo[w] + hi[w]) - 0.5 * length_w
        size = [0, 0, 0]
        spacing = [0.0, 0.0, 0.0]
        origin = first.copy()
        for a in range(3):
            w = int(np.argmax(np.abs(d[:, a])))
            size[a] = int(n_w[w])
            spacing[a] = float(sp[w])
            if d[w, a] < 0:
                origin[w] = first[w] + (n_w[w] - 1) * sp[w]
        return Grid(
            size=(size[0], size[1], size[2]),
            spacing=(spacing[0], spacing[1], spacing[2]),
            origin=tuple(float(v) for v in origin),
            direction=tuple(float(v) for v in d.ravel()),
        )

    # oblique: index axis a keeps the spacing of world axis a; extents cover the rotated box
    ext = hi - lo
    if counts_world is not None:
        ext = np.asarray(counts_world) * sp
        center = np.array(
            [
                {"low": lo[w] + ext[w] / 2, "high": hi[w] - ext[w] / 2}.get(
                    anchor[w], 0.5 * (lo[w] + hi[w])
                )
                for w in range(3)
            ]
        )
        n = np.asarray(counts_world, dtype=int)
    else:
        center = 0.5 * (lo + hi)
        ext_rot = np.abs(d.T) @ ext
        n = np.maximum(1, np.ceil(ext_rot / sp).astype(int))
    origin = center - d @ ((n - 1) * sp / 2.0)
    return Grid(
        size=(int(n[0]), int(n[1]), int(n[2])),
        spacing=tuple(float(v) for v in sp),
        origin=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in d.ravel()),
    )
