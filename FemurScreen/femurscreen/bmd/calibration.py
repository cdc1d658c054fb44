"""Phantomless calibration of one scan: HU -> equivalent mineral density (mg/cm^3 K2HPO4).

Why: HU of bone change with scanner, kVp and calibration drift, so a density (and a T-score)
needs each scan's own reference. Without a calibration phantom in the table, the tissues of
the scan itself are the reference (internal or phantomless calibration). A straight line
through soft tissues cannot see the beam's energy, and bone mineral's HU change with energy
far more than soft tissue's (about +20 % from 120 to 100 kVp): the fit is physical instead.

Method: an effective-energy fit (Michalski et al., Med Eng Phys 2020;78:55-63, "internal
calibration" in Bonelab/Ogo), with the tissue peaks found automatically:

1. The scan is read on a grid of about 3 mm. The body is the largest connected region above
   -500 HU (opened once so that the table's thin shell comes off).
2. Tissue peaks, each the mode of a smoothed histogram in a window: **air** outside the body
   (the median within -1100..-900 HU: air noise clipped at -1024 leaves the median in place),
   **fat**: subcutaneous fat, the outer 20 mm of the body (-200..-40 HU; visceral fat, deeper,
   is reported beside it but not fitted: thin fat planes there mix with muscle), **muscle**
   inside the body (0..120 HU; the skeletal muscle and other lean soft tissue of the pelvis
   and thighs). Peaks are read on a local mean of the grid (fat 2^3, muscle 3^3 voxels).
3. Effective energy ``E``: each tissue's HU at energy ``E`` follows from tabulated mass
   attenuation (NIST; :mod:`femurscreen.bmd.attenuation`); the observed peaks are fitted as
   ``observed = a * HU_tissue(E) + b`` (``a``, ``b``: the scanner's HU scale and offset), by
   weighted least squares over a grid of energies. Each point is weighted by how much that
   tissue varies between people (air 3, fat 8, muscle 15 HU: muscle reads 10-60 HU with age
   and fat infiltration); ``a`` and ``b`` have priors (1 +- 0.03, 0 +- 10 HU: scanners are
   calibrated daily on air and water), and ``E`` a prior
   from the beam: the nominal energy of the scan's kVp when it is known (DICOM tag 0018,0060,
   or ``kvp=``) with SD 2.5 keV, else that of 120 kVp with SD 6 keV (100-140 kVp). The energy
   with the least total misfit wins; its SD comes from the curvature of that misfit.
4. Density, **K2HPO4-equivalent** on the 120 kVp scale (mg/cm^3, water 0; HA would be about
   1.15 x K2HPO4 - 7.3, Faulkner 1993, not used): a voxel brighter than muscle is muscle plus
   dissolved K2HPO4 whose HU per mg/cm^3 at ``E`` follow from its attenuation (water
   displaced), so ``rho = rho_muscle + (HU_cal - HU_muscle(E)) / k(E)``; darker voxels are
   mapped tissue by tissue (air-fat-muscle) onto their 120 kVp values. At 120 kVp (66 keV)
   this is the Mindways K2HPO4 slope, 0.80 mg/cm^3 per HU.

Refusal: a calibration with status other than ``ok`` carries a reason and no density may be
reported from it: a tissue not found (no air outside the body, too little fat or muscle),
tissues out of order, an energy, scale or offset outside plausible bounds, a point more than
3 of its SDs off the fit, or
**contrast**: more than 5 ml of soft tissue reading 130-600 HU away from bone (enhanced aorta/iliac
vessels, kidneys or bladder; contrast biases bone HU upwards).

What this cannot do: see the energy better than the fat's natural variability allows (about
7 keV per 8 HU of fat) -- without a kVp the energy is mostly the prior's; nor model marrow fat
(a fatty marrow reads as less mineral, as in any single-energy QCT).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TypedDict

import numpy as np
from scipy import ndimage

from femurscreen.bmd import attenuation as att

CALIBRATION_VERSION = "femurscreen-calibration-v2"
TISSUES = {"air": "air", "fat": "adipose", "muscle": "muscle"}  # point -> tabulated material
WINDOWS = {"air": (-1100.0, -900.0), "fat": (-200.0, -40.0), "muscle": (0.0, 120.0)}
MIN_ML = {"air": 5.0, "fat": 20.0, "muscle": 50.0}
# between people (and peak noise): muscle reads 10-60 HU with age and fat infiltration
TISSUE_SD_HU = {"air": 3.0, "fat": 8.0, "muscle": 15.0}
SCALE_PRIOR = (1.0, 0.03)
OFFSET_PRIOR_HU = 10.0  # water is kept within a few HU by daily calibration
ENERGY_SD_KEV = {"kvp_known": 2.5, "kvp_unknown": 6.0}
ENERGY_GRID_KEV = np.arange(45.0, 85.01, 0.25)
ENERGY_RANGE_KEV = (48.0, 82.0)
GRID_MM = 3.0
SUBCUTANEOUS_MM = 20.0
CONTRAST_HU = (130.0, 600.0)
CONTRAST_MIN_ML = 5.0
BONE_HU = 300.0  # bone for the contrast check (closed and filled, see _enhanced_ml)
BONE_CLEARANCE_MM = 6.0
CONTRAST_PIECE_ML = 1.5
SCALE_RANGE = (0.90, 1.10)
MAX_ABS_OFFSET = 60.0
MAX_RESIDUAL_SD = 3.0  # a point further from the fit than 3 of its SDs: no calibration
KVP_TAG = "0018|0060"
# kept for readers of the v1 names: reference HU of each point on the 120 kVp scale
REFERENCE_HU = {
    name: float(att.tissue_hu(mat, att.REFERENCE_KEV)) if name != "air" else -1000.0
    for name, mat in TISSUES.items()
}
MG_K2HPO4_PER_HU = float(1.0 / att.mineral_hu_per_mg_cm3(att.REFERENCE_KEV))


@dataclass
class TissuePoint:
    """One reference tissue: the HU peak observed, what it reads at 120 kVp on a calibrated
    scanner (``reference_hu``), what the fit says it should read here, how much was found."""

    name: str
    observed_hu: float | None
    reference_hu: float
    ml: float
    residual_hu: float | None = None  # observed minus fitted
    fitted_hu: float | None = None


@dataclass
class Calibration:
    """The fit of one scan. ``status`` "ok" or a refusal code; ``reason`` in words.

    ``slope``/``intercept`` map observed HU of bone to 120 kVp-equivalent HU (density is that
    times ``mg_per_hu``); below muscle the map bends (:meth:`density`)."""

    status: str
    reason: str
    points: list[TissuePoint]
    slope: float | None = None
    intercept: float | None = None
    mg_per_hu: float = MG_K2HPO4_PER_HU
    material: str = "K2HPO4"
    energy_kev: float | None = None
    energy_sd_kev: float | None = None
    energy_prior_kev: float | None = None
    kvp: float | None = None
    hu_scale: float | None = None  # a: observed = a * HU(E) + b
    hu_offset: float | None = None
    mineral_hu_per_mg_cm3: float | None = None  # at the fitted energy
    density_sd_percent: float | None = None  # of the mineral part, from the energy's SD
    fat_subcutaneous_hu: float | None = None
    fat_visceral_hu: float | None = None
    contrast_ml: float = 0.0
    flags: list[str] = field(default_factory=list)
    # "phantomless" (energy from the tissues and the kVp prior) or "site" (energy fixed at a
    # site calibration's rods-phantom fit, femurscreen.bmd.site); ``site``: which entry, why
    source: str = "phantomless"
    site: dict | None = None
    method: str = (
        "effective-energy fit (Michalski 2020) of air/fat/muscle to NIST attenuation, then "
        "K2HPO4 in muscle at that energy, on the 120 kVp scale"
    )
    version: str = CALIBRATION_VERSION
    _knots: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def density(self, hu: np.ndarray) -> np.ndarray:
        """Equivalent mineral density (mg/cm^3 K2HPO4) of observed HU (float32); refuses if
        not ok."""
        if not self.ok or self.slope is None or self.intercept is None or self._knots is None:
            raise ValueError(
                f"no density from a refused calibration ({self.status}: {self.reason})"
            )
        x, y = self._knots
        h = np.asarray(hu, dtype=np.float32)
        out = h * np.float32(self.slope * self.mg_per_hu)
        out += np.float32(self.intercept * self.mg_per_hu)
        low = h < np.float32(x[-1])
        if low.any():
            out[low] = np.interp(h[low], x, y * self.mg_per_hu).astype(np.float32)
        return out

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("_knots")
        d["density_slope_mg_cm3_per_hu"] = (
            None if self.slope is None else round(self.slope * self.mg_per_hu, 5)
        )
        d["density_intercept_mg_cm3"] = (
            None if self.intercept is None else round(self.intercept * self.mg_per_hu, 3)
        )
        for key in (
            "slope",
            "intercept",
            "mg_per_hu",
            "hu_scale",
            "hu_offset",
            "mineral_hu_per_mg_cm3",
            "fat_subcutaneous_hu",
            "fat_visceral_hu",
        ):
            if d[key] is not None:
                d[key] = round(d[key], 5)
        for key in ("energy_kev", "energy_sd_kev", "energy_prior_kev", "density_sd_percent"):
            if d[key] is not None:
                d[key] = round(d[key], 2)
        d["contrast_ml"] = round(self.contrast_ml, 2)
        for p in d["points"]:
            for key in ("observed_hu", "residual_hu", "fitted_hu", "ml", "reference_hu"):
                if p[key] is not None:
                    p[key] = round(p[key], 2)
        return d


def _mode(values: np.ndarray, lo: float, hi: float) -> float | None:
    """Peak of the smoothed histogram of ``values`` within [lo, hi] (2 HU bins, sigma 3 bins);
    None when the peak is at the window's edge (no peak inside: the tissue is not there)."""
    v = values[(values >= lo) & (values <= hi)]
    if v.size < 50:
        return None
    edges = np.arange(lo, hi + 2.0, 2.0)
    hist, _ = np.histogram(v, bins=edges)
    smooth = ndimage.gaussian_filter1d(hist.astype(np.float64), 3.0, mode="constant")
    i = int(np.argmax(smooth))
    if i <= 1 or i >= smooth.size - 2:
        return None
    # sub-bin refinement by a parabola through the peak and its neighbours
    a, b, c = smooth[i - 1], smooth[i], smooth[i + 1]
    den = a - 2 * b + c
    shift = 0.5 * (a - c) / den if den != 0 else 0.0
    return float(edges[i] + 1.0 + 2.0 * shift)


def _coarse(hu: np.ndarray, spacing_zyx: tuple[float, float, float]) -> tuple[np.ndarray, float]:
    step = [max(1, int(round(GRID_MM / s))) for s in spacing_zyx]
    small = hu[:: step[0], :: step[1], :: step[2]]
    voxel_ml = float(np.prod([s * k for s, k in zip(spacing_zyx, step, strict=True)])) / 1000.0
    return small, voxel_ml


def _up(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A 2x coarser grid's array back on the fine grid (nearest neighbour)."""
    return a.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: shape[0], : shape[1], : shape[2]]


def _enhanced_ml(small: np.ndarray, depth: np.ndarray, mm: float, voxel_ml: float) -> float:
    """Volume (ml) of contrast-enhanced soft tissue: pieces of at least 1.5 ml reading
    130-600 HU, 10 mm or more inside the body and more than 6 mm from bone (enhanced vessels,
    kidneys, bladder). Bone is every voxel of 300 HU or more (on the 2x coarser grid), closed
    by 6 mm and with its marrow filled (in 3-D and plane by plane along each axis), so that
    cancellous bone, which reads like enhanced blood, never counts; specks of dense bowel
    content are too small. Measured: iodine in a phantom's iliac and femoral vessels 12.5 ml,
    the real sample CT 1.7 ml, plain phantoms 0 (threshold 5 ml)."""
    candidate = (depth >= 10.0) & (small >= CONTRAST_HU[0]) & (small <= CONTRAST_HU[1])
    if candidate.sum() * voxel_ml < CONTRAST_MIN_ML:
        return 0.0  # not enough to matter whatever bone removes from it
    # bone on the 2x coarser grid: any of its 2^3 fine voxels at 300 HU or more
    sh = [(n + 1) // 2 * 2 for n in small.shape]
    dense = np.zeros(sh, dtype=bool)
    dense[: small.shape[0], : small.shape[1], : small.shape[2]] = small >= BONE_HU
    # (numpy's stubs type any(axis=...) as "bool or array"; with axes of a 6-D array it is an
    # array, which asarray returns as it is)
    dense = np.asarray(
        dense.reshape(sh[0] // 2, 2, sh[1] // 2, 2, sh[2] // 2, 2).any(axis=(1, 3, 5))
    )
    seed = ndimage.binary_dilation(dense, iterations=max(1, int(round(6.0 / (2 * mm)))))
    filled = ndimage.binary_fill_holes(seed)
    for axis in range(3):
        plane = np.zeros((3, 3, 3), dtype=bool)
        index: list = [slice(None)] * 3
        index[axis] = 1
        plane[tuple(index)] = True
        filled |= ndimage.binary_fill_holes(seed, structure=plane)
    clear = ndimage.distance_transform_edt(~filled, sampling=2 * mm) <= BONE_CLEARANCE_MM
    clear = _up(clear, small.shape)
    enhanced = candidate & ~clear  # (no opening: it erased enhanced iliac vessels at 3 mm)
    lab, n = ndimage.label(enhanced)
    if n == 0:
        return 0.0
    sizes = np.bincount(lab.ravel())[1:] * voxel_ml
    return float(sizes[sizes >= CONTRAST_PIECE_ML].sum())


class EnergyFit(TypedDict):
    """The result of :func:`fit_energy`."""

    energy_kev: float
    energy_sd_kev: float
    energy_prior_kev: float
    a: float  # HU scale: observed = a * HU(E) + b
    b: float  # HU offset
    fitted: dict[str, float]  # each point's fitted HU
    at_edge: bool  # the energy at an end of ENERGY_GRID_KEV


def fit_energy(
    observed: dict[str, float],
    kvp: float | None = None,
    fixed_energy: tuple[float, float] | None = None,
) -> EnergyFit:
    """The effective-energy fit of tissue peaks (step 3 of the module docstring): energy, its
    SD and prior, HU scale ``a`` and offset ``b``, and each point's fitted HU.
    ``fixed_energy`` (keV, SD): a site calibration's energy, taken as it is (only ``a`` and
    ``b`` are fitted; the SD is the site fit's)."""
    names = list(observed)
    obs = np.array([observed[n] for n in names], dtype=np.float64)
    w = np.array([1.0 / TISSUE_SD_HU[n] ** 2 for n in names])
    if fixed_energy is not None:
        prior_e, sd_e = float(fixed_energy[0]), float(fixed_energy[1])
        e = np.array([prior_e])
    else:
        prior_e = att.nominal_energy_kev(kvp if kvp is not None else att.REFERENCE_KVP)
        sd_e = ENERGY_SD_KEV["kvp_known" if kvp is not None else "kvp_unknown"]
        e = ENERGY_GRID_KEV
    model = np.stack([att.tissue_hu(TISSUES[n], e) for n in names], axis=1)  # (E, points)
    model[:, [i for i, n in enumerate(names) if n == "air"]] = -1000.0  # scanners set air
    wa, wb = 1.0 / SCALE_PRIOR[1] ** 2, 1.0 / OFFSET_PRIOR_HU**2
    # normal equations of min sum w (obs - a m - b)^2 + wa (a - 1)^2 + wb b^2, per energy
    saa = (w * model**2).sum(1) + wa
    sab = (w * model).sum(1)
    sbb = w.sum() + wb
    ra = (w * model * obs).sum(1) + wa * SCALE_PRIOR[0]
    rb = (w * obs).sum()
    det = saa * sbb - sab**2
    a = (ra * sbb - sab * rb) / det
    b = (saa * rb - sab * ra) / det
    fitted = a[:, None] * model + b[:, None]
    cost = (w * (obs - fitted) ** 2).sum(1) + wa * (a - 1.0) ** 2 + wb * b**2
    cost = cost + ((e - prior_e) / sd_e) ** 2
    i = int(np.argmin(cost))
    # SD from the curvature of the misfit (a chi-square: 1 unit = 1 SD^2), +- 1 keV around
    j = np.abs(e - e[i]) <= 1.0
    curv = np.polyfit(e[j] - e[i], cost[j], 2)[0] if j.sum() >= 3 else 0.0
    sd = float(1.0 / np.sqrt(curv)) if curv > 0 and fixed_energy is None else float(sd_e)
    return {
        "energy_kev": float(e[i]),
        "energy_sd_kev": sd,
        "energy_prior_kev": prior_e,
        "a": float(a[i]),
        "b": float(b[i]),
        "fitted": dict(zip(names, fitted[i].tolist(), strict=True)),
        "at_edge": fixed_energy is None and bool(i == 0 or i == e.size - 1),
    }


def _density_map(energy: float, a: float, b: float) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(slope, intercept) from observed HU to 120 kVp-equivalent HU for bone (muscle plus
    K2HPO4), and the knots of the tissue-by-tissue map below muscle (observed HU -> 120 kVp
    HU): air, fat, muscle at ``energy`` go to their 120 kVp values."""
    e0 = att.REFERENCE_KEV
    k, k0 = float(att.mineral_hu_per_mg_cm3(energy)), float(att.mineral_hu_per_mg_cm3(e0))
    m, m0 = float(att.tissue_hu("muscle", energy)), float(att.tissue_hu("muscle", e0))
    slope = k0 / (a * k)
    intercept = m0 - (b / a + m) * k0 / k
    fat, fat0 = float(att.tissue_hu("adipose", energy)), float(att.tissue_hu("adipose", e0))
    x = np.array([-2000.0, -1000.0, fat, m]) * a + b
    x[0] = -2000.0
    y = np.array([-1000.0 - (x[1] - x[0]) / a, -1000.0, fat0, m0])
    return slope, intercept, x, y


def calibrate(
    hu: np.ndarray,
    spacing_xyz: tuple[float, float, float],
    kvp: float | None = None,
    fixed_energy: tuple[float, float] | None = None,
) -> Calibration:
    """Calibrate a CT given as an HU array (k, j, i) with its spacing (x, y, z) in mm;
    ``kvp`` the tube voltage when known (the DICOM header's), which narrows the energy;
    ``fixed_energy`` (keV, SD) a site calibration's energy, used instead of fitting one."""
    sx, sy, sz = spacing_xyz
    spacing_zyx = (float(sz), float(sy), float(sx))
    small, voxel_ml = _coarse(hu, spacing_zyx)
    small = small.astype(np.float32)
    mm = float(np.mean([s * max(1, int(round(GRID_MM / s))) for s in spacing_zyx]))
    # the body's geometry on a grid twice as coarse (about 6 mm): distance maps cost
    geo = small[::2, ::2, ::2]
    body6 = ndimage.binary_opening(geo > -500.0, iterations=1)
    lab, count = ndimage.label(body6)
    if count == 0:
        return Calibration("no_body", "no body (nothing above -500 HU) in the scan", [], kvp=kvp)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body6 = ndimage.binary_fill_holes(lab == int(np.argmax(sizes)))
    depth = _up(ndimage.distance_transform_edt(body6, sampling=2 * mm), small.shape)
    outside = _up(ndimage.distance_transform_edt(~body6, sampling=2 * mm) > 6.0, small.shape)
    body = depth > 0
    inner = depth > SUBCUTANEOUS_MM
    shell = body & ~inner
    # a local mean narrows each tissue's peak: 2 x 2 x 2 (about 6 mm, noise / 2.8) for the
    # subcutaneous fat, which can be a thin layer, 3 x 3 x 3 (about 9 mm, noise / 5) for muscle
    local_fat = ndimage.uniform_filter(small, 2, mode="nearest")
    local = ndimage.uniform_filter(small, 3, mode="nearest")
    points = []
    observed: dict[str, float | None] = {}
    for name, values in (
        ("air", small[outside]),
        ("fat", local_fat[shell]),
        ("muscle", local[depth > 2.0 * mm]),
    ):
        lo, hi = WINDOWS[name]
        inside = values[(values >= lo) & (values <= hi)]
        ml = inside.size * voxel_ml
        if name == "air":
            # air noise is clipped at the format's floor (-1024): the median stays right
            peak = float(np.median(inside)) if inside.size else None
        else:
            peak = _mode(values, lo, hi)
        if ml < MIN_ML[name]:
            peak = None
        observed[name] = peak
        points.append(TissuePoint(name, peak, REFERENCE_HU[name], ml))
    sub = observed["fat"]
    vis = _mode(local_fat[inner], *WINDOWS["fat"]) if inner.any() else None

    contrast_ml = _enhanced_ml(small, depth, mm, voxel_ml)

    cal = Calibration(
        "ok",
        "",
        points,
        fat_subcutaneous_hu=sub,
        fat_visceral_hu=vis,
        contrast_ml=contrast_ml,
        kvp=kvp,
    )
    obs = {p.name: p.observed_hu for p in points if p.observed_hu is not None}
    missing = [p.name for p in points if p.name not in obs]
    if missing:
        what = {"air": "air outside the body", "fat": "fat", "muscle": "muscle"}
        cal.status = "tissue_missing"
        cal.reason = (
            f"no {' or '.join(what[m] for m in missing)} in view to calibrate against "
            "(the field of view must include some air around the body, fat and muscle)"
        )
        return cal
    if not (obs["air"] < obs["fat"] < obs["muscle"]):
        cal.status = "implausible"
        cal.reason = (
            f"tissue peaks out of order (air {obs['air']:.0f}, fat {obs['fat']:.0f}, "
            f"muscle {obs['muscle']:.0f} HU)"
        )
        return cal
    fit = fit_energy(obs, kvp, fixed_energy)
    energy, a, b = fit["energy_kev"], fit["a"], fit["b"]
    energy_sd = fit["energy_sd_kev"]
    cal.energy_kev, cal.energy_sd_kev = energy, energy_sd
    cal.energy_prior_kev, cal.hu_scale, cal.hu_offset = fit["energy_prior_kev"], a, b
    k = float(att.mineral_hu_per_mg_cm3(energy))
    cal.mineral_hu_per_mg_cm3 = k
    dk = abs(float(att.mineral_hu_per_mg_cm3(energy + energy_sd)) - k)
    cal.density_sd_percent = 100.0 * dk / k
    slope, intercept, x, y = _density_map(energy, a, b)
    cal.slope, cal.intercept, cal._knots = slope, intercept, (x, y)
    for p in points:
        fitted_hu = fit["fitted"][p.name]
        p.fitted_hu = fitted_hu
        p.residual_hu = float(obs[p.name] - fitted_hu)
    worst = max(points, key=lambda p: abs(p.residual_hu or 0.0) / TISSUE_SD_HU[p.name])
    lo_e, hi_e = ENERGY_RANGE_KEV
    if contrast_ml > CONTRAST_MIN_ML:
        cal.flags.append("contrast")
        cal.status = "contrast"
        cal.reason = (
            f"{contrast_ml:.0f} ml of soft tissue away from bone reads "
            f"{CONTRAST_HU[0]:.0f}-{CONTRAST_HU[1]:.0f} HU: contrast-enhanced scan "
            "(contrast raises bone HU); density is not reported"
        )
    elif fit["at_edge"] or not lo_e <= energy <= hi_e:
        cal.status = "implausible"
        cal.reason = (
            f"effective energy {energy:.0f} keV outside {lo_e:.0f}-{hi_e:.0f} keV: the tissues "
            "do not look like a diagnostic CT's"
        )
    elif not SCALE_RANGE[0] <= a <= SCALE_RANGE[1] or abs(b) > MAX_ABS_OFFSET:
        cal.status = "implausible"
        cal.reason = (
            f"HU scale {a:.3f} / offset {b:.1f} HU outside "
            f"{SCALE_RANGE[0]}-{SCALE_RANGE[1]} / +-{MAX_ABS_OFFSET:.0f}: not a calibrated CT"
        )
    elif abs(worst.residual_hu or 0.0) > MAX_RESIDUAL_SD * TISSUE_SD_HU[worst.name]:
        cal.status = "implausible"
        cal.reason = (
            f"tissue points do not fit any beam energy ({worst.name} off by "
            f"{worst.residual_hu:.0f} HU, more than {MAX_RESIDUAL_SD:.0f} x its "
            f"{TISSUE_SD_HU[worst.name]:.0f} HU spread)"
        )
    if kvp is None:
        cal.flags.append("kvp_unknown")
    return cal
