"""A calibration phantom of known K2HPO4 rods, scanned by a phantom :class:`Scanner`.

Why: site (asynchronous) calibration (:mod:`femurscreen.bmd.site`) fits a scanner's effective
energy from such a phantom, scanned once per scanner and protocol; the phantom world needs one
to test that and to evaluate it (scripts/evaluate_bmd.py, site mode), rendered through the very
scanner model that renders the patients (:mod:`femurscreen.phantom.scanner`).

The object: a water cylinder of elliptical cross-section (320 x 240 mm, about an adult pelvis,
so that a real scan of it sees a similar beam), 45 mm long along z, in air, with five rods of
28 mm diameter on a circle of 65 mm radius around its axis, holding 0, 50, 100, 150 and 200
mg/cm^3 K2HPO4 in water (as in liquid K2HPO4 phantoms; Cann & Genant 1980). Each voxel's HU is
the mixture of its materials' HU at the scanner's energy (attenuation is linear in the volume
fractions, which come from 4 x 4 in-plane supersampling; :meth:`Scanner.solution_hu` for the
rods, ``Scanner.hu`` for air and water), then point-spread blur and correlated noise as in the
patients (:func:`femurscreen.phantom.voxelize.finish`), then a day's drift of the scanner's
water/air calibration (gain and offset drawn from the seed like a case's), rounded to int16.
The label map holds each rod (label 1..5, voxel centre inside the rod); :data:`ROD_FILE_FORMAT`
is the rods file that describes them (label -> mg/cm^3).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from femurscreen.phantom.scanner import Scanner
from femurscreen.phantom.voxelize import HU_MAX, HU_MIN, gaussian_weights

RODS_MG_CM3 = (0.0, 50.0, 100.0, 150.0, 200.0)
BODY_SEMI_AXES_MM = (160.0, 120.0)  # x, y
ROD_RADIUS_MM = 14.0
ROD_CIRCLE_MM = 65.0
LENGTH_MM = 45.0
FOV_MM = (380.0, 300.0)  # x, y: air around the body
SUPERSAMPLE = 4
STREAM_RODS = 11  # a stream of the seed of its own
ROD_FILE_FORMAT = "femurscreen-rods-v1"


@dataclass(frozen=True)
class RodsOptions:
    """Geometry and imaging of one rods-phantom scan."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.5)
    rods_mg_cm3: tuple[float, ...] = RODS_MG_CM3
    noise_sd: float = 20.0
    psf_sigma_mm: float = 0.75
    drift: bool = True  # the day's gain/offset of the water/air calibration (as a case's)


def rods_file(rods: dict[int, float]) -> dict:
    """The rods file's content for rods ``label -> mg/cm^3`` (what calibrate-scanner reads)."""
    return {
        "format": ROD_FILE_FORMAT,
        "material": "K2HPO4",
        "unit": "mg/cm3",
        "rods": [{"label": int(k), "mg_cm3": float(v)} for k, v in sorted(rods.items())],
    }


def rod_centres(n: int) -> list[tuple[float, float]]:
    """In-plane centres (x, y mm from the axis) of ``n`` rods on the circle, evenly spaced."""
    return [
        (
            ROD_CIRCLE_MM * float(np.cos(2 * np.pi * k / n + np.pi / 2)),
            ROD_CIRCLE_MM * float(np.sin(2 * np.pi * k / n + np.pi / 2)),
        )
        for k in range(n)
    ]


def make_rods_phantom(
    scanner: Scanner, seed: int = 0, options: RodsOptions | None = None
) -> tuple[sitk.Image, sitk.Image, dict[int, float], dict]:
    """Render the phantom through ``scanner``. Returns the CT (int16 HU), the rods label map
    (uint8, same grid), the rods (label -> mg/cm^3) and a dict describing the scan (the
    scanner, the drift, the true energy: for tests and the evaluation, not for the fit)."""
    o = options or RodsOptions()
    sx, sy, sz = o.spacing
    nx, ny = (int(round(f / s)) for f, s in zip(FOV_MM, (sx, sy), strict=True))
    nz = max(3, int(round(LENGTH_MM / sz)) + 4)  # two slices of air above and below
    x = (np.arange(nx) - (nx - 1) / 2.0) * sx
    y = (np.arange(ny) - (ny - 1) / 2.0) * sy
    # supersampled in-plane coordinates: (ny, nx, SUPERSAMPLE^2)
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    xs = (x[None, :, None, None] + sx * sub[None, None, :, None]).repeat(SUPERSAMPLE, 3)
    ys = (y[:, None, None, None] + sy * sub[None, None, None, :]).repeat(SUPERSAMPLE, 2)
    xs = np.broadcast_to(xs, (ny, nx, SUPERSAMPLE, SUPERSAMPLE)).reshape(ny, nx, -1)
    ys = np.broadcast_to(ys, (ny, nx, SUPERSAMPLE, SUPERSAMPLE)).reshape(ny, nx, -1)
    a, b = BODY_SEMI_AXES_MM
    body = (xs / a) ** 2 + (ys / b) ** 2 <= 1.0
    air_hu, water_hu = float(scanner.hu(-1000.0)), float(scanner.hu(0.0))
    plane = np.where(body, water_hu, air_hu).astype(np.float64)
    label_plane = np.zeros((ny, nx), dtype=np.uint8)
    rods: dict[int, float] = {}
    centre_x, centre_y = x[None, :], y[:, None]
    for k, ((cx, cy), mg) in enumerate(
        zip(rod_centres(len(o.rods_mg_cm3)), o.rods_mg_cm3, strict=True), start=1
    ):
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= ROD_RADIUS_MM**2
        plane = np.where(inside, float(scanner.solution_hu(mg)), plane)
        label_plane[(centre_x - cx) ** 2 + (centre_y - cy) ** 2 <= ROD_RADIUS_MM**2] = k
        rods[k] = float(mg)
    plane2d = plane.mean(axis=2)  # volume fractions x material HU (linear in attenuation)
    z = (np.arange(nz) - (nz - 1) / 2.0) * sz
    in_z = np.clip((LENGTH_MM / 2.0 - np.abs(z)) / sz + 0.5, 0.0, 1.0)  # end-face coverage
    hu = (air_hu + in_z[:, None, None] * (plane2d[None] - air_hu)).astype(np.float32)
    labels = np.where(in_z[:, None, None] >= 1.0, label_plane[None], 0).astype(np.uint8)

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), STREAM_RODS]))
    sigmas = [o.psf_sigma_mm / s for s in (sz, sy, sx)]
    gain = float(np.sqrt(np.prod([np.sum(gaussian_weights(s) ** 2) for s in sigmas])))
    if o.noise_sd > 0:
        hu += rng.normal(0.0, o.noise_sd / gain, hu.shape).astype(np.float32)
    ndimage.gaussian_filter(hu, sigmas, output=hu, mode="nearest")
    drift_scale = float(rng.normal(1.0, 0.012)) if o.drift else 1.0
    drift_offset = float(rng.normal(0.0, 4.0)) if o.drift else 0.0
    hu = hu * np.float32(drift_scale) + np.float32(drift_offset)
    out = np.rint(np.clip(hu, HU_MIN, HU_MAX)).astype(np.int16)

    origin = (float(x[0]), float(y[0]), float(z[0]))
    ct = sitk.GetImageFromArray(out)
    lab = sitk.GetImageFromArray(labels)
    for img in (ct, lab):
        img.SetSpacing((float(sx), float(sy), float(sz)))
        img.SetOrigin(origin)
    ct.SetMetaData("0018|0060", f"{scanner.kvp:g}")  # as the DICOM header would say it
    info = {
        "scanner": scanner.as_dict(),
        "drift_scale": round(drift_scale, 5),
        "drift_offset": round(drift_offset, 3),
        "rods_mg_cm3": list(o.rods_mg_cm3),
        "noise_sd": o.noise_sd,
        "spacing": list(o.spacing),
    }
    return ct, lab, rods, info


DEMO_FILES = {"ct": "rods_ct.nii.gz", "mask": "rods_mask.nii.gz", "rods": "rods.json"}
TRUTH_FILE = "scanner_truth.json"  # what the scanner really was (for checking a fit only)


def write_rods_phantom(
    folder: str | Path,
    scanner: Scanner,
    seed: int = 0,
    options: RodsOptions | None = None,
) -> dict[str, Path]:
    """Write a rods-phantom scan as a user gets one: the CT and the rods' label map (NIfTI,
    so no kVp travels with them: ``calibrate-scanner`` needs ``--kvp``), the rods file, and
    beside them the scanner's truth (its effective energy), which no fit reads. Atomic: the
    folder appears complete or not at all. Returns the files by role (``ct``, ``mask``,
    ``rods``, ``truth``)."""
    from femurscreen.atomic import atomic_dir

    folder = Path(folder)
    ct, lab, rods, info = make_rods_phantom(scanner, seed=seed, options=options)
    info["energy_kev"] = round(scanner.kev, 3)
    info["seed"] = int(seed)
    with atomic_dir(folder, owned={*DEMO_FILES.values(), TRUTH_FILE}) as tmp:
        sitk.WriteImage(ct, str(tmp / DEMO_FILES["ct"]), True)
        sitk.WriteImage(lab, str(tmp / DEMO_FILES["mask"]), True)
        (tmp / DEMO_FILES["rods"]).write_text(
            json.dumps(rods_file(rods), indent=2) + "\n", encoding="utf-8"
        )
        (tmp / TRUTH_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    paths = {role: folder / name for role, name in DEMO_FILES.items()}
    paths["truth"] = folder / TRUTH_FILE
    return paths
