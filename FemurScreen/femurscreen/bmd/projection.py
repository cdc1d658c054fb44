"""DXA-like projection of one calibrated proximal femur: femoral-neck and total-hip aBMD.

Why: the WHO classes are defined on DXA's areal BMD of the hip; a CT can give the same kind of
number (CTXA, Cann et al., PLoS One 2014) by projecting calibrated volumetric density onto the
plane a DXA scanner would image.

Steps (world millimetres throughout, so any spacing and direction matrix give the same
result); the definitions are those of :mod:`femurscreen.phantom.truth`:

1. Landmarks from the mask alone: head centre = the deepest mask point (largest inscribed
   sphere) in the top 60 mm, its depth the head radius R; shaft axis = line through the
   centroids of axial sections of the distal 25 mm of the mask (the label ends 30 mm below the
   lesser trochanter, so that is shaft); neck axis = from the centroid of the mask between
   1.1 R and 1.5 R from the head centre (the neck) to the head centre.
2. DXA pose: shaft axis vertical, neck axis in the image plane; rays antero-posterior.
3. The calibrated density is resampled (trilinear) on a 1 mm grid in that pose and summed
   along each ray: A = sum (rho - bg) dy over the mask dilated by 2 mm + bg x (path length
   inside the mask), where bg is the median density of the soft tissue 2-6 mm around the
   femur. The dilation catches the mineral that the scanner's blur moved out of the mask;
   the background term keeps only what belongs to the bone.
4. Femoral-neck box: 15 mm along the neck axis, centred on the narrowest neck (minimum
   projected width between 0.9 R and 1.9 R from the head centre), across the neck's full
   width + 5 mm each side. Total hip: the femur lateral of the box's medial edge and above the
   axial plane 20 mm above the bottom of the mask (10 mm below the lesser trochanter by the
   label definition); not given when the scan ends before the label's cut (``distal_fov_short``).
5. aBMD of a region = mean of A over its bone pixels (projected path length >= 1 mm), g/cm^2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from femurscreen.bmd.calibration import Calibration

PIXEL_MM = 1.0
NECK_BOX_MM = 15.0
NECK_BOX_MARGIN_MM = 5.0
TOTAL_HIP_ABOVE_MASK_BOTTOM_MM = 20.0  # = 10 mm below the lesser trochanter (label cut 30 mm)
SHAFT_MM = 25.0
HEAD_SEARCH_MM = 60.0
SPILL_MM = 2.0
BACKGROUND_MM = (2.0, 6.0)
MIN_SHAFT_SPAN_MM = 12.0


@dataclass
class Projection:
    """The areal density image of one side and where its ROIs are."""

    status: str
    reason: str = ""
    fn_abmd_g_cm2: float | None = None
    th_abmd_g_cm2: float | None = None
    fn_area_cm2: float | None = None
    th_area_cm2: float | None = None
    head_radius_mm: float | None = None
    neck_shaft_angle_deg: float | None = None
    neck_width_mm: float | None = None
    background_mg_cm3: float | None = None
    flags: list[str] = field(default_factory=list)
    areal: np.ndarray | None = None  # g/cm^2, rows = shaft axis (t, proximal last), cols = s
    bone: np.ndarray | None = None
    fn_roi: np.ndarray | None = None
    th_roi: np.ndarray | None = None

    def summary(self) -> dict:
        out = {}
        for key in (
            "fn_abmd_g_cm2",
            "th_abmd_g_cm2",
            "fn_area_cm2",
            "th_area_cm2",
            "head_radius_mm",
            "neck_shaft_angle_deg",
            "neck_width_mm",
            "background_mg_cm3",
        ):
            v = getattr(self, key)
            out[key] = None if v is None else round(float(v), 4)
        return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def project_side(
    ct: sitk.Image, hu: np.ndarray, side_mask: np.ndarray, calibration: Calibration
) -> Projection:
    """aBMD of one femur. ``hu`` is the CT array (k, j, i), ``side_mask`` a boolean array of
    the same shape holding that femur's label."""
    if not calibration.ok:
        return Projection("not_calibrated", calibration.reason)
    spacing = np.asarray(ct.GetSpacing(), dtype=np.float64)
    direction = np.asarray(ct.GetDirection(), dtype=np.float64).reshape(3, 3)
    matrix = direction @ np.diag(spacing)  # (i, j, k) -> world offset
    origin = np.asarray(ct.GetOrigin(), dtype=np.float64)
    idx = np.argwhere(side_mask)
    if idx.shape[0] < 50:
        return Projection("not_found", "the femur mask is empty or a fragment")
    pad = [int(np.ceil(12.0 / s)) + 1 for s in spacing[::-1]]
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, side_mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    mask = side_mask[box]
    rho = calibration.density(hu[box])
    sp_zyx = spacing[::-1]

    def world(kji: np.ndarray) -> np.ndarray:
        return (kji[:, ::-1] + lo[::-1]) @ matrix.T + origin

    pts = world(np.argwhere(mask).astype(np.float64))
    z = pts[:, 2]
    flags: list[str] = []
    # head: the deepest point of the top part
    top = z >= z.max() - HEAD_SEARCH_MM
    kji = np.argwhere(mask)
    sub_lo = np.maximum(kji[top].min(0) - 2, 0)
    sub_hi = kji[top].max(0) + 3
    sub = tuple(slice(a, b) for a, b in zip(sub_lo, sub_hi, strict=True))
    depth = np.zeros(mask.shape, dtype=np.float64)
    depth[sub] = ndimage.distance_transform_edt(mask[sub], sampling=sp_zyx)
    d_in = depth[mask]
    best = np.flatnonzero(top)[np.argmax(d_in[top])]
    head = pts[best]
    radius = float(d_in[best] + 0.5 * np.mean(spacing))
    # shaft: centroids of the distal sections
    distal = z <= z.min() + SHAFT_MM
    bins = np.floor((z[distal] - z.min()) / max(2.0, spacing.max())).astype(int)
    cents = np.array([pts[distal][bins == b].mean(0) for b in np.unique(bins)])
    if len(cents) >= 3 and np.ptp(cents[:, 2]) >= MIN_SHAFT_SPAN_MM:
        c0 = cents.mean(0)
        u = _unit(np.linalg.svd(cents - c0)[2][0])
        if u[2] < 0:
            u = -u
        if u[2] < np.cos(np.deg2rad(30.0)):
            flags.append("shaft_axis_assumed")
            u = np.array([0.0, 0.0, 1.0])
    else:
        flags.append("shaft_axis_assumed")
        u = np.array([0.0, 0.0, 1.0])
    # neck: the mask just outside the head sphere
    r = np.linalg.norm(pts - head, axis=1)
    shell = (r >= 1.1 * radius) & (r <= 1.5 * radius)
    if shell.sum() < 10:
        return Projection("not_found", "no femoral neck found next to the head", flags=flags)
    n = _unit(head - pts[shell].mean(0))  # from the shaft towards the head
    m = n - (n @ u) * u
    if np.linalg.norm(m) < 0.2:
        return Projection("not_found", "neck axis parallel to the shaft", flags=flags)
    m = _unit(m)
    ap = np.cross(u, m)
    nsa = float(180.0 - np.degrees(np.arccos(np.clip(n @ u, -1, 1))))

    rel = pts - head
    s_all, t_all, y_all = rel @ m, rel @ u, rel @ ap
    margin = 6.0
    s_ax = np.arange(s_all.min() - margin, s_all.max() + margin, PIXEL_MM)
    t_ax = np.arange(t_all.min() - margin, t_all.max() + margin, PIXEL_MM)
    y_ax = np.arange(y_all.min() - margin, y_all.max() + margin, PIXEL_MM)
    T, S = np.meshgrid(t_ax, s_ax, indexing="ij")  # image rows t, cols s
    inv = np.linalg.inv(matrix)
    spill = ndimage.binary_dilation(mask, iterations=max(1, int(round(SPILL_MM / spacing.min()))))
    near = ndimage.binary_dilation(
        mask, iterations=max(1, int(round(BACKGROUND_MM[1] / spacing.min())))
    )
    bg_vox = near & ~spill
    bg = float(np.median(rho[bg_vox])) if bg_vox.any() else 0.0
    maskf = mask.astype(np.float32)
    # the integrand on the CT's own grid, resampled once per sample point
    integrand = ((rho - np.float32(bg)) * spill + np.float32(bg) * mask).astype(np.float32)
    step = max(PIXEL_MM, 0.5 * float(spacing.min()))  # along the rays
    y_ax = np.arange(y_ax[0], y_ax[-1] + step, step)
    areal = np.zeros(T.shape)
    path = np.zeros(T.shape)
    base = (head - origin) @ inv.T - lo[::-1]
    plane = (S[..., None] * (m @ inv.T) + T[..., None] * (u @ inv.T) + base)[..., ::-1]
    ray = (ap @ inv.T)[::-1]
    chunk = max(1, 3_000_000 // T.size)
    for y0 in range(0, len(y_ax), chunk):  # a few planes at a time keeps memory small
        ys = y_ax[y0 : y0 + chunk]
        coords = (plane[None] + ys[:, None, None, None] * ray).reshape(-1, 3).T  # (k, j, i)
        r_s = ndimage.map_coordinates(integrand, coords, order=1, cval=0.0)
        in_m = ndimage.map_coordinates(maskf, coords, order=1, cval=0.0)
        areal += r_s.reshape(len(ys), *T.shape).sum(0)
        path += (in_m >= 0.5).reshape(len(ys), *T.shape).sum(0)
    areal *= step / 10.0 / 1000.0  # mg/cm^3 * mm -> g/cm^2
    path *= step
    bone = path >= 1.0

    nm, nu = float(n @ m), float(n @ u)
    sigma = -(S * nm + T * nu)
    tau = -S * nu + T * nm
    widths = []
    # the narrowest neck lies between the head and the trochanters: from 0.9 R to 1.9 R
    sig_range = np.arange(0.9 * radius, 1.9 * radius, 1.0)
    for sg in sig_range:
        line = bone & (np.abs(sigma - sg) < 0.5 * PIXEL_MM) & (np.abs(tau) <= 40.0)
        widths.append(line.sum() * PIXEL_MM)
    widths = np.asarray(widths, dtype=float)
    valid = widths > 0
    if not valid.any():
        return Projection("not_found", "no femoral neck in the projection", flags=flags)
    k = int(np.argmin(np.where(valid, widths, np.inf)))
    s_w = float(sig_range[k])
    w = float(widths[k])
    waist = bone & (np.abs(sigma - s_w) < 0.5 * PIXEL_MM) & (np.abs(tau) <= 40.0)
    tau_c = float(tau[waist].mean())
    fn = (np.abs(sigma - s_w) <= 0.5 * NECK_BOX_MM) & (
        np.abs(tau - tau_c) <= 0.5 * w + NECK_BOX_MARGIN_MM
    )
    zc = head[2] + S * m[2] + T * u[2]
    th = (sigma >= s_w - 0.5 * NECK_BOX_MM) & (zc >= z.min() + TOTAL_HIP_ABOVE_MASK_BOTTOM_MM)
    out = Projection(
        "ok",
        head_radius_mm=radius,
        neck_shaft_angle_deg=nsa,
        neck_width_mm=w,
        background_mg_cm3=bg,
        flags=flags,
        areal=areal,
        bone=bone,
        fn_roi=fn & bone,
        th_roi=th & bone,
    )
    px_cm2 = PIXEL_MM * PIXEL_MM / 100.0
    if (fn & bone).sum() > 0:
        out.fn_abmd_g_cm2 = float(areal[fn & bone].mean())
        out.fn_area_cm2 = float((fn & bone).sum() * px_cm2)
    # the scan must reach the label's cut for the total hip's distal border to be where it
    # should be: a mask that reaches the image's lowest slice may end early
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], float)
    corners *= np.asarray(side_mask.shape[::-1], float) - 1.0
    z_floor = float((corners @ matrix.T + origin)[:, 2].min())
    if z.min() <= z_floor + 0.5 * float(np.abs(matrix[2]).max()):
        out.flags.append("distal_fov_short")
    elif (th & bone).sum() > 0:
        out.th_abmd_g_cm2 = float(areal[th & bone].mean())
        out.th_area_cm2 = float((th & bone).sum() * px_cm2)
    return out
