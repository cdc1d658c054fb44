"""Voxelisation: paint the anatomy onto an image grid, then blur and add noise.

The volume is processed in slabs along the slowest array axis so that temporaries stay small
(cache-friendly, no page-faulting of full-size arrays), and every structure is evaluated only
inside its own bounding box. Boundaries are painted with a partial-volume ramp (the fraction of
the voxel inside the surface, estimated from the signed distance), then the whole image is
blurred with the scanner's point-spread function and correlated noise is added in the same
pass: white noise scaled so that, after the blur, its standard deviation is the case's.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from femurscreen.labels import TISSUES
from femurscreen.phantom.anatomy import Anatomy
from femurscreen.phantom.bones import Prim
from femurscreen.phantom.grid import Grid
from femurscreen.phantom.shapes import coverage, smin
from femurscreen.phantom.texture import Tile

Box = tuple[slice, slice, slice]
BIG = np.float32(1e4)
HU_MIN, HU_MAX = -1024, 3071
SLAB_VOXELS = 4_000_000  # voxels per slab of the rendering loop
BLOCK = 8  # largest block edge (voxels) of the sparse evaluation
LIPSCHITZ = 1.5  # safety factor: our approximate distances may change faster than 1 mm/mm

# Tissue labels of the tissue map (PhantomOptions.tissues): soft tissues are told apart by their
# noise-free painted HU, bone by the structure that painted it (cortical shell or interior).
# Segmentation training redraws each tissue's intensity per case (SynthSeg-style). The labels:
# femurscreen.labels.TISSUES.
_SOFT_EDGES_HU = (-400.0, -40.0, 130.0)  # air | fat | soft | dense soft
_METAL_HU = 2000.0


class Points:
    """The voxels of the active blocks of a box: flat indices and (k, j, i) per voxel, grouped
    by block so that a primitive can pick the blocks that meet its own box cheaply."""

    def __init__(self, painter: Painter, box: Box, blocks: np.ndarray) -> None:
        b = painter.block
        start = np.array([s.start for s in box], dtype=np.int32)
        stop = np.array([s.stop for s in box], dtype=np.int32)
        self.block_lo = blocks * b + start
        self.block_hi = np.minimum(self.block_lo + b, stop)
        off = painter.block_offsets
        k = (self.block_lo[:, 0, None] + off[0][None, :]).ravel()
        j = (self.block_lo[:, 1, None] + off[1][None, :]).ravel()
        i = (self.block_lo[:, 2, None] + off[2][None, :]).ravel()
        block_id = np.repeat(np.arange(len(blocks), dtype=np.int32), off[0].size)
        partial = np.any(self.block_hi - self.block_lo < b, axis=1)
        if partial.any():
            valid = (k < stop[0]) & (j < stop[1]) & (i < stop[2])
            k, j, i, block_id = k[valid], j[valid], i[valid], block_id[valid]
        self.k, self.j, self.i, self.block_id = k, j, i, block_id
        nj, ni = painter.grid.shape[1], painter.grid.shape[2]
        self.flat = (k.astype(np.int64) * nj + j) * ni + i
        self.painter = painter
        self._coords: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self.flat.size)

    def coords(self, frame: str = "anat") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if frame not in self._coords:
            a, b = self.painter.frames[frame]
            idx = (self.i.astype(np.float32), self.j.astype(np.float32), self.k.astype(np.float32))
            out = []
            for row in range(3):
                acc = np.full(idx[0].shape, np.float32(b[row]), dtype=np.float32)
                for col in range(3):
                    if abs(a[row, col]) > 1e-12:
                        acc += idx[col] * np.float32(a[row, col])
                out.append(acc)
            self._coords[frame] = (out[0], out[1], out[2])
        return self._coords[frame]

    def select(self, box: Box | None) -> np.ndarray | None:
        """Indices of the points in blocks that meet ``box`` (None: none do)."""
        if box is None:
            return None
        lo = np.array([s.start for s in box])
        hi = np.array([s.stop for s in box])
        hit = np.all((self.block_lo < hi) & (self.block_hi > lo), axis=1)
        if not hit.any():
            return None
        if hit.all():
            return np.arange(len(self), dtype=np.int64)
        return np.flatnonzero(hit[self.block_id])


class Painter:
    """Holds the image being painted and maps array boxes to coordinates in three frames:
    ``world`` (LPS), ``body`` (world minus the patient shift; the outline and the table),
    ``anat`` (the tilted skeleton's frame)."""

    def __init__(self, grid: Grid, anatomy: Anatomy, tile: Tile, tissues: bool = False) -> None:
        self.grid = grid
        self.anatomy = anatomy
        self.tile = tile
        m = grid.matrix
        o = np.asarray(grid.origin, dtype=np.float64)
        r = anatomy.skeleton_rotation
        shift = anatomy.shift
        self.frames = {
            "world": (m, o),
            "body": (m, o - shift),
            "anat": (r.T @ m, r.T @ (o - shift)),
        }
        self.hu = np.empty(grid.shape, dtype=np.float32)
        self.hu[...] = -1000.0
        self.label = np.empty(grid.shape, dtype=np.uint8)
        self.label[...] = 0
        self.hu_flat = self.hu.reshape(-1)
        self.label_flat = self.label.reshape(-1)
        # bone tissue per voxel (TISSUES; 0: not bone), only when a tissue map is asked for
        self.bone_tissue: np.ndarray | None = (
            np.zeros(grid.shape, dtype=np.uint8) if tissues else None
        )
        # block edge (voxels) of the sparse evaluation and its half diagonal (mm)
        # blocks of about 7 mm (4 to 8 voxels) for the sparse evaluation
        self.block = int(np.clip(round(7.0 / float(np.mean(grid.spacing))), 4, BLOCK))
        self.block_offsets = tuple(np.indices((self.block,) * 3, dtype=np.int32).reshape(3, -1))
        self.block_radius = 0.5 * float(np.linalg.norm(np.asarray(grid.spacing) * self.block))
        self.ramp = float(np.mean(grid.spacing))  # width of the partial-volume ramp (mm)
        self.chunk = (0, grid.shape[0])
        self.scratch: dict[str, object] = {}
        self._boxes: dict[tuple, Box | None] = {}

    # --- geometry ----------------------------------------------------------------------
    def to_world(self, points: np.ndarray, frame: str) -> np.ndarray:
        a = self.anatomy
        if frame == "anat":
            return a.to_world(points)
        if frame == "body":
            return np.asarray(points) + a.shift
        return np.asarray(points)

    def box(self, lo, hi, frame: str = "anat") -> Box | None:
        """Array box (whole volume) of the frame's axis-aligned box [lo, hi]."""
        key = (tuple(np.round(lo, 4)), tuple(np.round(hi, 4)), frame)
        if key not in self._boxes:
            lo = np.asarray(lo, dtype=np.float64)
            hi = np.asarray(hi, dtype=np.float64)
            corners = np.array(
                [
                    [(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]]
                    for i in (0, 1)
                    for j in (0, 1)
                    for k in (0, 1)
                ]
            )
            self._boxes[key] = self.grid.slices_covering(self.to_world(corners, frame))
        return self._boxes[key]

    def sub(self, box: Box | None) -> Box | None:
        """``box`` restricted to the current slab."""
        if box is None:
            return None
        k0 = max(box[0].start, self.chunk[0])
        k1 = min(box[0].stop, self.chunk[1])
        if k1 <= k0:
            return None
        return (slice(k0, k1), box[1], box[2])

    def slab(self) -> Box:
        return (slice(*self.chunk), slice(0, self.grid.shape[1]), slice(0, self.grid.shape[2]))

    def coords(self, box: Box, frame: str = "anat") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinates of the voxel centres of ``box``; arrays broadcast to the box shape
        (they stay 1-D slabs when the frame is aligned with the grid)."""
        a, b = self.frames[frame]
        kk = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None, None]
        jj = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :, None]
        ii = np.arange(box[2].start, box[2].stop, dtype=np.float32)[None, None, :]
        out = []
        for row in range(3):
            acc = None
            for col, idx in ((0, ii), (1, jj), (2, kk)):
                w = a[row, col]
                if abs(w) < 1e-12:
                    continue
                term = idx * np.float32(w)
                acc = term if acc is None else acc + term
            if acc is None:
                acc = np.zeros((1, 1, 1), dtype=np.float32)
            out.append(acc + np.float32(b[row]))
        return out[0], out[1], out[2]

    # --- painting ----------------------------------------------------------------------
    def blend(self, box: Box, d: np.ndarray, value, mask_extra: np.ndarray | None = None) -> None:
        """Paint ``value`` (scalar or array of the box shape) where ``d`` < 0, with a
        partial-volume ramp across the surface."""
        shape = tuple(s.stop - s.start for s in box)
        d = np.broadcast_to(d, shape)
        m = d < np.float32(0.5 * self.ramp)
        if mask_extra is not None:
            m &= mask_extra
        if not m.any():
            return
        view = self.hu[box]
        alpha = coverage(d[m], self.ramp)
        v = view[m]
        val: np.ndarray | np.float32
        if isinstance(value, np.ndarray):
            val = np.broadcast_to(value, shape)[m]
        else:
            val = np.float32(value)
        view[m] = v + alpha * (val - v)

    # --- sparse evaluation ---------------------------------------------------------------
    def block_centres(self, box: Box, frame: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinates of the centres of the blocks tiling ``box`` (broadcastable arrays)."""
        b = self.block

        def centres(sl: slice) -> np.ndarray:
            starts = np.arange(sl.start, sl.stop, b)
            ends = np.minimum(starts + b, sl.stop)
            return ((starts + ends - 1) * 0.5).astype(np.float32)

        kk, jj, ii = centres(box[0]), centres(box[1]), centres(box[2])
        a, off = self.frames[frame]
        grids = (ii[None, None, :], jj[None, :, None], kk[:, None, None])
        xyz = []
        for row in range(3):
            acc = np.zeros((1, 1, 1), dtype=np.float32) + np.float32(off[row])
            for col in range(3):
                if abs(a[row, col]) > 1e-12:
                    acc = acc + grids[col] * np.float32(a[row, col])
            xyz.append(acc)
        return xyz[0], xyz[1], xyz[2]

    def block_shape(self, box: Box) -> tuple[int, int, int]:
        b = self.block
        return tuple(-(-(s.stop - s.start) // b) for s in box)

    def points(self, box: Box | None, frame: str, fn, band: tuple[float, float]) -> Points | None:
        """Voxels of ``box`` in blocks where the distance ``fn`` may lie within ``band``
        (e.g. (-inf, ramp) for a solid, (-w, w) for a thin surface), judged from ``fn`` at
        the block centres."""
        if box is None:
            return None
        dc = np.broadcast_to(fn(*self.block_centres(box, frame)), self.block_shape(box))
        slack = LIPSCHITZ * self.block_radius
        active = (dc < band[1] + slack) & (dc > band[0] - slack)
        if not active.any():
            return None
        return Points(self, box, np.argwhere(active).astype(np.int32))

    def upsample(self, coarse: np.ndarray, box: Box) -> np.ndarray:
        """Per-voxel copy of a per-block array over ``box``."""
        b = self.block
        idx = [np.arange(s.stop - s.start) // b for s in box]
        return coarse[np.ix_(*idx)]

    def union(self, prims: list[Prim], frame: str = "anat"):
        """A dense function evaluating the smooth union of ``prims`` (for block centres)."""

        def fn(x, y, z):
            d = None
            for p in prims:
                v = p.fn(x, y, z)
                d = v if d is None else smin(d, v, p.k)
            return d

        return fn

    def field_points(self, prims: list[Prim], pts: Points, frame: str = "anat") -> np.ndarray:
        """Smooth union of ``prims`` at ``pts``, each primitive evaluated near its own box."""
        d = np.full(len(pts), BIG, dtype=np.float32)
        x, y, z = pts.coords(frame)
        for p in prims:
            sel = pts.select(self.box(p.lo - p.k, p.hi + p.k, frame))
            if sel is None:
                continue
            d[sel] = smin(d[sel], p.fn(x[sel], y[sel], z[sel]), p.k)
        return d

    def blend_points(self, pts: Points, d: np.ndarray, value, sel: np.ndarray | None = None):
        """Paint ``value`` (scalar or per-point array) where ``d`` < 0 at ``pts`` (or at the
        subset ``sel`` of them, ``d`` and ``value`` then given on that subset)."""
        m = d < np.float32(0.5 * self.ramp)
        if not m.any():
            return
        flat = pts.flat if sel is None else pts.flat[sel]
        idx = flat[m]
        v = self.hu_flat[idx]
        alpha = coverage(d[m], self.ramp)
        val = value[m] if isinstance(value, np.ndarray) else np.float32(value)
        self.hu_flat[idx] = v + alpha * (val - v)

    def union_box(self, prims: list[Prim], frame: str = "anat") -> Box | None:
        lo = np.min([p.lo - p.k for p in prims], axis=0)
        hi = np.max([p.hi + p.k for p in prims], axis=0)
        return self.box(lo, hi, frame)


def slabs(grid: Grid) -> list[tuple[int, int]]:
    nk = grid.shape[0]
    per = max(1, SLAB_VOXELS // max(1, grid.shape[1] * grid.shape[2]))
    return [(k, min(nk, k + per)) for k in range(0, nk, per)]


def gaussian_weights(sigma: float) -> np.ndarray:
    """The 1-D kernel scipy.ndimage.gaussian_filter uses (truncate=4)."""
    if sigma <= 0:
        return np.ones(1)
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def finish(painter: Painter, rng: np.random.Generator) -> np.ndarray:
    """Noise, point-spread blur, scanner calibration, clip, int16.

    White noise is added before the blur so that one filter pass gives both the PSF and the
    correlated noise texture; its level is set from the kernel so that the final standard
    deviation is the case's noise_sd. Gain and offset are linear, so they commute with the blur.
    """
    a = painter.anatomy
    hu = painter.hu
    sigmas = [a.imaging.psf_sigma_mm / s for s in reversed(painter.grid.spacing)]  # (k, j, i)
    gain = float(np.sqrt(np.prod([np.sum(gaussian_weights(s) ** 2) for s in sigmas])))
    white_sd = a.imaging.noise_sd / gain
    per = max(1, SLAB_VOXELS // max(1, hu.shape[1] * hu.shape[2]))
    if white_sd > 0:
        # uniform bytes are ~5x cheaper than normal deviates, and after the blur (a weighted
        # sum of tens of them) the noise is Gaussian all the same
        step = np.float32(white_sd / np.sqrt((256.0**2 - 1.0) / 12.0))
        for k in range(0, hu.shape[0], per):
            part = hu[k : k + per]
            raw = np.frombuffer(rng.bytes(part.size), dtype=np.int8).reshape(part.shape)
            part += raw.astype(np.float32) * step + step * np.float32(0.5)
    ndimage.gaussian_filter(hu, sigmas, output=hu, mode="nearest")
    out = np.empty(hu.shape, dtype=np.int16)
    scale = np.float32(a.imaging.hu_scale)
    offset = np.float32(a.imaging.hu_offset)
    for k in range(0, hu.shape[0], per):
        part = hu[k : k + per]
        part *= scale
        part += offset
        np.clip(part, HU_MIN, HU_MAX, out=part)
        np.rint(part, out=part)
        out[k : k + per] = part
    return out


def tissue_map(painter: Painter) -> np.ndarray:
    """The tissue label map (TISSUES) of a painted, not yet blurred case.

    Bone voxels carry the bone and layer that painted them; the rest is classed by its
    noise-free HU; metal (an implant painted over bone) by its HU.
    """
    if painter.bone_tissue is None:
        raise ValueError("the painter was made without tissues=True")
    hu = painter.hu
    out = np.digitize(hu, np.asarray(_SOFT_EDGES_HU, dtype=np.float32)).astype(np.uint8)
    bone = painter.bone_tissue > 0
    out[bone] = painter.bone_tissue[bone]
    out[hu >= np.float32(_METAL_HU)] = TISSUES["metal"]
    return out
