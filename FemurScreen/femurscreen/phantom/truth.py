"""True femoral-neck and total-hip areal BMD of a phantom case, from its own anatomy.

Why: the CT-derived aBMD of :mod:`femurscreen.bmd` must be checked against a truth that does
not come from the estimator. This module knows the case's analytic femur (head centre and
radius, neck axis, shaft axis, narrowest-neck position, lesser trochanter) and its noise-free
density field before any scanner, blur or noise; the estimator knows none of them and works
from the CT and a mask. Code paths differ too: here label voxels are scattered onto the
projection plane (mass binned per pixel), there the CT is resampled along rays.

Definitions (shared with :mod:`femurscreen.bmd.projection`, which must find them from the
image):

- density: equivalent mineral density ``rho = MG_K2HPO4_PER_HU * h`` of the painted reference
  HU ``h`` (mg/cm^3 K2HPO4, water 0), over the voxels of the femur label;
- DXA pose: shaft axis vertical, neck axis in the projection (coronal) plane; the
  projection direction is perpendicular to both (antero-posterior);
- areal density of a pixel: mass above it / pixel area (g/cm^2); aBMD of a region: its
  mass / its bone area (pixels the femur projects onto);
- femoral neck: a box 15 mm along the neck axis, centred on the narrowest neck, spanning the
  neck across (half length: neck half-width + 5 mm);
- total hip: the femur lateral of the neck box's medial edge (head excluded) and above the
  axial plane 10 mm below the lowest point of the lesser trochanter.
"""

from __future__ import annotations

import numpy as np

from femurscreen.phantom.anatomy import Anatomy
from femurscreen.phantom.scanner import MG_K2HPO4_PER_HU

NECK_BOX_MM = 15.0  # width of the femoral-neck box along the neck axis (Hologic: 1.5 cm)
NECK_BOX_MARGIN_MM = 5.0  # the box reaches this far beyond the neck on each side
TOTAL_HIP_BELOW_LT_MM = 10.0  # distal border of the total hip below the lesser trochanter


def neck_waist(anatomy: Anatomy, side: str) -> tuple[float, float]:
    """(distance of the narrowest neck from the head centre along the neck axis, neck
    half-width there in the projection plane) of the analytic femur (see bones.femur_prims)."""
    f = anatomy.femurs[side]
    s_w = f.head_radius + 0.35 * (f.neck_length - f.head_radius)
    return float(s_w), float(f.neck_waist_ratio * f.head_radius)


def side_truth(
    anatomy: Anatomy,
    side: str,
    reference_hu: np.ndarray,
    label: np.ndarray,
    value: int,
    matrix: np.ndarray,
    origin: np.ndarray,
    spacing: tuple[float, float, float],
) -> dict[str, float] | None:
    """True fn/th aBMD (g/cm^2) of one femur; None when its label is empty."""
    kji = np.nonzero(label == value)
    if kji[0].size == 0:
        return None
    ijk = np.stack([kji[2], kji[1], kji[0]], axis=1).astype(np.float64)
    world = ijk @ np.asarray(matrix).T + np.asarray(origin)
    rho = MG_K2HPO4_PER_HU * reference_hu[kji].astype(np.float64)
    f = anatomy.femurs[side]
    rot = anatomy.skeleton_rotation
    u = rot @ f.u
    n = rot @ f.n  # from the shaft towards the head
    m = n - (n @ u) * u
    m /= np.linalg.norm(m)
    head = anatomy.to_world(f.head_center)
    rel = world - head
    s = rel @ m
    t = rel @ u
    px = max(1.0, float(max(spacing)))
    si = np.floor(s / px).astype(np.int64)
    ti = np.floor(t / px).astype(np.int64)
    si0, ti0 = si.min(), ti.min()
    shape = (int(ti.max() - ti0 + 1), int(si.max() - si0 + 1))
    voxel_mm3 = float(np.prod(spacing))
    mass = np.zeros(shape)
    np.add.at(mass, (ti - ti0, si - si0), rho * voxel_mm3 / 1000.0)  # mg
    bone = np.zeros(shape, dtype=bool)
    bone[ti - ti0, si - si0] = True
    # pixel centres in the plane, and their neck-axis coordinates
    tc = (np.arange(shape[0]) + ti0 + 0.5) * px
    sc = (np.arange(shape[1]) + si0 + 0.5) * px
    S, T = np.meshgrid(sc, tc)
    nm, nu = float(n @ m), float(n @ u)
    sigma = -(S * nm + T * nu)  # distance from the head centre towards the shaft
    tau = -S * nu + T * nm
    s_w, r_w = neck_waist(anatomy, side)
    fn = (np.abs(sigma - s_w) <= 0.5 * NECK_BOX_MM) & (np.abs(tau) <= r_w + NECK_BOX_MARGIN_MM)
    z = head[2] + S * m[2] + T * u[2]
    z_lo = anatomy.lesser_trochanter_lowest_z(side) - TOTAL_HIP_BELOW_LT_MM
    th = (sigma >= s_w - 0.5 * NECK_BOX_MM) & (z >= z_lo)
    area_cm2 = px * px / 100.0
    out: dict[str, float] = {}
    for name, roi in (("fn", fn), ("th", th)):
        sel = roi & bone
        if not sel.any():
            return None
        out[f"{name}_abmd_g_cm2"] = float(mass[sel].sum() / 1000.0 / (sel.sum() * area_cm2))
        out[f"{name}_area_cm2"] = float(sel.sum() * area_cm2)
    return out
