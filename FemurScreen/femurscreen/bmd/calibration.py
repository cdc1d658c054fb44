"""Phantomless calibration of one scan: HU -> equivalent mineral density (mg/cm^3 K2HPO4).

Why: HU of bone change with scanner, kVp and calibration drift, so a density (and a T-score)
needs each scan's own reference. Without a calibration phantom in the table, the tissues of
the scan itself are the reference (internal or phantomless calibration).

Method: a multi-tissue linear fit in the manner of FEMURA (University of Manchester), with
air outside the body as one of the points as in Comp2Comp's two-point air/fat calibration:

1. The scan is read on a grid of about 3 mm. The body is the largest connected region above
   -500 HU (opened once so that the table's thin shell comes off).
2. Tissue peaks, each the mode of a smoothed histogram in a window: **air** outside the body
   (the median within -1100..-900 HU: air noise clipped at -1024 leaves the median in place),
   **fat**: subcutaneous fat, the outer 20 mm of the body (-200..-40 HU; visceral fat, deeper,
   is reported beside it but not fitted: thin fat planes there mix with muscle), **muscle**
   inside the body (0..120 HU; the skeletal muscle and other lean soft tissue of the pelvis
   and thighs). Peaks are read on a local mean of the grid (fat 2^3, muscle 3^3 voxels).
   Blood is not sampled (it needs a vessel segmentation); vessels enter the contrast check.
3. Least-squares line mapping the observed peaks to the reference scanner's values
   (air -1000, fat -100, muscle 50 HU: a water-calibrated 120 kVp scanner; Comp2Comp uses
   -95 for fat, FEMURA -80 fat / 30 muscle for its harmonised scale).
4. Density: ``rho = 0.80 mg/cm^3 per calibrated HU`` (water 0), the slope of a K2HPO4
   phantom calibration (Mindways, as in Ogo's test scan: 0.80 mg/cm^3 per HU); K2HPO4, not
   hydroxyapatite (HA ~ 1.15 K2HPO4 - 7.3, Faulkner 1993).

Refusal: a calibration with status other than ``ok`` carries a reason and no density may be
reported from it: a tissue not found (no air outside the body, too little fat or muscle),
tissues out of order, a slope or intercept outside plausible bounds, large residuals, or
**contrast**: lean soft tissue
(enhanced aorta/iliac vessels, kidneys or bladder; contrast biases bone HU upwards).

What this cannot correct: the kVp dependence of bone relative to soft tissue (Michalski et al.,
Med Eng Phys 2020, fit an effective energy for that); the phantom scanners of
:mod:`femurscreen.phantom.scanner` vary it on purpose so that its effect is measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

CALIBRATION_VERSION = "femurscreen-calibration-v1"
MG_K2HPO4_PER_HU = 0.80
REFERENCE_HU = {"air": -1000.0, "fat": -100.0, "muscle": 50.0}
WINDOWS = {"air": (-1100.0, -900.0), "fat": (-200.0, -40.0), "muscle": (0.0, 120.0)}
MIN_ML = {"air": 5.0, "fat": 20.0, "muscle": 50.0}
GRID_MM = 3.0
SUBCUTANEOUS_MM = 20.0
CONTRAST_HU = (130.0, 600.0)
CONTRAST_MIN_ML = 5.0
BONE_HU = 300.0  # bone for the contrast check (closed and filled, see _enhanced_ml)
BONE_CLEARANCE_MM = 9.0
CONTRAST_PIECE_ML = 1.5
SLOPE_RANGE = (0.85, 1.15)
MAX_ABS_INTERCEPT = 60.0
MAX_RESIDUAL_HU = 25.0


@dataclass
class TissuePoint:
    """One reference tissue: the HU peak observed, the value it should read, how much."""

    name: str
    observed_hu: float | None
    reference_hu: float
    ml: float
    residual_hu: float | None = None  # calibrated observed minus reference


@dataclass
class Calibration:
    """The fit of one scan. ``status`` "ok" or a refusal code; ``reason`` in words."""

    status: str
    reason: str
    points: list[TissuePoint]
    slope: float | None = None  # calibrated HU per observed HU
    intercept: float | None = None
    mg_per_hu: float = MG_K2HPO4_PER_HU
    material: str = "K2HPO4"
    fat_subcutaneous_hu: float | None = None
    fat_visceral_hu: float | None = None
    contrast_ml: float = 0.0
    flags: list[str] = field(default_factory=list)
    method: str = (
        "phantomless multi-tissue linear fit (air outside the body, fat, muscle -> "
        "-1000/-100/50 HU), then 0.80 mg/cm3 K2HPO4 per HU"
    )
    version: str = CALIBRATION_VERSION

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def density(self, hu: np.ndarray) -> np.ndarray:
        """Equivalent mineral density (mg/cm^3 K2HPO4) of observed HU; refuses if not ok."""
        if not self.ok or self.slope is None or self.intercept is None:
            raise ValueError(
                f"no density from a refused calibration ({self.status}: {self.reason})"
            )
        return (
            np.asarray(hu, dtype=np.float32) * np.float32(self.slope) + np.float32(self.intercept)
        ) * np.float32(self.mg_per_hu)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["density_slope_mg_cm3_per_hu"] = (
            None if self.slope is None else round(self.slope * self.mg_per_hu, 5)
        )
        d["density_intercept_mg_cm3"] = (
            None if self.intercept is None else round(self.intercept * self.mg_per_hu, 3)
        )
        for key in ("slope", "intercept", "fat_subcutaneous_hu", "fat_visceral_hu"):
            if d[key] is not None:
                d[key] = round(d[key], 5)
        d["contrast_ml"] = round(self.contrast_ml, 2)
        for p in d["points"]:
            for key in ("observed_hu", "residual_hu", "ml"):
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


def _enhanced_ml(small: np.ndarray, depth: np.ndarray, mm: float, voxel_ml: float) -> float:
    """Volume (ml) of contrast-enhanced soft tissue: pieces of at least 1.5 ml reading
    130-600 HU, 10 mm or more inside the body and 9 mm or more from bone (enhanced vessels,
    kidneys, bladder). Bone is every voxel of 300 HU or more, closed by 6 mm and with its
    marrow filled (in 3-D and plane by plane along each axis), so that cancellous bone, which
    reads like enhanced blood, never counts; specks of dense bowel content are too small."""
    seed = ndimage.binary_dilation(small >= BONE_HU, iterations=max(1, int(round(6.0 / mm))))
    filled = ndimage.binary_fill_holes(seed)
    for axis in range(3):
        plane = np.zeros((3, 3, 3), dtype=bool)
        index: list = [slice(None)] * 3
        index[axis] = 1
        plane[tuple(index)] = True
        filled |= ndimage.binary_fill_holes(seed, structure=plane)
    clear = ndimage.distance_transform_edt(~filled, sampling=mm) <= BONE_CLEARANCE_MM
    deep = depth >= 10.0
    enhanced = deep & ~clear & (small >= CONTRAST_HU[0]) & (small <= CONTRAST_HU[1])
    enhanced = ndimage.binary_opening(enhanced, iterations=1)
    lab, n = ndimage.label(enhanced)
    if n == 0:
        return 0.0
    sizes = np.bincount(lab.ravel())[1:] * voxel_ml
    return float(sizes[sizes >= CONTRAST_PIECE_ML].sum())


def calibrate(hu: np.ndarray, spacing_xyz: tuple[float, float, float]) -> Calibration:
    """Calibrate a CT given as an HU array (k, j, i) with its spacing (x, y, z) in mm."""
    spacing_zyx = tuple(float(s) for s in reversed(spacing_xyz))
    small, voxel_ml = _coarse(hu, spacing_zyx)
    small = small.astype(np.float32, copy=False)
    mm = float(np.mean([s * max(1, int(round(GRID_MM / s))) for s in spacing_zyx]))
    body = ndimage.binary_opening(small > -500.0, iterations=1)
    lab, count = ndimage.label(body)
    if count == 0:
        return Calibration("no_body", "no body (nothing above -500 HU) in the scan", [])
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body = ndimage.binary_fill_holes(lab == int(np.argmax(sizes)))
    depth = ndimage.distance_transform_edt(body, sampling=mm)
    near_body = ndimage.distance_transform_edt(~body, sampling=mm) <= 6.0
    inner = depth > SUBCUTANEOUS_MM
    shell = body & ~inner
    # a local mean narrows each tissue's peak: 2 x 2 x 2 (about 6 mm, noise / 2.8) for the
    # subcutaneous fat, which can be a thin layer, 3 x 3 x 3 (about 9 mm, noise / 5) for muscle
    local_fat = ndimage.uniform_filter(small, 2, mode="nearest")
    local = ndimage.uniform_filter(small, 3, mode="nearest")
    points = []
    observed: dict[str, float | None] = {}
    for name, values in (
        ("air", small[~near_body]),
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
        "ok", "", points, fat_subcutaneous_hu=sub, fat_visceral_hu=vis, contrast_ml=contrast_ml
    )
    missing = [p.name for p in points if p.observed_hu is None]
    if missing:
        what = {"air": "air outside the body", "fat": "fat", "muscle": "muscle"}
        cal.status = "tissue_missing"
        cal.reason = (
            f"no {' or '.join(what[m] for m in missing)} in view to calibrate against "
            "(the field of view must include some air around the body, fat and muscle)"
        )
        return cal
    obs = np.array([observed[p.name] for p in points], dtype=np.float64)
    ref = np.array([p.reference_hu for p in points])
    if not (obs[0] < obs[1] < obs[2]):
        cal.status = "implausible"
        cal.reason = (
            f"tissue peaks out of order (air {obs[0]:.0f}, fat {obs[1]:.0f}, "
            f"muscle {obs[2]:.0f} HU)"
        )
        return cal
    slope, intercept = np.polyfit(obs, ref, 1)
    cal.slope, cal.intercept = float(slope), float(intercept)
    for p, o in zip(points, obs, strict=True):
        p.residual_hu = float(slope * o + intercept - p.reference_hu)
    worst = max(abs(p.residual_hu or 0.0) for p in points)
    if contrast_ml > CONTRAST_MIN_ML:
        cal.flags.append("contrast")
        cal.status = "contrast"
        cal.reason = (
            f"{contrast_ml:.0f} ml of soft tissue away from bone reads "
            f"{CONTRAST_HU[0]:.0f}-{CONTRAST_HU[1]:.0f} HU: contrast-enhanced scan "
            "(contrast raises bone HU); density is not reported"
        )
    elif not SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1] or abs(intercept) > MAX_ABS_INTERCEPT:
        cal.status = "implausible"
        cal.reason = (
            f"calibration slope {slope:.3f} / intercept {intercept:.1f} HU outside "
            f"{SLOPE_RANGE[0]}-{SLOPE_RANGE[1]} / +-{MAX_ABS_INTERCEPT:.0f}: not a calibrated CT"
        )
    elif worst > MAX_RESIDUAL_HU:
        cal.status = "implausible"
        cal.reason = (
            f"tissue points do not lie on a line (worst residual {worst:.0f} HU > "
            f"{MAX_RESIDUAL_HU:.0f})"
        )
    return cal
