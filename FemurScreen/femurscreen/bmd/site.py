"""Site (asynchronous) scanner calibration: the effective energy of one scanner and protocol,
fitted once from a calibration phantom of known K2HPO4 rods and used for every later scan.

Why: the phantomless fit (:mod:`femurscreen.bmd.calibration`) cannot see the beam's effective
energy better than the kVp tells it (scanners' filtration differs: +-1.5 keV at one kVp in the
phantom world, about 0.017 g/cm^2 of femoral-neck aBMD per keV), and air, fat and muscle vary
too much between people to pin it. Rods of known mineral density pin it: their HU rise with
concentration by ``a * k(E)`` (``a`` the HU scale, ``k`` the HU one mg/cm^3 of K2HPO4 adds at
energy ``E``), and air outside the phantom gives ``a`` (it reads ``-1000 a + b``). This is
asynchronous calibration (Brown et al., J Clin Densitom 2017): the phantom is scanned apart
from the patient, once per scanner and protocol.

Fit (:func:`fit_rods`): each rod's mean HU (the label eroded by 4 mm, away from its partial-
volume edge) is fitted by least squares as ``b + s * c`` (``c`` its known mg/cm^3, ``b`` the
water-equivalent base); ``a = (b - air) / 1000``; ``k(E) = s / a`` is inverted on the same NIST
tables as the patient calibration (:func:`femurscreen.bmd.attenuation.mineral_hu_per_mg_cm3`);
the energy's SD follows from the SEs of ``s`` and ``a`` (each rod's SE from its slice means,
widened for the correlation of neighbouring slices). Refused, with the reason: fewer than
3 rods or a span under 100 mg/cm^3, a rod missing from the mask (or a label the rods file does
not name), no air around the phantom or air clipped at the image's floor, an energy outside
48-82 keV or more than 8 keV from its kVp's nominal one, a scale or offset of an uncalibrated
scanner, a rod more than 5 HU off the line (swapped labels, wrong values).

Use: a site file holds entries keyed by what a DICOM header tells (manufacturer 0008,0070,
model 0008,1090, kVp 0018,0060, kernel 0018,1210; :mod:`femurscreen.io.ctio` carries them onto
the image). :func:`set_site_calibration` records a checked file on an image;
:func:`femurscreen.bmd.measure` then picks the matching entry (:func:`choose_entry`) and fixes
the energy at the entry's (with its SD), while the scan's own air, fat and muscle still give
its HU scale and offset (the scanner drifts between the phantom's day and the patient's).
An entry whose manufacturer, model or kVp differs from the scan's is not used (the
phantomless fit is, flagged ``site_kvp_mismatch`` / ``site_scanner_mismatch``).

What this cannot do: see a patient-size effect on the energy (a large patient hardens the beam
more than the phantom; the phantom should be about body-sized) or drift of the beam itself
between the phantom scan and the patient's (repeat the phantom after tube changes).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from femurscreen.bmd import attenuation as att
from femurscreen.bmd.calibration import ENERGY_RANGE_KEV, MAX_ABS_OFFSET, SCALE_RANGE
from femurscreen.errors import InputError

SITE_FORMAT = "femurscreen-site-calibration-v1"
SITE_META_KEY = "femurscreen|site_calibration"  # the checked file's entries, as JSON
SITE_NAME_META_KEY = "femurscreen|site_calibration_file"
# what a DICOM header tells of the scanner and protocol (io/ctio.py carries these tags)
SCANNER_TAGS = {
    "manufacturer": "0008|0070",
    "model": "0008|1090",
    "kvp": "0018|0060",
    "kernel": "0018|1210",
}
MIN_RODS = 3
MIN_SPAN_MG_CM3 = 100.0
MAX_MG_CM3 = 1500.0
ROD_EROSION_MM = 4.0  # beyond 2 PSF sigmas of a 1 mm kernel: no spill from the base
MIN_ROD_VOXELS = 30
MAX_ROD_RESIDUAL_HU = 5.0
MAX_SLICE_CORRELATION = 0.8  # of neighbouring slices' rod means (beyond: too few slices to say)
MAX_ENERGY_FROM_NOMINAL_KEV = 8.0
AIR_WINDOW_HU = (-1100.0, -900.0)
AIR_CLEARANCE_MM = 6.0
MIN_AIR_VOXELS = 500
ENERGY_SD_RANGE_KEV = (0.0, 5.0)  # a stored SD beyond this is no fit worth fixing an energy on
_E_FINE = np.arange(40.0, 100.0001, 0.005)
_K_FINE = att.mineral_hu_per_mg_cm3(_E_FINE)  # decreasing with energy


@dataclass
class RodPoint:
    """One rod: its known density, the HU read in it (mean and SD over its eroded label)."""

    label: int
    mg_cm3: float
    observed_hu: float
    sd_hu: float
    voxels: int
    se_hu: float  # SE of the mean, from slice-to-slice scatter (noise is correlated in-plane)
    fitted_hu: float | None = None
    residual_hu: float | None = None


@dataclass
class SiteEntry:
    """One scanner and protocol: the fit of its rods phantom (see module docstring)."""

    manufacturer: str
    model: str
    kvp: float
    kernel: str
    energy_kev: float
    energy_sd_kev: float
    hu_scale: float
    hu_offset: float
    air_hu: float | None = None
    rods: list[dict] = field(default_factory=list)
    rms_residual_hu: float | None = None
    max_abs_residual_hu: float | None = None
    material: str = "K2HPO4"
    date: str = ""
    phantom: str = ""  # the phantom CT's file name (no folders: nothing of a site's layout)
    method: str = (
        "rods phantom: mean HU vs known K2HPO4 mg/cm3 (line) and air outside -> HU scale, "
        "then effective energy from NIST K2HPO4/water attenuation"
    )
    version: str = SITE_FORMAT

    def key(self) -> tuple[str, str, float, str]:
        return (_norm(self.manufacturer), _norm(self.model), round(self.kvp, 1), _norm(self.kernel))

    def describe(self) -> str:
        parts = [self.manufacturer or "?", self.model or "?", f"{self.kvp:g} kVp"]
        if self.kernel:
            parts.append(f"kernel {self.kernel}")
        return " / ".join(parts)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SiteChoice:
    """Which entry of a site file a scan uses (``entry`` None: none fits, the phantomless fit
    is used), with the flags and a note in words for the calibration block."""

    status: str  # "used", "kvp_mismatch", "scanner_mismatch", "ambiguous"
    entry: SiteEntry | None
    kvp: float | None  # the kVp the calibration goes on with
    flags: list[str]
    note: str
    file: str = ""

    def as_dict(self) -> dict:
        e = self.entry
        return {
            "status": self.status,
            "file": self.file,
            "note": self.note,
            "entry": None
            if e is None
            else {
                "manufacturer": e.manufacturer,
                "model": e.model,
                "kvp": e.kvp,
                "kernel": e.kernel,
                "energy_kev": e.energy_kev,
                "energy_sd_kev": e.energy_sd_kev,
                "hu_scale": e.hu_scale,
                "hu_offset": e.hu_offset,
                "rms_residual_hu": e.rms_residual_hu,
                "date": e.date,
            },
        }


def _norm(text: object) -> str:
    return " ".join(str(text or "").split()).lower()


def _energy_of_k(k: float) -> float | None:
    """The effective energy (keV) at which 1 mg/cm^3 of K2HPO4 adds ``k`` HU; None outside
    40-100 keV."""
    if not _K_FINE[-1] <= k <= _K_FINE[0]:
        return None
    return float(np.interp(k, _K_FINE[::-1], _E_FINE[::-1]))


def _air_hu(hu: np.ndarray, spacing_zyx: tuple[float, float, float]) -> tuple[float | None, int]:
    """Median HU of the air around the phantom (more than 6 mm from anything above -500 HU),
    on a grid of about 3 mm."""
    step = [max(1, int(round(3.0 / s))) for s in spacing_zyx]
    small = np.asarray(hu[:: step[0], :: step[1], :: step[2]], dtype=np.float32)
    mm = tuple(s * k for s, k in zip(spacing_zyx, step, strict=True))
    solid = small > -500.0
    if not solid.any():
        return None, 0
    far = ndimage.distance_transform_edt(~solid, sampling=mm) > AIR_CLEARANCE_MM
    values = small[far & (small >= AIR_WINDOW_HU[0]) & (small <= AIR_WINDOW_HU[1])]
    if values.size < MIN_AIR_VOXELS // int(np.prod(step)) + 10:
        return None, int(values.size)
    floor = float(small.min())
    # clipping below the median leaves it (and its bin, _grouped_median) in place; a median
    # in the floor's own bin is clipped itself
    if float(np.median(values)) <= floor + 0.5:
        raise AirClippedError(floor)
    return _grouped_median(values), int(values.size)


class AirClippedError(Exception):
    """Half the air reads the image's lowest value: clipped there, its median is no HU."""

    def __init__(self, floor: float) -> None:
        super().__init__(floor)
        self.floor = floor


def _grouped_median(values: np.ndarray) -> float:
    """Median of integer-valued HU, interpolated within its 1 HU bin (the plain median of
    rounded data is off by up to 0.5 HU; the mean would feel the -1024 floor's clipping)."""
    m = float(np.median(values))
    if not np.all(values == np.rint(values)):
        return m
    c = round(m)
    below = float(np.count_nonzero(values < c - 0.5))
    at = float(np.count_nonzero(values == c))
    return float(c - 0.5 + (0.5 * values.size - below) / at) if at else m


def rod_points(
    hu: np.ndarray,
    spacing_xyz: tuple[float, float, float],
    rods_mask: np.ndarray,
    rods: dict[int, float],
    source: str | Path | None = None,
) -> list[RodPoint]:
    """Mean HU in each rod's label, eroded by 4 mm (its partial-volume edge left out)."""
    sx, sy, sz = spacing_xyz
    radius = [max(1, int(math.ceil(ROD_EROSION_MM / s - 1e-6))) for s in (sz, sy, sx)]
    structure = np.zeros([2 * r + 1 for r in radius], dtype=bool)
    zz, yy, xx = np.ogrid[
        -radius[0] : radius[0] + 1, -radius[1] : radius[1] + 1, -radius[2] : radius[2] + 1
    ]
    structure[(zz / radius[0]) ** 2 + (yy / radius[1]) ** 2 + (xx / radius[2]) ** 2 <= 1.0] = True
    present = set(np.unique(rods_mask).tolist()) - {0}
    missing = sorted(set(rods) - present)
    if missing:
        raise InputError(
            f"the rods mask has no voxels of label(s) {missing} that the rods file describes",
            "draw every rod of the rods file in the mask (label value = the rod's 'label')",
            source,
        )
    extra = sorted(present - set(rods))
    if extra:
        raise InputError(
            f"the rods mask has label(s) {extra} that the rods file does not describe",
            "give each label of the mask its mg/cm3 in the rods file, or remove it from the mask",
            source,
        )
    points = []
    series: list[np.ndarray] = []  # each rod's slice means, for the SEs below
    for label, mg in sorted(rods.items()):
        inside = rods_mask == label
        idx = np.argwhere(inside)
        lo = np.maximum(idx.min(0) - max(radius) - 1, 0)
        hi = np.minimum(idx.max(0) + max(radius) + 2, inside.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        core = ndimage.binary_erosion(inside[box], structure=structure)
        n = int(core.sum())
        if n < MIN_ROD_VOXELS:
            raise InputError(
                f"rod {label} has {n} voxels left 4 mm inside its label (at least "
                f"{MIN_ROD_VOXELS} are needed)",
                "draw the rod's whole cross-section over several slices, or use wider rods",
                source,
            )
        block = np.asarray(hu[box], dtype=np.float64)
        values = block[core]
        per_slice = core.sum(axis=(1, 2))
        means = (block * core).sum(axis=(1, 2))[per_slice > 0] / per_slice[per_slice > 0]
        series.append(means)
        se = float(values.std() / math.sqrt(n))
        points.append(RodPoint(label, float(mg), float(values.mean()), float(values.std()), n, se))
    # noise is correlated in-plane (so the voxel SD says too little) and between neighbouring
    # slices (blur, overlapping reconstruction: so the slice means' scatter says too little):
    # the SE of each mean from its slice means, widened by their lag-1 autocorrelation, pooled
    # over the rods (one scanner, one noise texture): se^2 = var/m * (1 + rho) / (1 - rho)
    dev = [m - m.mean() for m in series if m.size >= 3]
    rho = 0.0
    if dev:
        num = sum(float(d[1:] @ d[:-1]) for d in dev)
        den = sum(float(d @ d) for d in dev)
        rho = min(max(num / den if den > 0 else 0.0, 0.0), MAX_SLICE_CORRELATION)
    widen = math.sqrt((1.0 + rho) / (1.0 - rho))
    for p, m in zip(points, series, strict=True):
        if m.size >= 3:
            p.se_hu = max(p.se_hu, float(m.std(ddof=1) / math.sqrt(m.size)) * widen)
    return points


def fit_rods_image(
    ct: sitk.Image,
    rods_mask: sitk.Image,
    rods: dict[int, float],
    scanner: dict[str, str | float | None],
    source: str | Path | None = None,
) -> SiteEntry:
    """:func:`fit_rods` of a rods-phantom CT and its label image (same grid)."""
    return fit_rods(
        sitk.GetArrayViewFromImage(ct),
        ct.GetSpacing(),
        sitk.GetArrayFromImage(rods_mask).astype(np.int32),
        rods,
        scanner,
        source=source,
    )


def fit_rods(
    hu: np.ndarray,
    spacing_xyz: tuple[float, float, float],
    rods_mask: np.ndarray,
    rods: dict[int, float],
    scanner: dict[str, str | float | None],
    source: str | Path | None = None,
) -> SiteEntry:
    """The site entry of one rods-phantom scan (module docstring), or an InputError with why
    the fit is refused. ``hu``/``rods_mask`` arrays (k, j, i); ``rods`` label -> mg/cm^3;
    ``scanner`` the manufacturer, model, kvp (required) and kernel of the scan."""
    kvp = scanner.get("kvp")
    if kvp is None:
        raise InputError(
            "the tube voltage of the phantom scan is unknown (no DICOM 0018,0060)",
            "give it with --kvp (the site entry is keyed by it)",
            source,
        )
    kvp = float(kvp)
    if not 70.0 <= kvp <= 150.0:
        raise InputError(f"kVp {kvp:g} is not a CT tube voltage", "give 70-150 kVp", source)
    conc = np.array(sorted(rods.values()), dtype=np.float64)
    if len(rods) < MIN_RODS or conc[-1] - conc[0] < MIN_SPAN_MG_CM3:
        raise InputError(
            f"{len(rods)} rod(s) spanning {conc[-1] - conc[0] if conc.size else 0:.0f} mg/cm3: "
            f"an energy needs at least {MIN_RODS} rods spanning {MIN_SPAN_MG_CM3:.0f} mg/cm3",
            "describe all rods of the phantom (e.g. 0, 50, 100, 150, 200 mg/cm3 K2HPO4)",
            source,
        )
    sx, sy, sz = spacing_xyz
    points = rod_points(hu, spacing_xyz, rods_mask, rods, source)
    try:
        air, _n_air = _air_hu(hu, (float(sz), float(sy), float(sx)))
    except AirClippedError as exc:
        raise InputError(
            f"the air around the phantom reads the image's lowest value ({exc.floor:.0f} HU) "
            "in half its voxels: clipped there, so the HU scale cannot be read",
            "check the scanner's air calibration (air should read about -1000 HU), or export "
            "the scan without clipping below -1024",
            source,
        ) from None
    if air is None:
        raise InputError(
            "no air around the phantom in the field of view (the HU scale needs it)",
            "scan the phantom with some air around it inside the field of view",
            source,
        )
    c = np.array([p.mg_cm3 for p in points])
    y = np.array([p.observed_hu for p in points])
    design = np.stack([np.ones_like(c), c], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    b, s = float(coef[0]), float(coef[1])
    fitted = design @ coef
    resid = y - fitted
    dof = max(1, c.size - 2)
    # SEs of the line: residual scatter, and at least the rods' own noise of the mean
    noise = np.array([p.se_hu for p in points])
    sigma2 = max(float(resid @ resid) / dof, float(np.mean(noise**2)))
    cov = sigma2 * np.linalg.inv(design.T @ design)
    se_b, se_s = math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1])
    a = (b - air) / 1000.0
    for p, f, r in zip(points, fitted, resid, strict=True):
        p.fitted_hu, p.residual_hu = float(f), float(r)
    worst = int(np.argmax(np.abs(resid)))
    if abs(resid[worst]) > MAX_ROD_RESIDUAL_HU:
        p = points[worst]
        raise InputError(
            f"the rods do not lie on a line: rod {p.label} ({p.mg_cm3:g} mg/cm3) reads "
            f"{p.observed_hu:.1f} HU, {resid[worst]:+.1f} HU off the fit (more than "
            f"{MAX_ROD_RESIDUAL_HU:.0f})",
            "check the rods file's densities and that each label is the rod it names",
            source,
        )
    if not SCALE_RANGE[0] <= a <= SCALE_RANGE[1] or abs(b) > MAX_ABS_OFFSET:
        raise InputError(
            f"HU scale {a:.3f} (air {air:.0f}, water-equivalent base {b:.0f} HU) / offset "
            f"{b:.1f} HU outside {SCALE_RANGE[0]}-{SCALE_RANGE[1]} / +-{MAX_ABS_OFFSET:.0f}: "
            "not a calibrated CT, or the rods are not in a water-equivalent phantom",
            "check the scanner's air/water calibration and the phantom",
            source,
        )
    k = s / a
    energy = _energy_of_k(k)
    lo_e, hi_e = ENERGY_RANGE_KEV
    if energy is None or not lo_e <= energy <= hi_e:
        said = "outside 40-100 keV" if energy is None else f"{energy:.1f} keV"
        raise InputError(
            f"the rods rise {s:.3f} HU per mg/cm3 (K2HPO4 {k:.3f} HU per mg/cm3 after the HU "
            f"scale): an effective energy {said}, not within {lo_e:.0f}-{hi_e:.0f} keV",
            "check the rods' densities (mg/cm3 K2HPO4, not HA or g/cm3) and the material",
            source,
        )
    nominal = att.nominal_energy_kev(kvp)
    if abs(energy - nominal) > MAX_ENERGY_FROM_NOMINAL_KEV:
        raise InputError(
            f"effective energy {energy:.1f} keV is {energy - nominal:+.1f} keV from what "
            f"{kvp:g} kVp gives ({nominal:.0f} keV; more than "
            f"{MAX_ENERGY_FROM_NOMINAL_KEV:.0f} is no filtration difference)",
            "check the kVp and the rods' densities",
            source,
        )
    se_a = math.hypot(se_b, 1.0) / 1000.0  # air's median: about 1 HU
    se_k = abs(k) * math.hypot(se_s / s, se_a / a)
    dk_de = abs(
        float(np.interp(energy + 0.5, _E_FINE, _K_FINE))
        - float(np.interp(energy - 0.5, _E_FINE, _K_FINE))
    )
    energy_sd = max(se_k / dk_de, 0.01)
    name = "" if source is None else Path(str(source).rstrip("/")).name
    return SiteEntry(
        manufacturer=str(scanner.get("manufacturer") or ""),
        model=str(scanner.get("model") or ""),
        kvp=kvp,
        kernel=str(scanner.get("kernel") or ""),
        energy_kev=round(energy, 3),
        energy_sd_kev=round(energy_sd, 3),
        hu_scale=round(a, 5),
        hu_offset=round(b, 3),
        air_hu=round(air, 2),
        rods=[
            {key: (round(v, 3) if isinstance(v, float) else v) for key, v in asdict(p).items()}
            for p in points
        ],
        rms_residual_hu=round(float(np.sqrt(np.mean(resid**2))), 3),
        max_abs_residual_hu=round(float(np.abs(resid).max()), 3),
        date=datetime.now(UTC).replace(microsecond=0).isoformat(),
        phantom=name,
    )


ROD_FILE_FORMAT = "femurscreen-rods-v1"


def read_rods_file(path: str | Path) -> dict[int, float]:
    """The rods of a phantom (label -> mg/cm^3 K2HPO4) from its rods file, checked:
    ``{"format": "femurscreen-rods-v1", "material": "K2HPO4", "rods": [{"label": 1,
    "mg_cm3": 0}, ...]}``."""
    path = Path(path)
    fix = (
        'write {"format": "femurscreen-rods-v1", "material": "K2HPO4", "rods": '
        '[{"label": 1, "mg_cm3": 0}, {"label": 2, "mg_cm3": 50}, ...]}'
    )
    if not path.is_file():
        raise InputError("rods file not found", fix, path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"is not valid JSON ({exc})", fix, path) from None
    if not isinstance(data, dict) or data.get("format") != ROD_FILE_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InputError(
            f"is not a rods file (format {got!r}, expected {ROD_FILE_FORMAT!r})", fix, path
        )
    material = str(data.get("material", ""))
    if material.upper() != "K2HPO4":
        raise InputError(
            f"rods of {material or 'no stated material'!r}: only K2HPO4 rods are supported "
            "(the density scale is K2HPO4-equivalent)",
            "use a K2HPO4 phantom, or state its material as K2HPO4",
            path,
        )
    rods_in = data.get("rods")
    if not isinstance(rods_in, list) or not rods_in:
        raise InputError("has no 'rods' list", fix, path)
    rods: dict[int, float] = {}
    for i, r in enumerate(rods_in):
        label = r.get("label") if isinstance(r, dict) else None
        mg = r.get("mg_cm3") if isinstance(r, dict) else None
        if not isinstance(label, int) or isinstance(label, bool) or not 1 <= label <= 255:
            raise InputError(f"rod {i}: label {label!r} is not an integer 1-255", fix, path)
        if (
            not isinstance(mg, int | float)
            or isinstance(mg, bool)
            or not math.isfinite(mg)
            or not 0.0 <= mg <= MAX_MG_CM3
        ):
            raise InputError(
                f"rod {i} (label {label}): mg_cm3 {mg!r} is not a density of 0-{MAX_MG_CM3:.0f}",
                "give each rod's K2HPO4 concentration in mg/cm3",
                path,
            )
        if label in rods:
            raise InputError(f"label {label} is given twice", "give each rod its own label", path)
        rods[label] = float(mg)
    return rods


_REQUIRED = {
    "manufacturer": str,
    "model": str,
    "kvp": float,
    "kernel": str,
    "energy_kev": float,
    "energy_sd_kev": float,
    "hu_scale": float,
    "hu_offset": float,
}


def _entry_from_dict(d: object, i: int, path: str | Path) -> SiteEntry:
    fix = "make the file with 'femurscreen calibrate-scanner', or fix the entry"
    if not isinstance(d, dict):
        raise InputError(f"entry {i} is not an object", fix, path)
    for key, kind in _REQUIRED.items():
        v = d.get(key)
        ok = isinstance(v, str) if kind is str else isinstance(v, int | float)
        if not ok or isinstance(v, bool) or (kind is float and not math.isfinite(float(v or 0.0))):
            want = "a string" if kind is str else "a number"
            raise InputError(f"entry {i}: '{key}' is {v!r}, not {want}", fix, path)
    lo_e, hi_e = ENERGY_RANGE_KEV
    checks = (
        (70.0 <= d["kvp"] <= 150.0, f"kVp {d['kvp']} is no CT tube voltage"),
        (lo_e <= d["energy_kev"] <= hi_e, f"energy {d['energy_kev']} keV outside {lo_e}-{hi_e}"),
        (
            ENERGY_SD_RANGE_KEV[0] < d["energy_sd_kev"] <= ENERGY_SD_RANGE_KEV[1],
            f"energy SD {d['energy_sd_kev']} keV outside (0, {ENERGY_SD_RANGE_KEV[1]:g}]",
        ),
        (
            SCALE_RANGE[0] <= d["hu_scale"] <= SCALE_RANGE[1],
            f"HU scale {d['hu_scale']} outside {SCALE_RANGE[0]}-{SCALE_RANGE[1]}",
        ),
        (abs(d["hu_offset"]) <= MAX_ABS_OFFSET, f"HU offset {d['hu_offset']} beyond +-60"),
        (d.get("material", "K2HPO4") == "K2HPO4", f"material {d.get('material')!r}, not K2HPO4"),
    )
    for ok, why in checks:
        if not ok:
            raise InputError(f"entry {i} ({d['manufacturer']} {d['model']}): {why}", fix, path)
    known = {f for f in SiteEntry.__dataclass_fields__}
    kept = {k: v for k, v in d.items() if k in known}
    kept["kvp"] = float(d["kvp"])
    for key in ("energy_kev", "energy_sd_kev", "hu_scale", "hu_offset"):
        kept[key] = float(d[key])
    return SiteEntry(**kept)


def parse_site(data: object, path: str | Path = "site calibration") -> list[SiteEntry]:
    """The entries of a site calibration's JSON content, checked; InputError says what is
    wrong."""
    fix = "make the file with 'femurscreen calibrate-scanner PHANTOM_CT ... --out FILE'"
    if not isinstance(data, dict) or data.get("format") != SITE_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InputError(
            f"is not a FemurScreen site calibration (format {got!r}, expected {SITE_FORMAT!r})",
            fix,
            path,
        )
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        raise InputError("has no scanner entries", fix, path)
    out = [_entry_from_dict(d, i, path) for i, d in enumerate(entries)]
    keys = [e.key() for e in out]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise InputError(
            f"has {len(keys) - len(set(keys))} duplicate entries for one scanner/kVp/kernel",
            "keep one entry per manufacturer, model, kVp and kernel",
            path,
        )
    return out


def read_site_file(path: str | Path) -> list[SiteEntry]:
    """Read and check a site calibration file (InputError with what is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            "site calibration file not found" if not path.exists() else "is not a file",
            "give the JSON file 'femurscreen calibrate-scanner' wrote",
            path,
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"is not valid JSON ({exc})", "give the site calibration file", path
        ) from None
    return parse_site(data, path)


@dataclass(frozen=True)
class SiteCalibration:
    """A checked site calibration file: its entries and its name (no folders: nothing of a
    site's layout goes into a result)."""

    entries: tuple[SiteEntry, ...]
    file: str = ""


def load_site_calibration(path: str | Path) -> SiteCalibration:
    """Read and check a site calibration file once (InputError says what is wrong and what to
    do); the result can be given to :func:`set_site_calibration` for many images."""
    return SiteCalibration(tuple(read_site_file(path)), Path(path).name)


def check_site_calibration(path: str | Path) -> SiteCalibration:
    """Refuse a site calibration file that cannot be used, before anything is computed."""
    return load_site_calibration(path)


def set_site_calibration(ct: sitk.Image, site: SiteCalibration | str | Path) -> None:
    """Record a site calibration (a loaded one, or a file, read and checked here) on the
    image, where :func:`femurscreen.bmd.measure` (and so every later density step: grading,
    the report's pictures) reads it."""
    if not isinstance(site, SiteCalibration):
        site = load_site_calibration(site)
    ct.SetMetaData(SITE_META_KEY, json.dumps([e.as_dict() for e in site.entries]))
    ct.SetMetaData(SITE_NAME_META_KEY, site.file)


def site_on(ct: sitk.Image) -> SiteCalibration | None:
    """The site calibration :func:`set_site_calibration` recorded on the image, if any."""
    if not ct.HasMetaDataKey(SITE_META_KEY):
        return None
    raw = json.loads(ct.GetMetaData(SITE_META_KEY))
    name = ct.GetMetaData(SITE_NAME_META_KEY) if ct.HasMetaDataKey(SITE_NAME_META_KEY) else ""
    entries = parse_site({"format": SITE_FORMAT, "entries": raw}, name or "site calibration")
    return SiteCalibration(tuple(entries), name)


def scan_tags(ct: sitk.Image) -> dict[str, str | float | None]:
    """Manufacturer, model, kVp and kernel from the image's DICOM header (None when absent)."""
    out: dict[str, str | float | None] = {}
    for name, tag in SCANNER_TAGS.items():
        v = ct.GetMetaData(tag).strip(" \x00") if ct.HasMetaDataKey(tag) else ""
        if name == "kvp":
            try:
                kvp = float(v)
            except ValueError:
                kvp = None
            out[name] = kvp if kvp is not None and 70.0 <= kvp <= 150.0 else None
        else:
            out[name] = v or None
    return out


def choose_entry(
    entries: list[SiteEntry], tags: dict[str, str | float | None], file: str = ""
) -> SiteChoice:
    """The entry a scan with these header ``tags`` uses. Manufacturer, model and kVp must agree
    where both the scan and the entry know them (else no entry: flagged, phantomless); among
    those, the one agreeing on most fields (kernel included; a different kernel is flagged);
    ties: the newest. A scan without a kVp takes the entry's, flagged ``site_kvp_unverified``
    (entries of several kVp fitting it: none used, ``site_kvp_ambiguous``);
    an entry that does not say the manufacturer or model a scan's header does is flagged
    ``site_scanner_unverified``."""
    hard = ("manufacturer", "model")
    raw_kvp = tags.get("kvp")
    scan_kvp = None if raw_kvp is None else float(raw_kvp)

    def conflicts(e: SiteEntry) -> list[str]:
        out = []
        for name in hard:
            if tags.get(name) and getattr(e, name) and _norm(tags[name]) != _norm(getattr(e, name)):
                out.append(name)
        if scan_kvp is not None and abs(scan_kvp - e.kvp) > 0.5:
            out.append("kvp")
        return out

    def score(e: SiteEntry) -> tuple[int, str]:
        agree = 0
        for name in (*hard, "kernel"):
            if tags.get(name) and _norm(tags[name]) == _norm(getattr(e, name)):
                agree += 1
        return agree, e.date

    fitting = [e for e in entries if not conflicts(e)]
    scan = " / ".join(
        str(tags[n]) + (" kVp" if n == "kvp" else "") for n in SCANNER_TAGS if tags.get(n)
    )
    scan = scan or "no scanner tags (not DICOM)"
    if not fitting:
        reasons = {c for e in entries for c in conflicts(e)}
        only_kvp = reasons == {"kvp"} or all(conflicts(e) == ["kvp"] for e in entries)
        status = "kvp_mismatch" if only_kvp else "scanner_mismatch"
        have = "; ".join(e.describe() for e in entries)
        return SiteChoice(
            status,
            None,
            scan_kvp,
            [f"site_{status}"],
            f"no site entry for this scan ({scan}); the file has: {have}. The phantomless "
            "calibration is used instead",
            file,
        )
    kvps = sorted({e.kvp for e in fitting})
    if scan_kvp is None and len(kvps) > 1:
        return SiteChoice(
            "ambiguous",
            None,
            None,
            ["site_kvp_ambiguous"],
            f"the scan's kVp is unknown ({scan}) and the file has entries for this scanner at "
            f"{', '.join(f'{k:g}' for k in kvps)} kVp: none is used (give the scan's kVp, "
            "e.g. --kvp); the phantomless calibration is used instead",
            file,
        )
    best = max(fitting, key=score)
    flags: list[str] = []
    notes = [f"site entry {best.describe()} (fitted {best.date or 'at an unknown date'})"]
    if scan_kvp is None:
        flags.append("site_kvp_unverified")
        notes.append(f"the scan's kVp is unknown: the entry's {best.kvp:g} kVp is assumed")
    unknown = [n for n in hard if tags.get(n) and not getattr(best, n)]
    if unknown:
        flags.append("site_scanner_unverified")
        notes.append(
            f"the entry does not say its {' or '.join(unknown)} (made without a DICOM header "
            "or --manufacturer/--model): matched on the kVp alone"
        )
    if tags.get("kernel") and best.kernel and _norm(tags["kernel"]) != _norm(best.kernel):
        flags.append("site_kernel_mismatch")
        notes.append(f"the scan's kernel {tags['kernel']} differs from the entry's {best.kernel}")
    same = [e for e in fitting if score(e)[0] == score(best)[0] and e is not best]
    if same:
        notes.append(f"{len(same) + 1} entries fit equally; the newest is used")
    return SiteChoice("used", best, best.kvp, flags, "; ".join(notes), file)


def update_site_file(path: str | Path, entry: SiteEntry) -> tuple[Path, bool]:
    """Write ``entry`` into the site file at ``path`` (made if absent), replacing an entry of
    the same manufacturer, model, kVp and kernel; returns (path, whether one was replaced)."""
    from femurscreen.atomic import write_text

    path = Path(path)
    entries = read_site_file(path) if path.exists() else []
    kept = [e for e in entries if e.key() != entry.key()]
    replaced = len(kept) != len(entries)
    kept.append(entry)
    data = {"format": SITE_FORMAT, "entries": [e.as_dict() for e in kept]}
    write_text(path, json.dumps(data, indent=2) + "\n")
    return path, replaced
