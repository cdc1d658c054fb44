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
   along each ray: A = sum (rho - bg) dy over the mask dilated by 3 mm + bg x (path length
   inside the mask), where bg is the local density of the soft tissue 3-6 mm around the
   femur (a 4 mm Gaussian-weighted mean of that shell; its median is reported). The
   dilation catches the mineral that the scanner's blur moved out of the mask; the
   background term keeps only what belongs to the bone. The resampling is SimpleITK's
   (threaded), and density is computed only inside the dilated mask (speed).
4. Femoral-neck box: 15 mm along the neck axis, centred on the narrowest neck (minimum
   projected width between 0.9 R and 1.9 R from the head centre: the run of bone through the
   neck axis across it, the vertex of a parabola through the widths near the smallest),
   across the neck's full width + 5 mm each side. Total hip: the femur lateral of the box's
   medial edge and above the axial plane 20 mm above the bottom of the mask (10 mm below the
   lesser trochanter by the label definition); not given when the scan ends before the
   label's cut (``distal_fov_short``).
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
SPILL_MM = 3.0
BACKGROUND_MM = (2.0, 6.0)
MIN_SHAFT_SPAN_MM = 12.0
HEAD_GRID_MM = 1.6
NECK_FIT_MM = 10.0
LOCAL_BG_MM = 4.0
MIN_PATH_MM = 1.0  # a pixel is bone when its ray crosses this much of the mask


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
    neck_box_from_head_mm: float | None = None  # centre of the neck box, from the head centre
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
            "neck_box_from_head_mm",
            "background_mg_cm3",
        ):
            v = getattr(self, key)
            out[key] = None if v is None else round(float(v), 4)
        return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def project_side(
    ct: sitk.Image,
    hu: np.ndarray,
    side_mask: np.ndarray,
    calibration: Calibration,
    offset: tuple[int, int, int] = (0, 0, 0),
) -> Projection:
    """aBMD of one femur. ``hu`` is the CT array (k, j, i), ``side_mask`` a boolean array
    holding that femur's label: of the same shape, or a crop of it starting at ``offset``."""
    if not calibration.ok:
        return Projection("not_calibrated", calibration.reason)
    spacing = np.asarray(ct.GetSpacing(), dtype=np.float64)
    direction = np.asarray(ct.GetDirection(), dtype=np.float64).reshape(3, 3)
    matrix = direction @ np.diag(spacing)  # (i, j, k) -> world offset
    origin = np.asarray(ct.GetOrigin(), dtype=np.float64)
    idx = np.argwhere(side_mask)
    if idx.shape[0] < 50:
        return Projection("not_found", "the femur mask is empty or a fragment")
    idx += np.asarray(offset)
    pad = [int(np.ceil(12.0 / s)) + 1 for s in spacing[::-1]]
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, hu.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    mask = np.zeros(tuple(hi - lo), dtype=bool)
    mask[tuple((idx - lo).T)] = True
    sp_zyx = spacing[::-1]

    def world(kji: np.ndarray) -> np.ndarray:
        ijk = np.ascontiguousarray(kji[:, ::-1], dtype=np.float64) + lo[::-1]
        return np.einsum("nj,kj->nk", ijk, matrix) + origin  # (faster than @ for n x 3)

    # landmarks from every other voxel of a fine mask (a femur has 10^5-10^6 voxels)
    g = 2 if float(spacing.min()) < 1.2 else 1
    kji = np.argwhere(mask[::g, ::g, ::g]) * g
    pts = world(kji.astype(np.float64))
    z = pts[:, 2]
    flags: list[str] = []
    # head: the deepest point of the top part, on a grid of about 1.6 mm (an inscribed
    # sphere's centre needs no finer grid, and a distance map at 0.8 mm costs ten times more)
    top = z >= z.max() - HEAD_SEARCH_MM
    f = max(1, int(round(HEAD_GRID_MM / float(spacing.min()))))
    sub_lo = np.maximum(kji[top].min(0) - 2 * f - g, 0)
    sub_hi = kji[top].max(0) + 2 * f + g + 1
    sub = tuple(slice(a, b, f) for a, b in zip(sub_lo, sub_hi, strict=True))
    depth = ndimage.distance_transform_edt(mask[sub], sampling=sp_zyx * f)
    cand = np.argwhere(depth > 0)
    cand_kji = cand * f + sub_lo
    cand_z = world(cand_kji.astype(np.float64))[:, 2]
    d_c = np.where(cand_z >= z.max() - HEAD_SEARCH_MM, depth[tuple(cand.T)], -1.0)
    best = int(np.argmax(d_c))
    head = world(cand_kji[best : best + 1].astype(np.float64))[0]
    radius = float(d_c[best] + 0.5 * np.mean(spacing) * f)
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
    spill = ndimage.binary_dilation(mask, iterations=max(1, int(round(SPILL_MM / spacing.min()))))
    # the background: soft tissue 3-6 mm around the femur, sampled on every other voxel
    coarse = mask[::g, ::g, ::g]
    near = ndimage.binary_dilation(
        coarse, iterations=max(1, int(round(BACKGROUND_MM[1] / (g * spacing.min()))))
    )
    inner_mm = max(BACKGROUND_MM[0], SPILL_MM)
    near &= ~ndimage.binary_dilation(
        coarse, iterations=max(1, int(round(inner_mm / (g * spacing.min()))))
    )
    hu_box = hu[box]
    bg_rho = calibration.density(hu_box[::g, ::g, ::g][near])
    bg = float(np.median(bg_rho)) if bg_rho.size else 0.0
    # the integrand on the CT's own grid (density only where it is needed), resampled by
    # SimpleITK (threaded) on the DXA-pose grid: columns s (neck), rows t (shaft), planes y
    integrand = np.zeros(mask.shape, dtype=np.float32)
    # the soft tissue next to each part of the femur (fat by the neck, muscle by the shaft):
    # the shell's density spread by a 4 mm Gaussian (normalised convolution) on the coarse
    # grid and read at the spill voxels. With one median for the whole femur, fat beside the
    # bone, blurred into it, was not given back and the total hip read 0.007 g/cm^2 low.
    vals = np.zeros(coarse.shape, dtype=np.float32)
    vals[near] = bg_rho
    sig = LOCAL_BG_MM / (g * spacing[::-1])
    num = ndimage.gaussian_filter(vals, sig, mode="constant")
    den = ndimage.gaussian_filter(near.astype(np.float32), sig, mode="constant")
    local = np.where(den > 1e-3, num / np.maximum(den, 1e-6), bg).astype(np.float32)
    idx_sp = np.nonzero(spill)
    at = tuple(np.minimum(i // g, n - 1) for i, n in zip(idx_sp, local.shape, strict=True))
    bg_sp = local[at]
    integrand[idx_sp] = calibration.density(hu_box[idx_sp]) - bg_sp
    inside = mask[idx_sp]
    integrand[tuple(i[inside] for i in idx_sp)] += bg_sp[inside]
    step = max(PIXEL_MM, 0.5 * float(spacing.min()))  # along the rays
    y_ax = np.arange(y_ax[0], y_ax[-1] + step, step)
    pose = sitk.Image([len(s_ax), len(t_ax), len(y_ax)], sitk.sitkFloat32)
    pose.SetSpacing((PIXEL_MM, PIXEL_MM, step))
    pose.SetOrigin(tuple(head + s_ax[0] * m + t_ax[0] * u + y_ax[0] * ap))
    pose.SetDirection(tuple(np.stack([m, u, ap], axis=1).ravel()))
    crop_origin = tuple(lo[::-1] @ matrix.T + origin)

    def resampled(values: np.ndarray) -> np.ndarray:
        img = sitk.GetImageFromArray(values)
        img.SetSpacing(tuple(spacing))
        img.SetDirection(tuple(direction.ravel()))
        img.SetOrigin(crop_origin)
        out = sitk.Resample(img, pose, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.GetArrayFromImage(out)  # (y, t, s); a copy: `out` dies on return

    areal = resampled(integrand).sum(0, dtype=np.float64)
    path = (resampled(mask.astype(np.float32)) >= 0.5).sum(0).astype(np.float64)
    areal *= step / 10.0 / 1000.0  # mg/cm^3 * mm -> g/cm^2
    path *= step
    bone = path >= MIN_PATH_MM

    nm, nu = float(n @ m), float(n @ u)
    sigma = -(S * nm + T * nu)
    tau = -S * nu + T * nm
    # the narrowest neck lies between the head and the trochanters: from 0.9 R to 1.9 R. Width
    # across the neck = the run of bone through the neck axis along the line across it
    # (sampled every 0.25 mm; counting all bone near the line let the greater trochanter in
    # and moved the minimum towards the head), smoothed along the neck; the box goes to the
    # vertex of a parabola through the widths within 10 mm of the smallest (a neck's waist
    # is flat over centimetres)
    sig_range = np.arange(0.9 * radius, 1.9 * radius, 0.5)
    tau_line = np.arange(-40.0, 40.0 + 1e-6, 0.25)
    sg_g, tau_g = np.meshgrid(sig_range, tau_line, indexing="ij")
    col = np.rint((-nm * sg_g - nu * tau_g - s_ax[0]) / PIXEL_MM).astype(int)
    row = np.rint((-nu * sg_g + nm * tau_g - t_ax[0]) / PIXEL_MM).astype(int)
    inside = (col >= 0) & (col < bone.shape[1]) & (row >= 0) & (row < bone.shape[0])
    on = np.zeros(sg_g.shape, dtype=bool)
    on[inside] = bone[row[inside], col[inside]]
    centre = tau_line.size // 2
    widths = np.zeros(sig_range.size)
    runs_lo = np.zeros(sig_range.size)
    runs_hi = np.zeros(sig_range.size)
    for i, line in enumerate(on):
        if not line[centre]:
            continue
        off = np.flatnonzero(~line)
        lo_i = off[off < centre].max() + 1 if (off < centre).any() else 0
        hi_i = off[off > centre].min() - 1 if (off > centre).any() else line.size - 1
        runs_lo[i], runs_hi[i] = tau_line[lo_i], tau_line[hi_i]
        widths[i] = tau_line[hi_i] - tau_line[lo_i] + 0.25
    if not (widths > 0).all():
        return Projection("not_found", "no femoral neck in the projection", flags=flags)
    smooth = ndimage.gaussian_filter1d(widths, 2.0, mode="nearest")
    k = int(np.argmin(smooth))
    near_k = np.abs(sig_range - sig_range[k]) <= NECK_FIT_MM
    c2, c1, _c0 = np.polyfit(sig_range[near_k] - sig_range[k], widths[near_k], 2)
    shift = -c1 / (2.0 * c2) if c2 > 0 else 0.0
    s_w = float(sig_range[k] + np.clip(shift, -NECK_FIT_MM, NECK_FIT_MM))
    s_w = float(np.clip(s_w, sig_range[0], sig_range[-1]))
    w = float(np.interp(s_w, sig_range, smooth))
    tau_c = float(np.interp(s_w, sig_range, 0.5 * (runs_lo + runs_hi)))
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
        neck_box_from_head_mm=s_w,
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
    corners *= np.asarray(hu.shape[::-1], float) - 1.0
    z_floor = float((corners @ matrix.T + origin)[:, 2].min())
    if z.min() <= z_floor + 0.5 * float(np.abs(matrix[2]).max()):
        out.flags.append("distal_fov_short")
    elif (th & bone).sum() > 0:
        out.th_abmd_g_cm2 = float(areal[th & bone].mean())
        out.th_area_cm2 = float((th & bone).sum() * px_cm2)
    return out
