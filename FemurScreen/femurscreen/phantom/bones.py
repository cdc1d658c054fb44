"""Bones as smooth unions of distance primitives, with their bounding boxes.

Each bone is a list of :class:`Prim` (a distance function in the anatomical frame plus its
axis-aligned box); the renderer evaluates a primitive only inside its own box, padded by the
blending radius, which is what keeps the pelvis affordable at 0.8 mm. The femur also exposes
the per-point quantities its painting needs (position along the shaft, the head and Ward's
triangle weights) so that cortex thickness, marrow canal and trabecular density can vary
along the bone as they do in a real proximal femur.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from femurscreen.phantom import shapes as sh
from femurscreen.phantom.anatomy import SIDE_SIGN, Anatomy, Femur, Vertebra

Field = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Prim:
    """A distance primitive, its box (anatomical frame, mm) and its smooth-union radius."""

    fn: Field
    lo: np.ndarray
    hi: np.ndarray
    k: float = 0.0

    @staticmethod
    def around(fn: Field, points: list[np.ndarray], pad: float, k: float = 0.0) -> Prim:
        pts = np.asarray(points, dtype=np.float64)
        return Prim(fn, pts.min(axis=0) - pad, pts.max(axis=0) + pad, k)


# --------------------------------------------------------------------------------------
# femur


def femur_prims(f: Femur) -> list[Prim]:
    """Head, neck, shaft, trochanters and intertrochanteric crest of one femur."""
    H, n, u, J, L = f.head_center, f.n, f.u, f.junction, f.neck_length
    r_h = f.head_radius
    e1 = sh.unit(u - (u @ n) * n)  # superior direction across the neck
    e2 = np.cross(n, e1)  # antero-posterior direction across the neck
    s_w = r_h + 0.35 * (L - r_h)
    r_w = f.neck_waist_ratio * r_h
    r_0 = 0.92 * r_h
    r_l = 1.05 * r_h

    def neck(x, y, z):
        px, py, pz = x - H[0], y - H[1], z - H[2]
        s = -sh.dot(px, py, pz, n)
        q1 = sh.dot(px, py, pz, e1)
        q2 = sh.dot(px, py, pz, e2) * np.float32(1.0 / 0.8)
        radial = sh.length(q1, q2)
        a = (s - np.float32(s_w)) * np.float32(1.0 / s_w)
        b = (s - np.float32(s_w)) * np.float32(1.0 / (L - s_w))
        r = np.where(s < s_w, r_w + (r_0 - r_w) * a * a, r_w + (r_l - r_w) * b * b)
        d = (radial - r) * np.float32(0.8)
        return np.maximum(d, np.maximum(-s, s - np.float32(L + 6.0)))

    r_sh = f.shaft_radius
    r_top = f.shaft_top_radius
    t_lt = f.lt_level
    t_top = 4.0

    def shaft(x, y, z):
        px, py, pz = x - J[0], y - J[1], z - J[2]
        t = sh.dot(px, py, pz, u)
        radial = sh.length(
            px - t * np.float32(u[0]), py - t * np.float32(u[1]), pz - t * np.float32(u[2])
        )
        r = r_sh + (r_top - r_sh) * sh.smoothstep(t_lt - 6.0, 10.0, t)
        r = r - np.float32(0.012) * np.maximum(np.float32(t_lt - 40.0) - t, 0)
        # a dome on top (half ellipsoid, height 0.6 r), under the neck and greater trochanter
        above = np.maximum(t - np.float32(t_top), 0) * np.float32(1.0 / 0.6)
        return (sh.length(radial, above) - r) * np.where(above > 0, np.float32(0.6), 1)

    gt_c, gt_ax, gt_r = f.gt_center, f.gt_axes, f.gt_radii
    lt_c, lt_ax, lt_r = f.lt_center, f.lt_axes, f.lt_radii
    crest_a = gt_c - 0.45 * gt_r[2] * u + 0.5 * gt_r[1] * f.posterior
    crest_b = lt_c + 2.0 * u

    return [
        Prim.around(lambda x, y, z: sh.sphere(x, y, z, H, r_h), [H], r_h + 1),
        Prim.around(neck, [H, J], r_l + 4, k=5.0),
        Prim.around(shaft, [J + t_top * u, J - 400.0 * u], r_top + 2, k=10.0),
        Prim.around(
            lambda x, y, z: sh.ellipsoid(x, y, z, gt_c, gt_ax, gt_r), [gt_c], gt_r.max() + 1, k=9
        ),
        Prim.around(
            lambda x, y, z: sh.ellipsoid(x, y, z, lt_c, lt_ax, lt_r), [lt_c], lt_r.max() + 1, k=7
        ),
        Prim.around(
            lambda x, y, z: sh.capsule(x, y, z, crest_a, crest_b, 5.5, 4.5),
            [crest_a, crest_b],
            7.0,
            k=6.0,
        ),
    ]


@dataclass
class FemurDetail:
    """Per-point modifiers of the femur's painting, evaluated on points inside the bone."""

    canal: np.ndarray  # 0 in the metaphysis, 1 in the fatty medullary canal of the shaft
    cortex_factor: np.ndarray  # multiplies the case's cortical thickness
    fraction_factor: np.ndarray  # multiplies the case's trabecular volume fraction


def femur_detail(
    f: Femur, x: np.ndarray, y: np.ndarray, z: np.ndarray, head_thinning: float = 0.45
) -> FemurDetail:
    """Thin cortex on the head, thick cortex on the shaft, fatty canal below the lesser
    trochanter, dense principal compressive trabeculae in the head, sparse Ward's triangle.
    ``head_thinning``: fraction of the cortex lost on the head (hard joints: most of it)."""
    J, u, H, n = f.junction, f.u, f.head_center, f.n
    t = sh.dot(x - J[0], y - J[1], z - J[2], u)
    t_lt = f.lt_level
    canal = sh.smoothstep(t_lt - 6.0, t_lt - 38.0, t)
    shaft = sh.smoothstep(t_lt + 4.0, t_lt - 28.0, t)
    rh = sh.length(x - H[0], y - H[1], z - H[2])
    head = sh.smoothstep(f.head_radius * 1.02, f.head_radius * 0.75, rh)
    e1 = sh.unit(u - (u @ n) * n)
    ward_c = J + 0.42 * f.neck_length * n - 0.2 * f.head_radius * e1
    ward = sh.smoothstep(
        0.5 * f.head_radius,
        0.15 * f.head_radius,
        sh.length(x - ward_c[0], y - ward_c[1], z - ward_c[2]),
    )
    cortex_factor = (1.0 + 1.0 * shaft) * (1.0 - head_thinning * head)
    fraction_factor = (1.0 + 0.35 * head) * (1.0 - 0.55 * ward)
    return FemurDetail(canal=canal, cortex_factor=cortex_factor, fraction_factor=fraction_factor)


# --------------------------------------------------------------------------------------
# pelvis


def pelvis_prims(a: Anatomy) -> list[Prim]:
    """Both hip bones (acetabulum, ilium, ischium, pubis) and the sacrum."""
    p = a.pelvis
    s = p.scale
    prims: list[Prim] = []
    for side, sign in SIDE_SIGN.items():
        f = a.femurs[side]
        ac = p.acetabula[side]
        H = f.head_center
        r_in = f.head_radius + ac.gap
        r_mid = r_in + 0.5 * ac.wall
        opening = ac.opening(sign)
        rim = ac.rim
        wall = ac.wall

        def cup(x, y, z, H=H, r_mid=r_mid, wall=wall, opening=opening, rim=rim):
            px, py, pz = x - H[0], y - H[1], z - H[2]
            d = np.abs(sh.length(px, py, pz) - np.float32(r_mid)) - np.float32(0.5 * wall)
            return np.maximum(d, sh.dot(px, py, pz, opening) - np.float32(rim))

        prims.append(Prim.around(cup, [H], r_in + wall + 1, k=0.0))

        wc = p.wing_center * np.array([sign, 1, 1])
        wr = p.wing_radii
        th0 = p.wing_thickness
        crest, asis, si = p.crest_z, p.asis_y, p.si_x

        def wing(x, y, z, wc=wc, sign=sign, th0=th0, crest=crest, asis=asis, si=si, wr=wr):
            d = sh.ellipsoid(x, y, z, wc, np.eye(3), wr)
            th = (
                th0
                + 5.0 * sh.smoothstep(crest - 18.0, crest, z)
                + 12.0 * sh.smoothstep(40.0 * s, 75.0 * s, y)
                + 13.0 * sh.smoothstep(58.0 * s, 26.0 * s, z)
            )
            d = sh.shell(d, th)
            d = np.maximum(d, np.float32(si) - np.float32(sign) * x)
            d = np.maximum(d, np.float32(asis) + np.float32(0.3) * (np.float32(crest) - z) - y)
            d = sh.smax(d, z - np.float32(crest), 5.0)
            return np.maximum(d, np.float32(18.0 * s) - z)

        prims.append(
            Prim(
                wing,
                np.array([min(sign * si, sign * (p.crest_x + 12)), asis - 2, 15 * s]),
                np.array([max(sign * si, sign * (p.crest_x + 12)), 95.0 * s, crest + 2]),
                k=6.0,
            )
        )

        # thick body of the ilium above the cup, and the column to the sacroiliac joint
        zz = 48.0 * s
        top = np.array([sign * (p.wing_x(0.0, zz) - 6.0), 0.0, zz])
        base = H + np.array([-sign * 6.0, 4.0, r_in + 2.0])
        prims.append(_capsule(base, top, 15.0 * s, 11.0 * s, k=8.0))
        post = H + np.array([-sign * 14.0, 20.0 * s, 8.0 * s])
        si_pt = np.array([sign * (si + 8.0 * s), 50.0 * s, 62.0 * s])
        prims.append(_capsule(post, si_pt, 13.0 * s, 12.0 * s, k=8.0))
        psis_a = np.array([sign * (si + 8.0 * s), 45.0 * s, 50.0 * s])
        psis_b = np.array([sign * (si + 12.0 * s), 80.0 * s, crest - 14.0])
        prims.append(_capsule(psis_a, psis_b, 12.0 * s, 10.0 * s, k=8.0))

        # posterior column (to the ischial spine) and anterior column (to the pubic ramus):
        # in axial slices through the head the socket is a thick wedge of bone, not a shell
        hx = abs(H[0])
        spine = np.array([sign * (hx - 42.0 * s), 44.0 * s, -10.0 * s])
        pc_a = H + np.array([-sign * 6.0, r_in + 7.0, 4.0])
        prims.append(_capsule(pc_a, spine, 10.0 * s, 6.0 * s, k=7.0))
        ac_a = H + np.array([-sign * 4.0, -(r_in + 5.0), 2.0])
        ac_b = np.array([sign * (hx - 35.0 * s), -44.0 * s, -12.0 * s])
        prims.append(_capsule(ac_a, ac_b, 8.0 * s, 9.0 * s, k=7.0))

        # pubis and ischium around the obturator foramen
        sup_a = H + np.array([-sign * 20.0, -20.0 * s, -8.0 * s])
        sup_b = np.array([sign * 20.0 * s, -56.0 * s, -20.0 * s])
        prims.append(_capsule(sup_a, sup_b, 10.0 * s, 8.5 * s, k=6.0))
        body_a = np.array([sign * 12.5 * s, -58.0 * s, -14.0 * s])
        body_b = np.array([sign * 14.0 * s, -52.0 * s, -44.0 * s])
        prims.append(_capsule(body_a, body_b, 10.0 * s, 9.0 * s, k=6.0))
        tub = np.array([sign * (hx - 32.0 * s), 22.0 * s, -62.0 * s])
        inf_a = np.array([sign * 16.0 * s, -50.0 * s, -44.0 * s])
        inf_b = tub + np.array([-sign * 6.0 * s, -14.0 * s, -4.0 * s])
        prims.append(_capsule(inf_a, inf_b, 6.5 * s, 8.0 * s, k=5.0))
        isch_a = H + np.array([-sign * 12.0, 18.0 * s, -14.0 * s])
        prims.append(_capsule(isch_a, tub, 14.0 * s, 12.0 * s, k=8.0))
        prims.append(
            Prim.around(
                lambda x, y, z, c=tub: sh.ellipsoid(  # type: ignore[misc]
                    x, y, z, c, np.eye(3), np.array([13.0, 15.0, 12.0]) * s
                ),
                [tub],
                16.0 * s,
                k=6.0,
            )
        )
    prims.append(_sacrum(a))
    return prims


def _capsule(a: np.ndarray, b: np.ndarray, ra: float, rb: float | None = None, k: float = 0.0):
    rmax = max(ra, rb or ra)
    return Prim.around(lambda x, y, z: sh.capsule(x, y, z, a, b, ra, rb), [a, b], rmax + 1, k=k)


def _sacrum(a: Anatomy) -> Prim:
    """A plate curved along a sagittal arc, wide and thick at the top (alae, S1 body)."""
    p = a.pelvis
    yc, zc = p.sacrum_center
    R = p.sacrum_radius
    phi0, phi1 = np.deg2rad(p.sacrum_angles[0]), np.deg2rad(p.sacrum_angles[1])
    w0, w1 = p.sacrum_half_width
    t0, t1 = p.sacrum_half_thickness

    def fn(x, y, z):
        dy, dz = y - np.float32(yc), z - np.float32(zc)
        rho = sh.length(dy, dz) - np.float32(R)
        phi = np.arctan2(dz, dy)
        g = np.clip((phi - np.float32(phi0)) * np.float32(1.0 / (phi1 - phi0)), 0.0, 1.0)
        g2 = g * g
        half_w = w0 + (w1 - w0) * g2
        half_t = t0 + (t1 - t0) * g2
        # the alae sweep back and thin out laterally; the S1 body bulges forward in the middle
        u = np.abs(x) / half_w
        rho = rho + np.float32(0.25) * half_t * u * u
        half_t = half_t * (np.float32(1.0) - np.float32(0.4) * u * u)
        rounding = np.minimum(half_t, half_w) * np.float32(0.8)
        qx = np.abs(x) - half_w + rounding
        qr = np.abs(rho) - half_t + rounding
        outside = sh.length(np.maximum(qx, 0), np.maximum(qr, 0))
        d = outside + np.minimum(np.maximum(qx, qr), 0) - rounding
        along = np.maximum(np.float32(phi0) - phi, phi - np.float32(phi1)) * np.float32(R)
        d = np.maximum(d, along)
        # sacral canal: a flat tube in the posterior half of the plate
        canal = sh.length(np.abs(x) * np.float32(1 / 1.6), rho - half_t * np.float32(0.35))
        return np.maximum(d, np.float32(0.3) * half_t - 1.2 - canal)

    pts = np.array(
        [[0.0, yc + R * np.cos(phi), zc + R * np.sin(phi)] for phi in np.linspace(phi0, phi1, 9)]
    )
    lo = pts.min(axis=0) - [w1 + 2, t1 + 4, t1 + 4]
    hi = pts.max(axis=0) + [w1 + 2, t1 + 4, t1 + 4]
    return Prim(fn, lo, hi, k=0.0)


def vertebra_prims(v: Vertebra) -> list[Prim]:
    """Vertebral body, neural arch with canal, spinous and transverse processes."""
    c, r, s = v.center, v.radii, v.scale

    def body(x, y, z):
        ex = (x - np.float32(c[0])) * np.float32(1 / r[0])
        ey = (y - np.float32(c[1])) * np.float32(1 / r[1])
        dxy = (sh.length(ex, ey) - 1) * np.float32(min(r[0], r[1]))
        dz = np.abs(z - np.float32(c[2])) - np.float32(r[2])
        out = sh.length(np.maximum(dxy, 0), np.maximum(dz, 0))
        return out + np.minimum(np.maximum(dxy, dz), 0) - 1.5

    canal_c = np.array([c[0], c[1] + r[1] + 9.0 * s, c[2]])

    def arch(x, y, z):
        dy = y - np.float32(canal_c[1])
        rr = sh.length(x, dy * np.float32(1.2))
        ring = np.abs(rr - np.float32(14.5 * s)) - np.float32(5.0 * s)
        ring = np.maximum(ring, np.abs(z - np.float32(c[2])) - np.float32(0.75 * r[2]))
        return np.maximum(ring, np.float32(c[1] + r[1] - 4.0) - y)

    sp_a = np.array([0.0, c[1] + r[1] + 22.0 * s, c[2]])
    sp_b = np.array([0.0, c[1] + r[1] + 48.0 * s, c[2] - 10.0 * s])
    prims = [
        Prim(body, c - [r[0] + 3, r[1] + 3, r[2] + 3], c + [r[0] + 3, r[1] + 3, r[2] + 3]),
        Prim.around(arch, [canal_c], 24.0 * s, k=0.0),
        _capsule(sp_a, sp_b, 5.5 * s, 4.5 * s, k=4.0),
    ]
    for sign in (1.0, -1.0):
        ta = np.array([sign * 10.0 * s, canal_c[1] - 2.0, c[2] + 2.0])
        tb = np.array([sign * 40.0 * s, canal_c[1] + 2.0, c[2] + 5.0])
        prims.append(_capsule(ta, tb, 6.0 * s, 4.5 * s, k=4.0))
    return prims
