"""Signed-distance primitives on numpy coordinate arrays (negative inside, millimetres).

Every function takes the point coordinates as three arrays ``x, y, z`` that broadcast
against each other (an axis-aligned grid passes 1-D slabs such as ``(1, 1, n)``, an oblique
grid full 3-D arrays), so that the same anatomy code serves every direction matrix without a
separate fast path. Several shapes are first-order approximations of a true distance (the
ellipsoid, the tapered capsule); that is enough for smooth unions and for shells a few
millimetres thick, and it keeps each primitive at a dozen array operations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Vec = np.ndarray  # shape (3,), float64 parameters
VecLike = np.ndarray | Sequence[float]  # what unit() and rotation() accept
Arr = np.ndarray  # float32 coordinate or distance arrays

TINY = 1e-6


def unit(v: VecLike) -> Vec:
    """``v`` scaled to length 1."""
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def rotation(axis: VecLike, angle_deg: float) -> np.ndarray:
    """Rotation matrix about ``axis`` by ``angle_deg`` (right-hand rule)."""
    a = unit(axis)
    t = np.deg2rad(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def dot(x: Arr, y: Arr, z: Arr, v: Vec) -> Arr:
    """Scalar product of the points with a constant vector (zero terms skipped)."""
    out = None
    for c, w in ((x, v[0]), (y, v[1]), (z, v[2])):
        if w == 0:
            continue
        term = c * np.float32(w)
        out = term if out is None else out + term
    return out if out is not None else np.zeros_like(x)


def length(*parts: Arr) -> Arr:
    """Euclidean norm of the component arrays."""
    acc = parts[0] * parts[0]
    for p in parts[1:]:
        acc = acc + p * p
    return np.sqrt(acc)


def sphere(x: Arr, y: Arr, z: Arr, center: Vec, radius: float) -> Arr:
    return length(x - center[0], y - center[1], z - center[2]) - np.float32(radius)


def ellipsoid(x: Arr, y: Arr, z: Arr, center: Vec, axes: np.ndarray, radii: Vec) -> Arr:
    """Approximate distance to an ellipsoid whose semi-axes ``radii`` lie along the rows of
    ``axes`` (orthonormal). First-order estimate k0 (k0 - 1) / k1, exact on the axes."""
    px, py, pz = x - center[0], y - center[1], z - center[2]
    k0sq = None
    k1sq = None
    for row, r in zip(axes, radii, strict=True):
        q = dot(px, py, pz, row)
        a = q * np.float32(1.0 / r)
        b = q * np.float32(1.0 / (r * r))
        k0sq = a * a if k0sq is None else k0sq + a * a
        k1sq = b * b if k1sq is None else k1sq + b * b
    assert k0sq is not None and k1sq is not None  # three axes, always
    k0 = np.sqrt(k0sq)
    k1 = np.sqrt(k1sq) + np.float32(TINY)
    return k0 * (k0 - 1) / k1


def segment_param(x: Arr, y: Arr, z: Arr, a: Vec, b: Vec) -> tuple[Arr, Arr]:
    """Clamped position ``t`` in [0, 1] along segment a-b and the distance to that point."""
    ba = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    inv = 1.0 / float(ba @ ba)
    px, py, pz = x - a[0], y - a[1], z - a[2]
    t = np.clip(dot(px, py, pz, ba * inv), 0.0, 1.0)
    d = length(px - t * np.float32(ba[0]), py - t * np.float32(ba[1]), pz - t * np.float32(ba[2]))
    return t, d


def capsule(x: Arr, y: Arr, z: Arr, a: Vec, b: Vec, ra: float, rb: float | None = None) -> Arr:
    """Capsule (``rb`` None) or tapered capsule from ``a`` (radius ra) to ``b`` (radius rb)."""
    t, d = segment_param(x, y, z, a, b)
    if rb is None or rb == ra:
        return d - np.float32(ra)
    return d - (np.float32(ra) + t * np.float32(rb - ra))


def plane(x: Arr, y: Arr, z: Arr, point: Vec, normal: Vec) -> Arr:
    """Signed distance to a plane; positive on the side ``normal`` points to."""
    n = unit(normal)
    return dot(x, y, z, n) - np.float32(float(n @ np.asarray(point, dtype=np.float64)))


def smin(a: Arr, b: Arr, k: float) -> Arr:
    """Quadratic smooth minimum: equals min(a, b) wherever |a - b| >= k."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.maximum(np.float32(k) - np.abs(a - b), 0) * np.float32(1.0 / k)
    return np.minimum(a, b) - h * h * np.float32(k * 0.25)


def smax(a: Arr, b: Arr, k: float) -> Arr:
    """Smooth maximum (smooth intersection)."""
    return -smin(-a, -b, k)


def shell(d: Arr, thickness: float | Arr) -> Arr:
    """A shell of ``thickness`` centred on the surface of ``d``."""
    return np.abs(d) - np.float32(0.5) * thickness


def superellipse(x: Arr, y: Arr, cx: Arr | np.floating, cy: Arr, a: Arr, b: Arr) -> Arr:
    """Radial distance to the 2-D superellipse |dx/a|^2.5 + |dy/b|^2.5 = 1.

    Distance along the ray from the centre: exact on the axes and at most a few millimetres
    off elsewhere, which only varies fat thicknesses slightly. The exponent 2.5 (a boxy
    ellipse, like a trunk on a table) is fixed so that the powers reduce to square roots.
    """
    dx = x - cx
    dy = y - cy
    ux = np.abs(dx) / a
    uy = np.abs(dy) / b
    f = ux * ux * np.sqrt(ux) + uy * uy * np.sqrt(uy)
    rho = length(dx, dy)
    return rho * (1 - np.power(np.maximum(f, np.float32(1e-6)), np.float32(-0.4)))


class Profile:
    """A piecewise-linear function of one coordinate, tabulated every ``step`` mm for fast
    lookup on large arrays (np.interp works in float64 and searches per element)."""

    def __init__(self, xp, fp, step: float = 1.0) -> None:
        xp = np.asarray(xp, dtype=np.float64)
        self.x0 = float(xp[0])
        self.inv = 1.0 / step
        grid = np.arange(xp[0], xp[-1] + step, step)
        self.table = np.interp(grid, xp, np.asarray(fp, dtype=np.float64)).astype(np.float32)

    def __call__(self, x: Arr) -> Arr:
        i = np.clip(
            (x - np.float32(self.x0)) * np.float32(self.inv) + np.float32(0.5),
            0,
            self.table.size - 1,
        )
        return self.table[i.astype(np.int32)]


def smoothstep(e0: float, e1: float, x: Arr) -> Arr:
    """0 below ``e0``, 1 above ``e1`` (or reversed if e0 > e1), cubic in between."""
    t = np.clip((x - np.float32(e0)) * np.float32(1.0 / (e1 - e0)), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def coverage(d: Arr, width: float) -> Arr:
    """Fraction of a voxel of size ``width`` inside the surface d = 0 (a linear ramp).

    Used to paint every boundary with partial-volume values instead of a staircase.
    """
    return np.clip(np.float32(0.5) - d * np.float32(1.0 / width), 0.0, 1.0)
