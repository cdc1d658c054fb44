"""Screen one CT end to end: read, segment both proximal femurs, features, classify, report.

Output folder (all or nothing, see :func:`screen`)::

    femur.nii.gz      label map on the CT's grid: 1 = patient's left femur, 2 = right
    femur.seg.nrrd    the same as a Slicer segmentation (named, coloured, SNOMED-coded)
    features.csv      one row per extracted side (the model's features + density readouts)
    result.json       per-side status, probabilities, prediction, density, flags; models, timing
    report.html       self-contained report (images embedded) for a radiologist
    dicom/            only with ``dicom=True`` (a DICOM input): seg.dcm (DICOM SEG of both
                      femurs), sr.dcm (TID 1500 measurement report), report.dcm (the report
                      as a Secondary Capture), all in the source CT's study

Which sides are graded: only a side whose segmentation status is "ok". A side with a metal
implant is *not* graded: metal and its streak artefacts replace bone texture and density with
artefact, so any probability would describe the artefact, not the bone. A side cut by the edge
of the scan ("truncated") is not graded either: its ROI does not cover the same anatomy as the
training ROIs, so shape and texture features are not comparable. Such sides keep their label,
volume and a plain-words reason in the report.

Identifiers: by default nothing that names the patient or the input file is written. The case
label is a fingerprint of the image content (``CT-`` + 10 hex digits of a BLAKE2 hash of the
voxels and their geometry): stable for the same scan, meaningless without it. With
``include_identifiers=True`` the DICOM patient name, ID, birth date, study date, accession
number and the input file name are added to ``result.json`` and the report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from femurscreen.atomic import atomic_dir
from femurscreen.errors import InputError, NoFemurError
from femurscreen.grading import (
    GRADED_STATUSES,
    RESULT_FORMAT,
    RESULT_FORMAT_VERSION,
    build_result,
    classify_rows,
    grade,
    graded_sides,
    image_geometry,
    segmentation_info,
)
from femurscreen.grading import stage as _stage
from femurscreen.labels import SIDES
from femurscreen.status import Status
from femurscreen.values import json_safe

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydicom.dataset import Dataset

    from femurscreen.classifier import LoadedModel

log = logging.getLogger(__name__)

FILES = ("femur.nii.gz", "femur.seg.nrrd", "features.csv", "result.json", "report.html")
DICOM_DIR = "dicom"  # written only with dicom=True; owned, so a rerun without it removes it

# DICOM tags shown only with include_identifiers=True.
IDENTIFIER_TAGS: dict[str, str] = {
    "patient_name": "0010|0010",
    "patient_id": "0010|0020",
    "birth_date": "0010|0030",
    "sex": "0010|0040",
    "study_date": "0008|0020",
    "accession_number": "0008|0050",
    "study_description": "0008|1030",
}


def is_complete(out_dir: str | Path) -> bool:
    """True when ``out_dir`` holds a finished result (result.json readable and of our format)."""
    path = Path(out_dir) / "result.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == RESULT_FORMAT


def screen(
    ct_path: str | Path,
    out_dir: str | Path,
    *,
    engine: str = "default",
    model_dir: str | Path | LoadedModel | None = None,
    include_identifiers: bool = False,
    case_id: str | None = None,
    series_uid: str | None = None,
    report: bool = True,
    dicom: bool = False,
    kvp: float | None = None,
    quality: bool = True,
    scanner_calibration: str | Path | None = None,
) -> dict:
    """Screen one CT and write the result folder ``out_dir``; return the result dict.

    Atomic: everything is built in a hidden folder beside ``out_dir`` and renamed into place
    only when complete, so a crash or an error never leaves a result that looks finished and an
    earlier result in ``out_dir`` stays untouched until the new one replaces it. When no
    proximal femur is in view, :class:`NoFemurError` is raised and nothing is written.
    ``case_id`` names the case in the files (default: an image fingerprint, see module doc).
    ``dicom=True`` (DICOM input only) adds SEG, SR and report capture in ``dicom/``; the
    result's ``dicom`` block names them (and the Study Instance UID with identifiers).
    ``kvp``: the scan's tube voltage for the calibrated density, where the file cannot tell
    (NIfTI); it replaces a DICOM header's. ``quality``: the per-side segmentation quality
    signal (agreement with the other engine, ``segmentation.pipeline``; one more segmentation,
    see README for its cost): ``quality``/``quality_method`` in each side, ``review_segmentation``
    when low. ``scanner_calibration``: a site's scanner calibration file for the calibrated
    density (``femurscreen.bmd.set_site_calibration``), checked before any work.
    """
    ct_path = Path(ct_path)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    if dicom:
        check_dicom_input(ct_path)
    if kvp is not None:
        from femurscreen.bmd import check_kvp

        check_kvp(kvp)
    site = None
    if scanner_calibration is not None:  # a bad file fails now, before any work or output
        from femurscreen.bmd import check_site_calibration

        site = check_site_calibration(scanner_calibration)
    timing: dict[str, float] = {}
    started = time.perf_counter()
    with _stage("imports", timing):  # heavy libraries load on first use (once per process)
        from femurscreen.classifier import LoadedModel, default_model_dir, load_model
        from femurscreen.features import write_features_csv
        from femurscreen.io.ctio import read_ct
        from femurscreen.io.labelio import write_labels
        from femurscreen.io.segfile import write_seg_nrrd
        from femurscreen.segmentation import segment

    with _stage("read", timing):
        ct = read_ct(ct_path, series_uid=series_uid)
        label = case_id or fingerprint(ct)
        if kvp is not None:
            from femurscreen.bmd import set_kvp

            set_kvp(ct, kvp)
        if site is not None:  # the file read and checked above, recorded on the image
            from femurscreen.bmd import set_site_calibration

            set_site_calibration(ct, site)
        if dicom:  # a series that cannot carry a SEG/SR is refused now, not after grading
            from femurscreen.dicom.seg import check_series
            from femurscreen.dicom.series import read_series_headers

            headers = read_series_headers(ct_path, series_uid)  # read once: checked, then cited
            check_series(headers)
    with _stage("load_model", timing):
        if isinstance(model_dir, LoadedModel):
            model = model_dir  # already loaded and verified (batch workers keep one)
        else:
            model = load_model(default_model_dir() if model_dir is None else model_dir)
    with _stage("segment", timing):
        try:
            seg = segment(ct, engine=engine, quality=quality)
        except NoFemurError as exc:
            if exc.path is not None:
                raise
            raise NoFemurError(exc.what, exc.fix, ct_path) from None  # name the input
    sides = {name: seg.sides.get(name) for name in SIDES}
    if all(s is None or s.status == Status.NOT_FOUND for s in sides.values()):
        raise NoFemurError(
            "no proximal femur in view: neither hip is inside the scanned field of view",
            "screen a CT that covers the hips (abdomen-pelvis or pelvis CT)",
            ct_path,
        )
    # The one grading path (femurscreen.grading), shared with the Slicer module.
    grading = grade(
        ct,
        seg.labels,
        sides=sides,
        model=model,
        label=label,
        source="given" if case_id else "fingerprint",
        segmentation=segmentation_info(seg, engine),
        timing=timing,
    )
    rows, result = grading.rows, grading.result
    if "quality" in seg.timing_s:  # what the second opinion cost (inside "segment")
        result["models"]["segmentation"]["quality_seconds"] = round(seg.timing_s["quality"], 3)
    if include_identifiers:
        result["identifiers"] = read_identifiers(ct_path, series_uid)

    with atomic_dir(out_dir, owned=(*FILES, DICOM_DIR)) as tmp:  # no old file outlives a rerun
        if dicom:  # first: a series that cannot carry a SEG is refused before anything is kept
            with _stage("dicom", timing):
                result["dicom"] = write_dicom(result, ct, seg.labels, headers, tmp)
                if not include_identifiers:
                    result["dicom"].pop("study_instance_uid", None)
        with _stage("write", timing):
            write_labels(seg.labels, tmp / "femur.nii.gz")
            write_seg_nrrd(seg.labels, tmp / "femur.seg.nrrd")
            write_features_csv(rows, tmp / "features.csv")
        if report:
            from femurscreen.output.report import write_report

            with _stage("report", timing):
                result["timing_s"] = dict(timing)
                write_report(
                    result,
                    ct,
                    seg.labels,
                    tmp / "report.html",
                    bmd_projections=grading.bmd_projections,
                )
        timing["total"] = round(time.perf_counter() - started, 3)
        result["timing_s"] = dict(timing)
        # result.json last: only a folder that holds it is a finished result.
        (tmp / "result.json").write_text(_to_json(result), encoding="utf-8")
    return result


# --------------------------------------------------------------------------------------------
# Pieces of the result (building the result dict is femurscreen.grading's job)


def fingerprint(ct: sitk.Image) -> str:
    """A stable, non-identifying case label from the voxels and geometry of the image."""
    digest = hashlib.blake2b(digest_size=16)
    geometry = (ct.GetSize(), ct.GetSpacing(), ct.GetOrigin(), ct.GetDirection())
    digest.update(repr(tuple(tuple(round(v, 4) for v in g) for g in geometry)).encode())
    digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(ct)).data)
    return "CT-" + digest.hexdigest()[:10]


def check_dicom_input(ct_path: Path) -> None:
    """Refuse ``dicom=True`` for an input that is not a DICOM series (before any work)."""
    from femurscreen.io.ctio import looks_like_dicom

    is_dicom = ct_path.is_file() and looks_like_dicom(ct_path)
    if ct_path.is_dir():
        is_dicom = any(p.is_file() and looks_like_dicom(p) for p in ct_path.iterdir())
    if not is_dicom:
        raise InputError(
            "is not a DICOM series, so no DICOM SEG or SR can reference it (--dicom needs the "
            "source images' UIDs)",
            "screen the CT's DICOM folder, or leave out --dicom",
            ct_path,
        )


def write_dicom(
    result: dict,
    ct: sitk.Image,
    labels: sitk.Image,
    headers: Sequence[Dataset],
    folder: Path,
) -> dict:
    """SEG, SR and report capture into ``folder/dicom`` from the source series' ``headers``
    (read once, when the series was checked); the result's ``dicom`` block."""
    from femurscreen.dicom.export import dicom_block, write_dicom_outputs

    write_dicom_outputs(result, labels, headers, folder / DICOM_DIR, ct=ct)
    return dicom_block(DICOM_DIR, str(headers[0].StudyInstanceUID))


def read_identifiers(ct_path: str | Path, series_uid: str | None = None) -> dict:
    """Patient and study identifiers from the DICOM header, plus the input file name."""
    from femurscreen.io.ctio import dicom_series

    path = Path(ct_path)
    ids: dict[str, str] = {"input_name": path.name}
    first: str | None = None
    if path.is_dir():
        series = dicom_series(path)
        chosen = [s for s in series if series_uid is None or s.uid == series_uid]
        if chosen and chosen[0].files:
            first = chosen[0].files[0]
    elif path.is_file():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        if reader.GetImageIOFromFileName(str(path)) == "GDCMImageIO":
            first = str(path)
    if first is None:
        return ids
    reader = sitk.ImageFileReader()
    reader.SetFileName(first)
    reader.SetImageIO("GDCMImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ids
    for name, tag in IDENTIFIER_TAGS.items():
        if reader.HasMetaDataKey(tag):
            value = reader.GetMetaData(tag).strip(" \x00")
            if value:
                ids[name] = value
    return ids


# --------------------------------------------------------------------------------------------
# Plumbing


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(
            "the output path exists and is not a folder", "choose another --out", out_dir
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "result.json").exists():
        names = {p.name for p in out_dir.iterdir()}
        if not names <= {*FILES, DICOM_DIR}:
            raise InputError(
                "the output folder is not empty and holds no FemurScreen result",
                "choose a new or empty folder for --out (an earlier result folder is replaced)",
                out_dir,
            )


def _to_json(result: dict) -> str:
    return json.dumps(json_safe(result), indent=2, ensure_ascii=False) + "\n"


__all__ = [
    "DICOM_DIR",
    "FILES",
    "GRADED_STATUSES",
    "RESULT_FORMAT",
    "RESULT_FORMAT_VERSION",
    "build_result",
    "classify_rows",
    "fingerprint",
    "graded_sides",
    "image_geometry",
    "is_complete",
    "read_identifiers",
    "screen",
]
