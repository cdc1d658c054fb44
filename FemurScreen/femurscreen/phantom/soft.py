"""Soft tissue: table, skin, fat, muscles with fat planes, pelvic cavity, bowel, bladder, vessels.

Painted back to front: the body outline and its subcutaneous fat, a muscle-filled deep
compartment, then the structures that break it up (fat planes around named muscle groups, the
visceral fat of the pelvic and abdominal cavity, bowel loops with gas, the bladder, vessels).
Each layer is a function of the :class:`~femurscreen.phantom.voxelize.Painter` and paints the
current slab only.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from femurscreen.phantom import shapes as sh
from femurscreen.phantom.anatomy import SIDE_SIGN, Anatomy, Body
from femurscreen.phantom.texture import network
from femurscreen.phantom.voxelize import LIPSCHITZ, Painter, Points

RIM_MM = 2.2  # thickness of the fat plane drawn around a muscle group
INF = np.inf


def _profiles(a: Anatomy) -> dict[str, sh.Profile]:
    """Lookup tables of the body outline and cavity as functions of z (cached per case)."""
    cache = getattr(a, "_profiles", None)
    if cache is None:
        b = a.body
        s = a.scale
        pel = a.pelvis
        hx = 0.5 * sum(abs(f.head_center[0]) for f in a.femurs.values())
        zs = np.clip(b.z, -450.0, 650.0)
        cz = np.array([-450.0, 15.0 * s, 60.0 * s, pel.crest_z, pel.crest_z + 80.0, 650.0])
        lat = [
            hx - 26.0,
            hx - 26.0,
            pel.crest_x - 42.0,
            pel.crest_x - 30.0,
            pel.crest_x - 22.0,
            pel.crest_x - 22.0,
        ]
        cache = {
            "half_width": sh.Profile(zs, b.half_width),
            "y_post": sh.Profile(zs, b.y_post),
            "y_ant": sh.Profile(zs, b.y_ant),
            "cavity_half": sh.Profile(cz, lat),
        }
        setattr(a, "_profiles", cache)  # noqa: B010 - a per-anatomy cache, not a field
    return cache


def table_y(b: Body, x: np.ndarray) -> np.ndarray:
    """Top of the (slightly concave) table at lateral position x, body frame."""
    return np.float32(b.table_y) - np.float32(0.00035) * x * x


def body_fields(a: Anatomy, x, y, z) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the skin (outer) and to the deep fascia (inner), body frame."""
    b = a.body
    prof = _profiles(a)
    hw = prof["half_width"](z)
    yp = prof["y_post"](z)
    ya = prof["y_ant"](z)
    cy = (yp + ya) * np.float32(0.5)
    by = (yp - ya) * np.float32(0.5)
    d_in = sh.superellipse(x, y, np.float32(0), cy, hw, by)
    cyo = cy + np.float32(0.5 * (b.fat_post - b.fat_ant))
    byo = by + np.float32(0.5 * (b.fat_post + b.fat_ant))
    d_out = sh.superellipse(x, y, np.float32(0), cyo, hw + np.float32(b.fat_lat), byo)
    cut = np.float32(b.perineum_z) - z
    d_in = sh.smax(d_in, cut, 25.0)
    d_out = sh.smax(d_out, cut - np.float32(0.6 * b.fat_post), 25.0)
    for f in a.femurs.values():
        j, u = f.junction, f.u
        t = (z - np.float32(j[2])) * np.float32(1.0 / u[2])
        cx = np.float32(j[0] - f.sign * 12.0) + t * np.float32(u[0])
        cyt = np.float32(j[1] - 6.0) + t * np.float32(u[1])
        r = sh.length(x - cx, y - cyt)
        top = z - np.float32(b.perineum_z + 70.0)
        t_in = np.maximum(r - np.float32(b.thigh_radius), top)
        t_out = np.maximum(r - np.float32(b.thigh_radius + 0.9 * b.fat_lat), top)
        d_in = sh.smin(d_in, t_in, 18.0)
        d_out = sh.smin(d_out, t_out, 18.0)
    ty = table_y(b, x)
    d_out = np.maximum(d_out, y - ty)
    d_in = np.maximum(d_in, y - ty + np.float32(b.skin + 1.0))
    return d_out, d_in


def paint_table(p: Painter) -> None:
    b = p.anatomy.body
    box = p.sub(p.box([-400, b.table_y - 80, -1e4], [400, b.table_y + 60, 1e4], "body"))
    if box is None:
        return
    x, y, z = p.coords(box, "body")
    dt = y - table_y(b, x)
    p.blend(box, np.float32(2.0) - dt, -880.0)  # foam core below the top shell
    p.blend(box, np.abs(dt - np.float32(1.6)) - np.float32(1.1), 180.0)  # carbon shell


def paint_body(p: Painter) -> None:
    """Skin, subcutaneous fat and the muscle-filled deep compartment.

    Whole blocks deep inside the fascia or inside the fat are filled directly; only blocks
    near the skin or the fascia are evaluated voxel by voxel."""
    a = p.anatomy
    b = a.body
    box = p.slab()
    d_out, d_in = body_fields(a, *p.block_centres(box, "body"))
    shape = p.block_shape(box)
    d_out = np.broadcast_to(d_out, shape)
    d_in = np.broadcast_to(d_in, shape)
    slack = LIPSCHITZ * p.block_radius
    muscle = d_in < -slack
    fat = (d_out < -(slack + b.skin)) & (d_in > slack)
    fine = ~(muscle | fat | (d_out > slack))
    cls = np.zeros(shape, dtype=np.uint8)
    cls[fat] = 1
    cls[muscle] = 2
    full = p.upsample(cls, box)
    view = p.hu[box]
    view[full == 1] = np.float32(b.fat_hu)  # (3: evaluated below)
    view[full == 2] = np.float32(b.muscle_hu)
    # distance to the deep fascia over the slab, for the muscles painted later: exact near
    # the fascia, a large number of the right sign elsewhere
    deep = np.where(full == 2, np.float32(-1e3), np.float32(1e3)).astype(np.float32)
    if fine.any():
        pts = Points(p, box, np.argwhere(fine).astype(np.int32))
        d_o, d_i = body_fields(a, *pts.coords("body"))
        p.blend_points(pts, d_o, b.skin_hu)
        p.blend_points(pts, d_o + np.float32(b.skin), b.fat_hu)
        p.blend_points(pts, d_i, b.muscle_hu)
        deep.reshape(-1)[pts.flat - box[0].start * deep[0].size] = d_i
    p.scratch["deep"] = (box[0].start, deep)


def _deep_at(p: Painter, pts: Points) -> np.ndarray:
    """Distance to the deep fascia at ``pts`` (negative inside the muscle compartment),
    looked up in the slab's table made by :func:`paint_body`."""
    k0, deep = cast(tuple[int, np.ndarray], p.scratch["deep"])
    return deep.reshape(-1)[pts.flat - k0 * deep[0].size]


def _muscle(
    p: Painter,
    box,
    fn,
    clip=None,
    frame: str = "anat",
    solid: bool = False,
    deep: bool = True,
) -> None:
    """A muscle group outlined by a thin fat plane, kept inside the deep fascia.

    ``fn`` is the muscle's surface, ``clip`` (negative where the muscle exists) only ends it,
    so that no fat plane is drawn along a cutting plane. Inside the deep compartment
    everything is muscle already, so only the outline needs painting (``solid`` False);
    muscles lying in visceral fat are painted whole."""
    band = (-INF, p.ramp) if solid else (-(RIM_MM + p.ramp), p.ramp)
    pts = p.points(p.sub(box), frame, fn, band)
    if pts is None:
        return
    x, y, z = pts.coords(frame)
    d = fn(x, y, z)
    keep = None
    if clip is not None:
        keep = clip(x, y, z) < 0
    if deep:
        inside = _deep_at(p, pts) < np.float32(-1.0)
        keep = inside if keep is None else keep & inside
    if keep is not None:
        d = np.where(keep, d, np.float32(1e3))
    b = p.anatomy.body
    p.blend_points(pts, d, b.fat_hu)
    p.blend_points(pts, d + np.float32(RIM_MM), b.muscle_hu)


def _fat(p: Painter, box, fn, frame: str = "anat", surface: float | None = None) -> None:
    """Fat in the region ``fn`` < 0 (or in a sheet of half-thickness ``surface``)."""
    band = (-INF, p.ramp) if surface is None else (-surface - p.ramp, surface + p.ramp)
    pts = p.points(p.sub(box), frame, fn if surface is None else (lambda *c: np.abs(fn(*c))), band)
    if pts is None:
        return
    d = fn(*pts.coords(frame))
    if surface is not None:
        d = np.abs(d) - np.float32(surface)
    d = np.maximum(d, _deep_at(p, pts) + np.float32(2.0))
    p.blend_points(pts, d, p.anatomy.body.fat_hu)


def paint_muscles(p: Painter) -> None:
    a = p.anatomy
    s = a.scale
    pel = a.pelvis
    eye = np.eye(3)
    for side, sign in SIDE_SIGN.items():
        f = a.femurs[side]
        hx = abs(f.head_center[0])
        sg = np.float32(sign)

        # gluteus maximus: a thick band behind and lateral to the hip
        gc = np.array([sign * 62.0 * s, 22.0 * s, -20.0 * s])
        gr = np.array([90.0, 84.0, 125.0]) * s

        def glut_max(x, y, z, gc=gc, gr=gr):
            de = sh.ellipsoid(x, y, z, gc, eye, gr)
            return np.abs(de - np.float32(21.0 * s)) - np.float32(21.0 * s)

        def glut_max_clip(x, y, z, sg=sg):
            c = np.maximum(np.float32(-5.0 * s) - y, np.float32(14.0) - sg * x)
            return np.maximum(c, z - np.float32(85.0 * s))

        lo = [min(0, sign * 200 * s), -10 * s, -200]
        hi = [max(0, sign * 200 * s), 160 * s, 90.0 * s]
        _muscle(p, p.box(np.minimum(lo, hi), np.maximum(lo, hi)), glut_max, glut_max_clip)

        # gluteus medius/minimus outside the wing, iliacus inside it
        wc = pel.wing_center * np.array([sign, 1, 1])
        wr = pel.wing_radii

        def glut_med(x, y, z, wc=wc, wr=wr):
            de = sh.ellipsoid(x, y, z, wc, eye, wr)
            t = np.float32(24.0 * s)
            return np.abs(de - np.float32(3.0) - t * 0.5) - t * 0.5

        def glut_med_clip(x, y, z, sg=sg):
            c = np.maximum(np.float32(pel.si_x + 8.0) - sg * x, np.float32(pel.asis_y - 8.0) - y)
            c = np.maximum(c, z - np.float32(pel.crest_z - 3.0))
            return np.maximum(c, np.float32(-12.0 * s) - z)

        def iliacus(x, y, z, wc=wc, wr=wr):
            de = sh.ellipsoid(x, y, z, wc, eye, wr)
            t = np.float32(15.0 * s)
            return np.abs(de + np.float32(2.5) + t * 0.5) - t * 0.5

        def iliacus_clip(x, y, z, sg=sg):
            c = np.maximum(np.float32(pel.si_x + 6.0) - sg * x, np.float32(pel.asis_y + 2.0) - y)
            c = np.maximum(c, z - np.float32(pel.crest_z - 8.0))
            return np.maximum(c, np.float32(24.0 * s) - z)

        xs = sorted([sign * pel.si_x, sign * (pel.crest_x + 40)])
        wing_box = p.box([xs[0], pel.asis_y - 20, -15.0 * s], [xs[1], 100.0 * s, pel.crest_z])
        _muscle(p, wing_box, glut_med, glut_med_clip)
        _muscle(p, wing_box, iliacus, iliacus_clip, solid=True)

        # anterior hip/thigh muscles: tensor fasciae latae, sartorius, rectus femoris;
        # quadratus femoris behind the neck; obturator externus below it
        caps = [
            (
                [sign * (pel.crest_x - 14.0), pel.asis_y + 10.0, 62.0 * s],
                [sign * (hx + 62.0 * s), -20.0 * s, -110.0 * s],
                9.0 * s,
            ),
            (
                [sign * (pel.crest_x - 26.0), pel.asis_y - 2.0, 62.0 * s],
                [sign * (hx - 30.0 * s), -68.0 * s, -190.0 * s],
                7.5 * s,
            ),
            (
                [sign * (hx + 8.0 * s), -40.0 * s, 22.0 * s],
                [sign * (hx + 22.0 * s), -62.0 * s, -220.0 * s],
                12.0 * s,
            ),
            (
                [sign * (hx - 30.0 * s), 26.0 * s, -56.0 * s],
                f.lt_center + 10.0 * f.posterior + 6.0 * f.u,
                9.0 * s,
            ),
        ]
        for a_pt, b_pt, r in caps:
            qa, qb = np.asarray(a_pt, dtype=float), np.asarray(b_pt, dtype=float)
            _muscle(
                p,
                p.box(np.minimum(qa, qb) - r - 3, np.maximum(qa, qb) + r + 3),
                lambda x, y, z, qa=qa, qb=qb, r=r: sh.capsule(x, y, z, qa, qb, r, r * 1.1),
            )

        # thigh: fat planes between the quadriceps, adductors and hamstrings
        j, u = f.junction, f.u
        z_top = float((j + (f.lt_level + 12.0) * u)[2])
        thigh_box = p.box(
            [sign * hx - 130.0, -150.0, -400.0], [sign * hx + 150.0, 150.0, z_top], "body"
        )
        for ang in (200.0, 330.0, 95.0, 35.0):
            th = np.deg2rad(ang + (10.0 if sign < 0 else 0.0))
            ux, uy = np.float32(np.cos(th) * sign), np.float32(np.sin(th))

            def spoke(x, y, z, ux=ux, uy=uy, j=j, u=u, r0=f.shaft_radius + 6.0, zt=z_top):
                t = (z - np.float32(j[2])) * np.float32(1.0 / u[2])
                dx = x - (np.float32(j[0]) + t * np.float32(u[0]))
                dy = y - (np.float32(j[1]) + t * np.float32(u[1]))
                along = dx * ux + dy * uy
                across = dx * (-uy) + dy * ux
                d = np.maximum(np.abs(across), np.float32(r0) - along)
                return np.maximum(d, z - np.float32(zt))

            _fat(p, thigh_box, spoke, "body", surface=0.8)

        # ischiorectal fossa
        c = np.array([sign * 30.0 * s, 58.0 * s, -66.0 * s])
        radii = np.array([20.0, 26.0, 26.0]) * s
        _fat(
            p,
            p.box(c - radii - 2, c + radii + 2),
            lambda x, y, z, c=c, r=radii: sh.ellipsoid(x, y, z, c, eye, r),
        )


def _psoas_path(a: Anatomy, sign: float) -> list[tuple[np.ndarray, float]]:
    s = a.scale
    f = a.femurs["left" if sign > 0 else "right"]
    hx = abs(f.head_center[0])
    cz = a.pelvis.crest_z
    return [
        (np.array([sign * 30.0 * s, 30.0 * s, cz + 220.0]), 12.0 * s),
        (np.array([sign * 40.0 * s, 24.0 * s, cz + 10.0]), 19.0 * s),
        (np.array([sign * 56.0 * s, 6.0 * s, 60.0 * s]), 18.0 * s),
        (np.array([sign * (hx - 22.0), -26.0 * s, 18.0 * s]), 15.0 * s),
        (np.array([sign * (hx - 14.0), -42.0 * s, -12.0 * s]), 12.0 * s),
        (f.lt_center - 4.0 * f.u, 7.0 * s),
    ]


def paint_psoas(p: Painter) -> None:
    for sign in (1.0, -1.0):
        path = _psoas_path(p.anatomy, sign)
        for (pa, ra), (pb, rb) in zip(path[:-1], path[1:], strict=True):
            r = max(ra, rb) + 3
            _muscle(
                p,
                p.box(np.minimum(pa, pb) - r, np.maximum(pa, pb) + r),
                lambda x, y, z, pa=pa, pb=pb, ra=ra, rb=rb: sh.capsule(x, y, z, pa, pb, ra, rb),
                solid=True,
                deep=False,
            )


def cavity_field(a: Anatomy, x, y, z) -> np.ndarray:
    """Visceral space: the true pelvis and the lower abdomen in front of the spine."""
    s = a.scale
    hx = 0.5 * sum(abs(f.head_center[0]) for f in a.femurs.values())
    rh = 0.5 * sum(f.head_radius for f in a.femurs.values())
    c = np.array([0.0, 14.0 * s, -10.0 * s])
    r = np.array([hx - rh - 16.0, 58.0 * s, 44.0 * s])
    d_tp = sh.ellipsoid(x, y, z, c, np.eye(3), r)
    prof = _profiles(a)
    half = prof["cavity_half"](z)
    yf = prof["y_ant"](z) + np.float32(14.0 * s)
    yb = np.float32(30.0 * s)
    d_ab = sh.superellipse(x, y, np.float32(0), (yf + yb) * 0.5, half, (yb - yf) * 0.5)
    d_ab = sh.smax(d_ab, np.float32(12.0 * s) - z, 10.0)
    return sh.smin(d_tp, d_ab, 14.0)


def paint_cavity(p: Painter) -> None:
    """Visceral fat, bladder, rectum and bowel loops (gas rises anteriorly: supine)."""
    a = p.anatomy
    s = a.scale
    pel = a.pelvis
    cbox = p.box([-pel.crest_x, float(np.min(a.body.y_ant)) - 5, -70.0 * s], [pel.crest_x, 80, 1e3])

    def cavity(x, y, z):
        return cavity_field(a, x, y, z)

    pts = p.points(p.sub(cbox), "anat", cavity, (-INF, p.ramp))
    if pts is None:
        return
    dc = np.maximum(cavity(*pts.coords("anat")), _deep_at(p, pts) + np.float32(6.0))
    p.blend_points(pts, dc, a.body.visceral_fat_hu)

    def inside_cavity(fn):
        return lambda x, y, z: np.maximum(fn(x, y, z), cavity(x, y, z) + np.float32(1.0))

    # bladder
    c, r = a.bladder
    bladder = inside_cavity(lambda x, y, z: sh.ellipsoid(x, y, z, c, np.eye(3), r))
    bp = p.points(p.sub(p.box(c - r - 3, c + r + 3)), "anat", bladder, (-INF, p.ramp))
    if bp is not None:
        d = bladder(*bp.coords("anat"))
        p.blend_points(bp, d, 38.0)
        p.blend_points(bp, d + np.float32(2.5), 9.0)

    # rectum and bowel loops
    loops = [
        (np.array([[0, 60.0 * s, -60.0 * s], [0, 58.0 * s, 2.0 * s]]), 13.0 * s, "feces", 0.0, 25.0)
    ]
    loops += [(lp.points, lp.radius, lp.content, lp.fluid_level, lp.content_hu) for lp in a.loops]
    for pts_l, radius, content, level, chu in loops:

        def tube(x, y, z, pts_l=pts_l, radius=radius):
            d = None
            for pa, pb in zip(pts_l[:-1], pts_l[1:], strict=True):
                dd = sh.capsule(x, y, z, pa, pb, radius)
                d = dd if d is None else sh.smin(d, dd, 4.0)
            return d

        fn = inside_cavity(tube)
        lo = pts_l.min(axis=0) - radius - 3
        hi = pts_l.max(axis=0) + radius + 3
        lp = p.points(p.sub(p.box(lo, hi)), "anat", fn, (-INF, p.ramp))
        if lp is None:
            continue
        x, y, z = lp.coords("anat")
        d = fn(x, y, z)
        p.blend_points(lp, d, 40.0)
        inner = d + np.float32(2.0)
        if content == "fluid":
            p.blend_points(lp, inner, chu)
        elif content == "gas":
            gas = sh.coverage(np.float32(level) - y, p.ramp)
            p.blend_points(lp, inner, np.float32(chu) + np.float32(-1000.0 - chu) * gas)
        else:
            tex = p.tile.sample(x * np.float32(0.3), y * np.float32(0.3), z * np.float32(0.3))
            net = network(tex, 0.22, softness=0.6)
            p.blend_points(lp, inner, np.float32(chu + 10.0) + np.float32(-980.0 - chu) * net)


def paint_vessels(p: Painter) -> None:
    """Iliac and femoral arteries and veins (unenhanced blood) in a fat sheath, running
    through the fat of the femoral triangle in front of the hip."""
    a = p.anatomy
    s = a.scale
    eye = np.eye(3)
    for side, f in a.femurs.items():
        sign = SIDE_SIGN[side]
        c = np.array([sign * (abs(f.head_center[0]) - 26.0 * s), -46.0 * s, -25.0 * s])
        radii = np.array([22.0, 15.0, 50.0]) * s
        _fat(
            p,
            p.box(c - radii - 2, c + radii + 2),
            lambda x, y, z, c=c, r=radii: sh.ellipsoid(x, y, z, c, eye, r),
        )
    for side, path in a.vessels.items():
        sign = SIDE_SIGN[side]
        for pa, pb in zip(path[:-1], path[1:], strict=True):
            for offset, r, hu in ((0.0, 3.8 * s, 42.0), (-sign * 10.0 * s, 5.5 * s, 38.0)):
                qa = pa + np.array([offset, 2.0, 0.0])
                qb = pb + np.array([offset, 2.0, 0.0])

                def vessel(x, y, z, qa=qa, qb=qb, r=r):
                    return sh.capsule(x, y, z, qa, qb, r)

                box = p.box(np.minimum(qa, qb) - r - 6, np.maximum(qa, qb) + r + 6)
                pts = p.points(p.sub(box), "anat", vessel, (-INF, 3.0 + p.ramp))
                if pts is None:
                    continue
                d = vessel(*pts.coords("anat"))
                keep = _deep_at(p, pts) < np.float32(-3.0)
                d = np.where(keep, d, np.float32(1e3))
                p.blend_points(pts, d - np.float32(3.0), a.body.fat_hu)
                p.blend_points(pts, d, hu)


def paint_joint_and_spine_soft(p: Painter) -> None:
    """Hip cartilage/joint capsule, intervertebral discs and the spinal canal."""
    a = p.anatomy
    for side, f in a.femurs.items():
        g = a.pelvis.acetabula[side].gap
        radius = f.head_radius + g + 1.0
        box = p.sub(p.box(f.head_center - radius - 2, f.head_center + radius + 2))
        if box is not None:
            x, y, z = p.coords(box, "anat")
            p.blend(box, sh.sphere(x, y, z, f.head_center, radius), 70.0)
    verts = a.vertebrae
    for lower, upper in zip([None, *verts[:-1]], verts, strict=True):
        c = upper.center
        r = upper.radii
        z0 = c[2] - r[2] - 11.0 * upper.scale
        z1 = c[2] - r[2] + 1.0
        if lower is None:
            z0 = c[2] - r[2] - 12.0 * upper.scale
        lo = np.array([-r[0] - 2, c[1] - r[1] - 3, z0])
        hi = np.array([r[0] + 2, c[1] + r[1] + 3, z1])
        box = p.sub(p.box(lo, hi))
        if box is None:
            continue
        x, y, z = p.coords(box, "anat")
        ex = x * np.float32(1 / r[0])
        ey = (y - np.float32(c[1])) * np.float32(1 / r[1])
        d = (sh.length(ex, ey) - 1) * np.float32(min(r[0], r[1]) * 0.97)
        d = np.maximum(d, np.maximum(np.float32(z0) - z, z - np.float32(z1)))
        p.blend(box, d, 85.0)
    # spinal canal contents
    for v in verts:
        c = v.center
        cc = np.array([0.0, c[1] + v.radii[1] + 9.0 * v.scale, c[2]])
        lo = cc - [10, 10, v.radii[2] + 14]
        hi = cc + [10, 10, v.radii[2] + 14]
        box = p.sub(p.box(lo, hi))
        if box is None:
            continue
        x, y, z = p.coords(box, "anat")
        d = sh.length(x * np.float32(1 / 1.1), y - np.float32(cc[1])) - np.float32(8.5 * v.scale)
        p.blend(box, d, 18.0)
