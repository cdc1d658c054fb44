"""Calibrated bone density of the hip from CT: a CT-derived femoral-neck / total-hip aBMD and
T-score per side, needing no training data (a physically grounded second read beside the
demo classifier).

calibration (phantomless HU -> mg/cm^3 K2HPO4 from the scan's own air, fat and muscle, by an
effective-energy fit to tabulated attenuation), site (the scanner's effective energy fitted once
from a K2HPO4 rods phantom, used instead of the kVp prior when a site file is given),
attenuation (the NIST tables they use),
projection (DXA pose, areal density, femoral-neck box and total-hip region), tscore (NHANES III
reference, WHO class, uncertainty). :func:`measure` runs them on a CT and its femur labels and
returns the ``bmd`` block: ``{"calibration": {...}, "left": {...}, "right": {...}}``, each side
with ``status``, ``fn_abmd_g_cm2``, ``th_abmd_g_cm2``, ``fn_t_score``, ``th_t_score``,
``who_class``, ``flags`` (numbers None when the side is not graded).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from femurscreen.bmd.calibration import KVP_TAG, Calibration, calibrate
from femurscreen.bmd.projection import Projection, project_side
from femurscreen.bmd.site import (
    SiteCalibration,
    SiteChoice,
    SiteEntry,
    check_site_calibration,
    choose_entry,
    load_site_calibration,
    scan_tags,
    set_site_calibration,
    site_on,
)
from femurscreen.bmd.tscore import LABEL, LABEL_SITE, REFERENCE_SOURCE, SEE_G_CM2, grade
from femurscreen.errors import InputError
from femurscreen.hu import METAL_IN_MASK_HU
from femurscreen.labels import LEFT, RIGHT
from femurscreen.status import Status

BMD_VERSION = "femurscreen-bmd-v2"
METAL_HU = METAL_IN_MASK_HU  # its one home is femurscreen.hu (this name kept for readers)
METAL_FRACTION = 0.001  # of the mask's voxels: a metal implant, not a bone to measure
SIDE_VALUES = {"left": LEFT, "right": RIGHT}

__all__ = [
    "BMD_VERSION",
    "Calibration",
    "Projection",
    "SiteCalibration",
    "SiteEntry",
    "calibrate",
    "check_kvp",
    "check_site_calibration",
    "header_kvp",
    "load_site_calibration",
    "measure",
    "project_side",
    "set_kvp",
    "set_site_calibration",
    "site_calibration",
]


def _empty_side(status: str, reason: str, flags: list[str] | None = None) -> dict:
    return {
        "status": status,
        "reason": reason,
        "fn_abmd_g_cm2": None,
        "th_abmd_g_cm2": None,
        "fn_t_score": None,
        "th_t_score": None,
        "who_class": None,
        "flags": list(flags or []),
    }


def check_kvp(kvp: float | None, option: str = "--kvp") -> None:
    """Refuse a value that is no CT tube voltage, before anything is computed."""
    if kvp is not None and not 70.0 <= kvp <= 150.0:
        raise InputError(
            f"{option} {kvp:g} is not a CT tube voltage",
            f"give the scan's kVp (70-150, e.g. 120), or leave {option} out",
        )


def set_kvp(ct: sitk.Image, kvp: float) -> None:
    """Record a tube voltage the user gave on the image, where :func:`header_kvp` (and so every
    later density step: grading, the report's pictures) reads it; it replaces the header's."""
    check_kvp(kvp)
    ct.SetMetaData(KVP_TAG, f"{kvp:g}")


def header_kvp(ct: sitk.Image) -> float | None:
    """Tube voltage from the image's DICOM header (tag 0018,0060) when it carries one."""
    if not ct.HasMetaDataKey(KVP_TAG):
        return None
    try:
        kvp = float(ct.GetMetaData(KVP_TAG).strip(" \x00"))
    except ValueError:
        return None
    return kvp if 70.0 <= kvp <= 150.0 else None


def _label_box(lab: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of all labels, so that no full-volume mask or copy is made per side."""
    nz = [np.flatnonzero(lab.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(v.size == 0 for v in nz):
        return None
    return tuple(slice(int(v[0]), int(v[-1]) + 1) for v in nz)


def site_calibration(
    ct: sitk.Image,
    kvp: float | None = None,
    site: SiteCalibration | None = None,
) -> Calibration:
    """The calibration of one CT: with a site calibration (``site``, or the one
    :func:`set_site_calibration` recorded on the image) whose entry fits the scan, the energy
    is the entry's; else the phantomless fit (the block says which, and why)."""
    hu = sitk.GetArrayViewFromImage(ct)
    if kvp is None:
        kvp = header_kvp(ct)
    choice: SiteChoice | None = None
    recorded = site_on(ct) if site is None else site
    if recorded is not None:
        tags = scan_tags(ct)
        tags["kvp"] = kvp
        choice = choose_entry(list(recorded.entries), tags, recorded.file)
    if choice is not None and choice.entry is not None:
        e = choice.entry
        cal = calibrate(
            hu, ct.GetSpacing(), kvp=choice.kvp, fixed_energy=(e.energy_kev, e.energy_sd_kev)
        )
        cal.source = "site"
        cal.method = (
            "site calibration: effective energy from the scanner's K2HPO4 rods phantom "
            f"({e.describe()}, {e.energy_kev:.2f} +- {e.energy_sd_kev:.2f} keV; asynchronous, "
            "Brown 2017), HU scale and offset from this scan's air/fat/muscle, then K2HPO4 in "
            "muscle at that energy, on the 120 kVp scale"
        )
    else:
        cal = calibrate(hu, ct.GetSpacing(), kvp=kvp)
    if choice is not None:
        cal.site = choice.as_dict()
        cal.flags.extend(choice.flags)
    return cal


def measure(
    ct: sitk.Image,
    labels: sitk.Image,
    side_status: dict[str, str] | None = None,
    keep_images: bool = False,
    kvp: float | None = None,
    site: SiteCalibration | None = None,
) -> dict:
    """The ``bmd`` block of one CT. ``side_status`` (e.g. from the segmentation) marks sides
    that must not be graded (anything but "ok"); ``keep_images`` adds the Projection objects
    under ``"_projections"`` for pictures (not JSON); ``kvp`` the tube voltage (default: the
    image's DICOM header's, if any; else the energy is fitted from a 120 kVp prior); ``site``
    site calibration entries (default: those :func:`set_site_calibration` put on the image)."""
    hu = sitk.GetArrayViewFromImage(ct)
    lab = sitk.GetArrayViewFromImage(labels)
    cal = site_calibration(ct, kvp=kvp, site=site)
    out: dict = {
        "version": BMD_VERSION,
        "label": LABEL_SITE if cal.source == "site" else LABEL,
        "reference": REFERENCE_SOURCE,
        "see_g_cm2": SEE_G_CM2,
        "calibration": cal.as_dict(),
    }
    projections = {}
    box = _label_box(lab)
    site_flags = [f for f in cal.flags if f.startswith("site_")]
    for side, value in SIDE_VALUES.items():
        status = (side_status or {}).get(side, Status.OK)
        if status != Status.OK:
            out[side] = _empty_side(status, f"segmentation status {status}: not graded")
            continue
        if box is None or not (mask := lab[box] == value).any():
            out[side] = _empty_side(Status.NOT_FOUND, "no label for this side")
            continue
        values = hu[box][mask]
        if np.mean(values >= METAL_HU) > METAL_FRACTION:
            out[side] = _empty_side(
                Status.IMPLANT, "metal inside the femur: not graded", ["implant"]
            )
            continue
        if not cal.ok:
            out[side] = _empty_side(f"calibration_{cal.status}", cal.reason, list(cal.flags))
            continue
        proj = project_side(ct, hu, mask, cal, offset=tuple(sl.start for sl in box))
        projections[side] = proj
        if proj.status != "ok":
            out[side] = _empty_side(proj.status, proj.reason, proj.flags)
            continue
        graded = grade(proj.fn_abmd_g_cm2, proj.th_abmd_g_cm2, cal.density_sd_percent or 0.0)
        side_out = {
            "status": Status.OK,
            "reason": "",
            "fn_abmd_g_cm2": None if proj.fn_abmd_g_cm2 is None else round(proj.fn_abmd_g_cm2, 4),
            "th_abmd_g_cm2": None if proj.th_abmd_g_cm2 is None else round(proj.th_abmd_g_cm2, 4),
            "fn_t_score": graded["fn_t_score"],
            "th_t_score": graded["th_t_score"],
            "who_class": graded["who_class"],
            "t_score_sd": graded["t_score_sd"],
            # a site file that was not used (or not verified) concerns every number of the side
            "flags": [*proj.flags, *graded["flags"], *site_flags],
            "calibration_source": cal.source,
            "projection": proj.summary(),
        }
        out[side] = side_out
    if keep_images:
        out["_projections"] = projections
    return out
