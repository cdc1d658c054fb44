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
  HU ``h`` (mg/cm^3 K2HPO4, water 0), over the voxels of the femur label, plus the bone's
  share of the partial-volume fringe just outside the label (its excess over soft tissue);
- DXA pose: shaft axis vertical, neck axis in the projection (coronal) plane; the
  projection direction is perpendicular to both (antero-posterior);
- areal density of a pixel: mass above it / pixel area (g/cm^2); aBMD of a region: its
  mass / its bone area (pixels the femur projects onto);
- femoral neck: a box 15 mm along the neck axis, centred on the narrowest neck of the
  femur's projection (found on its analytic distance field, :func:`neck_waist`), spanning the
  neck across (half length: neck half-width + 5 mm);
- total hip: the femur lateral of the neck box's medial edge (head excluded) and above the
  axial plane 10 mm below the lowest point of the lesser trochanter.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from femurscreen.phantom import shapes as sh
from femurscreen.phantom.anatomy import Anatomy
from femurscreen.phantom.bones import femur_prims
from femurscreen.phantom.scanner import MG_K2HPO4_PER_HU

NECK_BOX_MM = 15.0  # width of the femoral-neck box along the neck axis (Hologic: 1.5 cm)
NECK_BOX_MARGIN_MM = 5.0  # the box reaches this far beyond the neck on each side
TOTAL_HIP_BELOW_LT_MM = 10.0
WAIST_STEP_MM = 0.5  # distal border of the total hip below the lesser trochanter


def _femur_mass_voxels(
    inside: np.ndarray, reference_hu: np.ndarray
) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Voxels carrying the femur's mass and their density (mg/cm^3): the label's voxels at
    ``rho``, and the partial-volume fringe just outside it (the painter blends a surface over
    half a voxel on either side, while the label holds voxel centres inside) at the excess of
    ``rho`` over the soft tissue one voxel further out (their median; clipped at 0). Without the
    fringe the truth depends on the voxel size: 1.5 mm phantoms' total-hip aBMD came out about
    0.07 g/cm^2 short (0.04 at 0.75 mm); with it 1.5 and 0.75 mm agree within 0.001-0.007."""
    idx = np.argwhere(inside)
    lo = np.maximum(idx.min(0) - 4, 0)
    hi = np.minimum(idx.max(0) + 5, inside.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    lab = inside[box]
    ref = reference_hu[box]
    grown = ndimage.binary_dilation(lab)
    ring1 = grown & ~lab  # face neighbours of the label
    ring2 = ndimage.binary_dilation(grown) & ~grown  # the soft tissue one voxel further out
    soft = float(np.median(ref[ring2])) if ring2.any() else 0.0
    excess = np.clip(ref[ring1].astype(np.float64) - soft, 0.0, None)
    k_lab = np.nonzero(lab)
    k_ring = np.nonzero(ring1)
    kji = tuple(np.concatenate([a + o, b + o]) for a, b, o in zip(k_lab, k_ring, lo, strict=True))
    rho = MG_K2HPO4_PER_HU * np.concatenate([ref[k_lab].astype(np.float64), excess])
    is_label = np.concatenate([np.ones(k_lab[0].size, bool), np.zeros(k_ring[0].size, bool)])
    return kji, rho, is_label


def neck_waist(anatomy: Anatomy, side: str) -> tuple[float, float, float]:
    """(distance of the narrowest neck from the head centre along the projected neck axis,
    half-width of the neck there, offset of the neck's middle from the axis) in the DXA
    projection of the analytic femur: its distance field (bones.femur_prims, smooth union) is
    sampled in the DXA pose around the neck, the silhouette is where the field's minimum
    along the AP rays is below zero, and the width across the neck at each position is the
    run of silhouette through the axis (its ends interpolated to the zero crossing). The
    narrowest in projection lies 2-7 mm nearer the head than the neck primitive's own waist:
    the trochanters' smooth union widens the neck's lateral part."""
    f = anatomy.femurs[side]
    prims = femur_prims(f)
    if not prims:
        raise ValueError(f"the {side} femur has no distance primitives")
    u = np.asarray(f.u, dtype=np.float64)
    n = np.asarray(f.n, dtype=np.float64)
    m = n - (n @ u) * u
    m /= np.linalg.norm(m)
    ap = np.cross(u, m)
    nm, nu = float(n @ m), float(n @ u)
    r = f.head_radius
    sig = np.arange(0.9 * r, 1.9 * r, WAIST_STEP_MM)
    tau = np.arange(-40.0, 40.0 + 1e-9, WAIST_STEP_MM)
    ys = np.arange(-35.0, 35.0 + 1e-9, 1.0)
    g = np.full((sig.size, tau.size), np.inf, dtype=np.float32)
    sg, tg = np.meshgrid(sig, tau, indexing="ij")
    s_c = -nm * sg - nu * tg  # in-plane coordinates along m and u
    t_c = -nu * sg + nm * tg
    head = np.asarray(f.head_center, dtype=np.float64)
    for y in ys:
        pts = head + s_c[..., None] * m + t_c[..., None] * u + y * ap
        x, yy, z = (pts[..., i].astype(np.float32) for i in range(3))
        d = prims[0].fn(x, yy, z)  # the smooth union of all primitives, in their order
        for q in prims[1:]:
            d = sh.smin(d, q.fn(x, yy, z), q.k)
        np.minimum(g, d, out=g)
    centre = tau.size // 2
    widths = np.full(sig.size, np.inf)
    mids = np.zeros(sig.size)
    for i, line in enumerate(g):
        if line[centre] >= 0:
            continue
        out_lo = np.flatnonzero(line[:centre] >= 0)
        out_hi = np.flatnonzero(line[centre:] >= 0) + centre
        if out_lo.size == 0 or out_hi.size == 0:
            continue
        a, b = out_lo[-1], out_hi[0]  # first outside samples on either side
        lo = tau[a] + (tau[a + 1] - tau[a]) * line[a] / (line[a] - line[a + 1])
        hi = tau[b - 1] + (tau[b] - tau[b - 1]) * line[b - 1] / (line[b - 1] - line[b])
        widths[i], mids[i] = hi - lo, 0.5 * (hi + lo)
    k = int(np.argmin(widths))
    return float(sig[k]), float(0.5 * widths[k]), float(mids[k])


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
    inside = label == value
    if not inside.any():
        return None
    kji, rho, is_label = _femur_mass_voxels(inside, reference_hu)
    ijk = np.stack([kji[2], kji[1], kji[0]], axis=1).astype(np.float64)
    world = ijk @ np.asarray(matrix).T + np.asarray(origin)
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
    bone[ti[is_label] - ti0, si[is_label] - si0] = True
    # pixel centres in the plane, and their neck-axis coordinates
    tc = (np.arange(shape[0]) + ti0 + 0.5) * px
    sc = (np.arange(shape[1]) + si0 + 0.5) * px
    S, T = np.meshgrid(sc, tc)
    nm, nu = float(n @ m), float(n @ u)
    sigma = -(S * nm + T * nu)  # distance from the head centre towards the shaft
    tau = -S * nu + T * nm
    s_w, r_w, tau_w = neck_waist(anatomy, side)
    fn = (np.abs(sigma - s_w) <= 0.5 * NECK_BOX_MM) & (
        np.abs(tau - tau_w) <= r_w + NECK_BOX_MARGIN_MM
    )
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
