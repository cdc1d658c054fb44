"""Image grids: size, spacing, origin and direction, and the orientations the phantom emits.

The anatomy lives in world millimetres (LPS); a grid (``femurscreen.geometry.Grid``, the
package's one grid class) only says where its voxel centres are.
Keeping the two apart is what lets one case be written in any orientation (flipped,
permuted, oblique) and still carry the same patient: the renderer evaluates the anatomy at
the world position of every voxel.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from femurscreen.geometry import Grid
from femurscreen.phantom.shapes import rotation, unit

__all__ = [
    "DIRECTION_MODES",
    "LPS",
    "RAS",
    "SIGNED_PERMUTATIONS",
    "SIZES",
    "Grid",
    "direction_for",
    "grid_around",
]

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


def grid_around(
    lo: np.ndarray,
    hi: np.ndarray,
    spacing_world: Sequence[float] | np.ndarray,
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
        return Grid.make(size, spacing, origin, d.ravel())

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
    return Grid.make(n, sp, origin, d.ravel())
