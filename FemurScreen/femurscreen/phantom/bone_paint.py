"""Painting bone: cortex, trabecular network, marrow, the femur labels, and metal implants.

Bone HU at a point inside a bone = a cortical shell of the local thickness over a trabecular
interior, where the interior mixes the trabecular-bone phase and marrow according to the
thresholded texture (see :mod:`femurscreen.phantom.texture`). The femur label is decided at
voxel centres from the same distance field (inside the femur and above the cut plane), so
the ground truth and the image come from one geometry.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from femurscreen.labels import LEFT, RIGHT, TISSUES
from femurscreen.phantom import shapes as sh
from femurscreen.phantom.anatomy import Anatomy, Femur
from femurscreen.phantom.bones import FemurDetail, Prim, femur_detail
from femurscreen.phantom.texture import network
from femurscreen.phantom.voxelize import Painter, Points

LABEL_OF_SIDE = {"left": LEFT, "right": RIGHT}
JOINT_CLEARANCE_MM = 1.0  # pelvis bone never comes closer than this to the femur
TEXTURE_CONTRAST = 0.5  # fraction of the thresholded network's contrast that is kept
HARD_HEAD_THINNING = 0.92  # hard joints: subchondral head cortex at 8 % of the local thickness


def paint_bone(
    p: Painter,
    pts: Points,
    d: np.ndarray,
    *,
    mean_hu: float,
    fraction: float,
    cortex_mm: float,
    cortical_hu: float,
    marrow_hu: float,
    detail: Callable[[np.ndarray, np.ndarray, np.ndarray], FemurDetail] | None = None,
    canal_hu: float = 0.0,
    label: int = 0,
    cut_z: float = -np.inf,
    min_cortex_mm: float = 0.6,
    tissue: tuple[int, int] = (0, 0),
) -> None:
    """Paint one bone given its distance ``d`` at the points ``pts``.

    ``tissue``: the (cortex, interior) tissue labels recorded where the painter keeps a tissue
    map (voxels at least half inside the bone).
    """
    m = d < np.float32(0.5 * p.ramp)
    if not m.any():
        return
    x, y, z = pts.coords("anat")
    px, py, pz = x[m], y[m], z[m]
    dm = d[m]
    cortex: np.ndarray | float = cortex_mm
    frac: np.ndarray | float = fraction
    canal = None
    if detail is not None:
        det = detail(px, py, pz)
        cortex = np.maximum(np.float32(cortex_mm) * det.cortex_factor, np.float32(min_cortex_mm))
        frac = np.float32(fraction) * det.fraction_factor
        canal = det.canal
    solid = (mean_hu - (1.0 - fraction) * marrow_hu) / fraction
    solid = float(np.clip(solid, 150.0, 1500.0))
    net = network(p.tile.sample(px, py, pz), frac)
    # a 0.8 mm voxel averages several trabeculae: keep the network's local mean (bone
    # fraction x solid + marrow) but only part of its voxel-to-voxel contrast
    net = frac + np.float32(TEXTURE_CONTRAST) * (net - frac)
    trab = np.float32(marrow_hu) + np.float32(solid - marrow_hu) * net
    if canal is not None:
        trab = trab + (np.float32(canal_hu) - trab) * canal
    a_c = np.clip(np.float32(0.5) + (dm + cortex) * np.float32(1.0 / p.ramp), 0.0, 1.0)
    bone = trab + (np.float32(cortical_hu) - trab) * a_c
    alpha = sh.coverage(dm, p.ramp)
    idx = pts.flat[m]
    v = p.hu_flat[idx]
    p.hu_flat[idx] = v + alpha * (bone - v)
    if p.bone_tissue is not None and tissue[0]:
        half = alpha >= 0.5
        layer = np.where(a_c >= 0.5, np.uint8(tissue[0]), np.uint8(tissue[1]))
        p.bone_tissue.reshape(-1)[idx[half]] = layer[half]
    if label:
        wz = pts.coords("world")[2][m]
        sel = (dm <= 0) & (wz >= np.float32(cut_z))
        p.label_flat[idx[sel]] = label


def joint_exclusion(
    a: Anatomy, side: str, femur_fn, x: np.ndarray, y: np.ndarray, z: np.ndarray, d: np.ndarray
) -> np.ndarray:
    """Pelvis distance ``d`` with the hip joint of ``side`` hollowed out: no pelvic bone within
    head radius + joint space of the head centre (so the gap is exact), and none closer than
    JOINT_CLEARANCE_MM to the rest of the femur (neck, trochanters). A hard joint keeps only
    its own gap (0-4 mm): the cup may touch the head, as it looks on real CT at 3 mm."""
    f = a.femurs[side]
    r = f.head_radius + a.pelvis.acetabula[side].gap
    d = np.maximum(d, -sh.sphere(x, y, z, f.head_center, r))
    clearance = np.float32(0.0 if a.hard_joint else JOINT_CLEARANCE_MM)
    near = np.flatnonzero(d < np.float32(2.0) + clearance)
    if near.size:
        fd = femur_fn(x[near], y[near], z[near])
        d[near] = np.maximum(d[near], clearance - fd)
    return d


def pelvis_distance(a: Anatomy):
    """Dense signed distance of the pelvic bones as painted (for analysis and tests)."""
    from femurscreen.phantom.bones import femur_prims, pelvis_prims

    prims = pelvis_prims(a)
    fem = {side: femur_prims(f) for side, f in a.femurs.items()}

    def union(ps):
        def fn(x, y, z):
            d = None
            for q in ps:
                v = q.fn(x, y, z)
                d = v if d is None else sh.smin(d, v, q.k)
            return d

        return fn

    pelvis_fn = union(prims)

    def fn(x, y, z):
        x, y, z = (np.asarray(c, dtype=np.float32) for c in (x, y, z))
        d = np.array(pelvis_fn(x, y, z), dtype=np.float32)
        for side in a.femurs:
            d = joint_exclusion(a, side, union(fem[side]), x, y, z, d)
        return d

    return fn


def _solid_points(p: Painter, prims: list[Prim]) -> tuple[Points, np.ndarray] | None:
    pts = p.points(p.sub(p.union_box(prims)), "anat", p.union(prims), (-np.inf, p.ramp))
    if pts is None:
        return None
    return pts, p.field_points(prims, pts)


def paint_skeleton(
    p: Painter,
    femur_prims: dict[str, list[Prim]],
    pelvis_prims: list[Prim],
    spine_prims: list[list[Prim]],
) -> None:
    """Pelvis and spine, then both femurs with their labels (current slab)."""
    a = p.anatomy
    den = a.density
    fem: dict[str, tuple[Points, np.ndarray]] = {}
    for side, prims in femur_prims.items():
        got = _solid_points(p, prims)
        if got is not None:
            fem[side] = got

    got = _solid_points(p, pelvis_prims)
    if got is not None:
        pts, d = got
        x, y, z = pts.coords("anat")
        for side in a.femurs:
            sel = pts.select(p.union_box(femur_prims[side]))
            if sel is not None:
                d[sel] = joint_exclusion(
                    a, side, p.union(femur_prims[side]), x[sel], y[sel], z[sel], d[sel]
                )

        def pelvis_detail(x, y, z):
            # dense subchondral bone lines the socket; elsewhere a thin cortex
            near = np.zeros_like(x)
            roof = np.zeros_like(x)
            for side, f in a.femurs.items():
                r = f.head_radius + a.pelvis.acetabula[side].gap
                dx, dy, dz = x - f.head_center[0], y - f.head_center[1], z - f.head_center[2]
                rr = sh.length(dx, dy, dz)
                n = sh.smoothstep(r + 4.0, r + 2.0, rr)
                near = np.maximum(near, n)
                if a.hard_joint:  # the sourcil: a dense roof right above the head
                    up = dz / np.maximum(rr, np.float32(1e-3))
                    cap = sh.smoothstep(r + 7.0, r + 1.0, rr) * sh.smoothstep(0.25, 0.6, up)
                    roof = np.maximum(roof, cap)
            if a.hard_joint:
                return FemurDetail(
                    canal=None,
                    cortex_factor=1.0 + 1.5 * near + 4.0 * roof,
                    fraction_factor=1.0 + 0.6 * roof,
                )
            one = np.ones_like(x)
            return FemurDetail(canal=None, cortex_factor=1.0 + 1.5 * near, fraction_factor=one)

        if a.hard_joint:  # pelvic bone with the femur's own density and texture
            mean_hu, fraction, cortical_hu = den.trabecular_hu, den.bvtv, den.cortical_hu
        else:
            mean_hu, fraction = 0.8 * den.trabecular_hu + 10.0, 0.85 * den.bvtv
            cortical_hu = den.cortical_hu - 80.0
        paint_bone(
            p,
            pts,
            d,
            mean_hu=mean_hu,
            fraction=fraction,
            cortex_mm=max(0.8, 0.45 * den.cortex_mm + 0.4),
            cortical_hu=cortical_hu,
            marrow_hu=den.marrow_hu,
            detail=pelvis_detail,
            tissue=(TISSUES["pelvis_cortex"], TISSUES["pelvis_trabecular"]),
        )

    for prims in spine_prims:
        got = _solid_points(p, prims)
        if got is None:
            continue
        paint_bone(
            p,
            got[0],
            got[1],
            mean_hu=0.75 * den.trabecular_hu + 15.0,
            fraction=0.85 * den.bvtv,
            cortex_mm=max(0.8, 0.4 * den.cortex_mm + 0.3),
            cortical_hu=den.cortical_hu - 120.0,
            marrow_hu=den.marrow_hu,
            tissue=(TISSUES["spine_cortex"], TISSUES["spine_trabecular"]),
        )

    head_thinning = HARD_HEAD_THINNING if a.hard_joint else 0.45
    for side, (pts, d) in fem.items():
        f = a.femurs[side]
        paint_bone(
            p,
            pts,
            d,
            mean_hu=den.trabecular_hu,
            fraction=den.bvtv,
            cortex_mm=den.cortex_mm,
            cortical_hu=den.cortical_hu,
            marrow_hu=den.marrow_hu,
            detail=lambda x, y, z, f=f: femur_detail(f, x, y, z, head_thinning),  # type: ignore[misc]
            canal_hu=den.canal_hu,
            label=LABEL_OF_SIDE[side],
            cut_z=a.cut_z(side),
            min_cortex_mm=0.15 if a.hard_joint else 0.6,
            tissue=(TISSUES["femur_cortex"], TISSUES["femur_trabecular"]),
        )


# --------------------------------------------------------------------------------------
# implants


def implant_prims(f: Femur, kind: str) -> list[Prim]:
    """A dynamic hip screw (lag screw, barrel, side plate, cortical screws) or three
    cannulated screws, placed along the neck axis from the lateral cortex into the head."""
    H, n, u, J = f.head_center, f.n, f.u, f.junction
    r_h, L = f.head_radius, f.neck_length
    tip = H + (r_h - 9.0) * n
    lateral_exit = J - (f.shaft_top_radius * 1.6 + 6.0) * n
    prims: list[Prim] = []

    def cap(a, b, r):
        return Prim.around(lambda x, y, z: sh.capsule(x, y, z, a, b, r), [a, b], r + 1)

    if kind == "screws":
        e1 = sh.unit(u - (u @ n) * n)
        e2 = np.cross(n, e1)
        for o in (7.0 * e1, -6.0 * e1 + 6.0 * e2, -6.0 * e1 - 6.0 * e2):
            prims.append(cap(tip + o, lateral_exit + o, 3.3))
        return prims
    prims.append(cap(tip, J, 4.2))
    prims.append(cap(J + 0.2 * L * n, lateral_exit, 6.5))
    plate_top = lateral_exit + 4.0 * f.lateral
    t_exit = float((plate_top - J) @ u)
    a = J + (t_exit) * u + (f.shaft_radius + 3.0) * f.lateral
    b = J + (t_exit - 85.0) * u + (f.shaft_radius + 2.5) * f.lateral
    axes = np.stack([f.lateral, f.posterior, u])
    center = 0.5 * (a + b)
    half = np.array([2.5, 8.0, 0.5 * np.linalg.norm(a - b)])

    def plate(x, y, z):
        px, py, pz = x - center[0], y - center[1], z - center[2]
        q = [
            np.abs(sh.dot(px, py, pz, ax)) - np.float32(h) for ax, h in zip(axes, half, strict=True)
        ]
        out = sh.length(np.maximum(q[0], 0), np.maximum(q[1], 0), np.maximum(q[2], 0))
        return out + np.minimum(np.maximum(np.maximum(q[0], q[1]), q[2]), 0)

    prims.append(Prim.around(plate, [a, b], 10.0))
    for t in (-25.0, -45.0, -65.0):
        c = J + (t_exit + t) * u
        prims.append(
            cap(c + (f.shaft_radius + 4.0) * f.lateral, c - (f.shaft_radius + 3.0) * f.lateral, 2.2)
        )
    return prims


def paint_implant(p: Painter, prims: list[Prim], hu: float, streak: dict | None) -> None:
    got = _solid_points(p, prims)
    if got is not None:
        p.blend_points(got[0], got[1], hu)
    if not streak:
        return
    # streaks in the axial plane around the screw axis (world frame), a cheap stand-in for
    # the photon-starvation and beam-hardening artefacts of metal
    a_w, b_w = streak["a"], streak["b"]
    lo = np.minimum(a_w, b_w) - [90, 90, 2]
    hi = np.maximum(a_w, b_w) + [90, 90, 2]
    sbox = p.sub(p.box(lo, hi, "world"))
    if sbox is None:
        return
    x, y, z = p.coords(sbox, "world")
    dz = b_w[2] - a_w[2]
    t = np.clip((z - np.float32(a_w[2])) * np.float32(1.0 / dz), 0.0, 1.0)
    cx = np.float32(a_w[0]) + t * np.float32(b_w[0] - a_w[0])
    cy = np.float32(a_w[1]) + t * np.float32(b_w[1] - a_w[1])
    dx, dy = x - cx, y - cy
    rho = sh.length(dx, dy)
    theta = np.arctan2(dy, dx)
    pattern = np.cos(np.float32(streak["n"]) * theta + np.float32(streak["phase"])) ** 5
    amp = (
        np.float32(streak["amp"])
        * np.exp(-rho * np.float32(1 / 45.0))
        * (1 - np.exp(-rho * np.float32(1 / 6.0)))
    )
    view = p.hu[sbox]
    inside = view > np.float32(-400.0)
    view += np.where(inside, amp * pattern, np.float32(0.0))
