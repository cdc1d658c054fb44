"""Screen one CT end to end: read, segment both proximal femurs, features, classify, report.

Output folder (all or nothing, see :func:`screen`)::

    femur.nii.gz      label map on the CT's grid: 1 = patient's left femur, 2 = right
    femur.seg.nrrd    the same as a Slicer segmentation (named, coloured, SNOMED-coded)
    features.csv      one row per extracted side (the model's features + density readouts)
    result.json       per-side status, probabilities, prediction, density, flags; models, timing
    report.html       self-contained report (images embedded) for a radiologist

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

import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from femurscreen import __version__
from femurscreen.atomic import atomic_dir
from femurscreen.errors import InputError, NoFemurError
from femurscreen.labels import CLASSES, SIDES
from femurscreen.values import finite_number, json_safe

if TYPE_CHECKING:
    from femurscreen.classifier import LoadedModel

log = logging.getLogger(__name__)

RESULT_FORMAT = "femurscreen-result"
RESULT_FORMAT_VERSION = 1
FILES = ("femur.nii.gz", "femur.seg.nrrd", "features.csv", "result.json", "report.html")
GRADED_STATUSES = frozenset({"ok"})  # see the module docstring for why only these

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


def graded_sides(result: dict) -> list[str]:
    """The sides that received probabilities."""
    return [s for s in SIDES if result.get(s, {}).get("graded")]


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
) -> dict:
    """Screen one CT and write the result folder ``out_dir``; return the result dict.

    Atomic: everything is built in a hidden folder beside ``out_dir`` and renamed into place
    only when complete, so a crash or an error never leaves a result that looks finished and an
    earlier result in ``out_dir`` stays untouched until the new one replaces it. When no
    proximal femur is in view, :class:`NoFemurError` is raised and nothing is written.
    ``case_id`` names the case in the files (default: an image fingerprint, see module doc).
    """
    ct_path = Path(ct_path)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    timing: dict[str, float] = {}
    started = time.perf_counter()
    with _stage("imports", timing):  # heavy libraries load on first use (once per process)
        from femurscreen.classifier import LoadedModel, classify, default_model_dir, load_model
        from femurscreen.ctio import read_ct
        from femurscreen.features import DENSITY_KEYS, extract_case_features, write_features_csv
        from femurscreen.labelio import write_labels
        from femurscreen.segfile import write_seg_nrrd
        from femurscreen.segmentation import segment

    with _stage("read", timing):
        ct = read_ct(ct_path, series_uid=series_uid)
        label = case_id or fingerprint(ct)
    with _stage("load_model", timing):
        if isinstance(model_dir, LoadedModel):
            model = model_dir  # already loaded and verified (batch workers keep one)
        else:
            model = load_model(default_model_dir() if model_dir is None else model_dir)
    with _stage("segment", timing):
        try:
            seg = segment(ct, engine=engine)
        except NoFemurError as exc:
            if exc.path is not None:
                raise
            raise NoFemurError(exc.what, exc.fix, ct_path) from None  # name the input
    sides = {name: seg.sides.get(name) for name in SIDES}
    if all(s is None or s.status == "not_found" for s in sides.values()):
        raise NoFemurError(
            "no proximal femur in view: neither hip is inside the scanned field of view",
            "screen a CT that covers the hips (abdomen-pelvis or pelvis CT)",
            ct_path,
        )
    to_grade = [n for n, s in sides.items() if s is not None and s.status in GRADED_STATUSES]

    with _stage("features", timing):
        rows = []
        if to_grade:
            rows = extract_case_features(
                ct,
                seg.labels,
                case_id=label,
                only=list(dict.fromkeys([*model.features, *DENSITY_KEYS])),
                sides=tuple(to_grade),
            )
    with _stage("classify", timing):
        predictions = classify_rows(rows, model, classify)

    result = build_result(
        label=label,
        source="given" if case_id else "fingerprint",
        ct=ct,
        seg=seg,
        sides=sides,
        rows=rows,
        predictions=predictions,
        model=model,
        engine=engine,
    )
    if include_identifiers:
        result["identifiers"] = read_identifiers(ct_path, series_uid)

    with atomic_dir(out_dir) as tmp:
        with _stage("write", timing):
            write_labels(seg.labels, tmp / "femur.nii.gz")
            write_seg_nrrd(seg.labels, tmp / "femur.seg.nrrd")
            write_features_csv(rows, tmp / "features.csv")
        if report:
            from femurscreen.report import write_report

            with _stage("report", timing):
                result["timing_s"] = dict(timing)
                write_report(result, ct, seg.labels, tmp / "report.html")
        timing["total"] = round(time.perf_counter() - started, 3)
        result["timing_s"] = dict(timing)
        # result.json last: only a folder that holds it is a finished result.
        (tmp / "result.json").write_text(_to_json(result), encoding="utf-8")
    return result


# --------------------------------------------------------------------------------------------
# Pieces of the result


def classify_rows(rows: list[dict], model, classify) -> dict[str, dict]:
    """Classifier output per side for the rows whose extraction succeeded.

    A side whose extraction failed (e.g. an edited mask with no intertrochanteric region left)
    keeps its error in the result; it must not stop the other side from being graded.
    """
    import pandas as pd

    rows = [r for r in rows if r.get("status", "ok") != "error"]
    if not rows:
        return {}
    table = pd.DataFrame(rows)
    out = classify(table, model)
    return {str(r["side"]): r for r in out.to_dict(orient="records")}


def build_result(
    *, label, ct, seg, sides, rows, predictions, model, engine, source="given"
) -> dict:
    """The result.json dictionary; public so that the Slicer logic writes the same format."""
    features_by_side = {str(r.get("side")): r for r in rows}
    result: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "format_version": RESULT_FORMAT_VERSION,
        "case": label,
        "case_source": source,
        "version": __version__,
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "demo": bool(model.demo),
        "demo_notice": model.manifest.get("demo_notice") if model.demo else None,
    }
    for name in SIDES:
        result[name] = _side_result(
            name, sides[name], features_by_side.get(name), predictions.get(name)
        )
    result["graded_sides"] = graded_sides(result)
    result["models"] = {
        "segmentation": _segmentation_info(seg, engine),
        "classifier": _classifier_info(model),
    }
    result["input"] = image_geometry(ct)
    return result


def _side_result(name: str, side, features: dict | None, prediction: dict | None) -> dict:
    status = "not_found" if side is None else str(side.status)
    flags = [] if side is None else [str(f) for f in side.flags]
    volume = None if side is None else finite_number(side.volume_ml)
    out: dict[str, Any] = {
        "status": status,
        "graded": False,
        "probabilities": None,
        "predicted": None,
        "applicable": None,
        "reliability": None,
        "volume_ml": volume,
        "density": {},
        "flags": flags,
        "reason": None,
        "landmarks_z_mm": _landmarks(side),
    }
    if status == "implant":
        out["reason"] = "metal implant: texture and density are artefact, side not graded"
    elif status == "truncated":
        out["reason"] = "cut by the edge of the scan: ROI incomplete, side not graded"
    elif status == "not_found":
        out["reason"] = "no proximal femur found on this side"
    elif status not in GRADED_STATUSES:
        out["reason"] = f"segmentation status '{status}': side not graded"
    if features is not None:
        out["density"] = {
            key[len("density_") :]: finite_number(value)
            for key, value in features.items()
            if key.startswith("density_")
        }
        if str(features.get("status", "ok")) != "ok":
            out["status"] = "error"
            out["reason"] = f"features could not be computed: {features.get('error') or ''}"
            _add_flag(out, "feature_error")
    if prediction is not None and str(prediction.get("status", "ok")) == "ok":
        probabilities = {c: finite_number(prediction.get(f"p_{c}")) for c in CLASSES}
        if all(v is not None for v in probabilities.values()):
            out["graded"] = True
            out["probabilities"] = probabilities
            out["predicted"] = str(prediction.get("predicted") or "") or max(
                probabilities, key=probabilities.get
            )
            out["applicable"] = bool(prediction.get("applicable", True))
            out["reliability"] = str(prediction.get("reliability") or "") or None
            if not out["applicable"]:
                _add_flag(out, "outside_training_distribution")
    elif prediction is not None:
        out["status"] = "error"
        out["reason"] = f"not classified: {prediction.get('error') or 'unknown reason'}"
        _add_flag(out, "classification_error")
    if status == "implant":
        _add_flag(out, "implant")
    if status == "truncated":
        _add_flag(out, "truncated")
    return out


def _landmarks(side) -> dict:
    """World z (LPS, mm) of the head top, lesser trochanter and anatomical cut, when known."""
    out = {}
    for key in ("head_top_z", "lesser_trochanter_z", "cut_z"):
        value = finite_number(getattr(side, key, None))
        if value is not None:
            out[key.removesuffix("_z")] = round(value, 1)
    return out


def _add_flag(side: dict, flag: str) -> None:
    if flag not in side["flags"]:
        side["flags"].append(flag)


def _segmentation_info(seg, engine: str) -> dict:
    info: dict[str, Any] = {"engine": str(getattr(seg, "engine", engine))}
    for key in ("model", "model_info", "models"):
        value = getattr(seg, key, None)
        if isinstance(value, dict):
            info.update(json_safe(value))
    return info


_MANIFEST_KEYS = (
    "name",
    "version",
    "model_version",
    "created",
    "created_utc",
    "femurscreen_version",
    "sklearn_version",
    "radiomics_params_sha256",
    "training_data",
    "classes",
)


def _classifier_info(model) -> dict:
    manifest = model.manifest
    info: dict[str, Any] = {
        "path_name": Path(model.path).name,
        "demo": bool(model.demo),
        "demo_notice": manifest.get("demo_notice"),
        "sha256": manifest.get("sha256"),
        "n_features": len(model.features),
    }
    for key in _MANIFEST_KEYS:
        if key in manifest and isinstance(manifest[key], str | int | float | bool | list):
            info[key] = json_safe(manifest[key])
    return info


def image_geometry(ct: sitk.Image) -> dict:
    """Geometry of the input (no identifiers, no file name)."""
    from femurscreen.ct_checks import obliqueness_degrees, orientation_code

    size = [int(v) for v in ct.GetSize()]
    spacing = [round(float(v), 6) for v in ct.GetSpacing()]
    return {
        "size": size,
        "spacing_mm": spacing,
        "extent_mm": [round(n * s, 2) for n, s in zip(size, spacing, strict=True)],
        "orientation": orientation_code(ct.GetDirection()),
        "oblique_degrees": round(float(obliqueness_degrees(ct.GetDirection())), 3),
        "pixel_type": ct.GetPixelIDTypeAsString(),
    }


def fingerprint(ct: sitk.Image) -> str:
    """A stable, non-identifying case label from the voxels and geometry of the image."""
    digest = hashlib.blake2b(digest_size=16)
    geometry = (ct.GetSize(), ct.GetSpacing(), ct.GetOrigin(), ct.GetDirection())
    digest.update(repr(tuple(tuple(round(v, 4) for v in g) for g in geometry)).encode())
    digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(ct)).data)
    return "CT-" + digest.hexdigest()[:10]


def read_identifiers(ct_path: str | Path, series_uid: str | None = None) -> dict:
    """Patient and study identifiers from the DICOM header, plus the input file name."""
    from femurscreen.ctio import dicom_series

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


@contextlib.contextmanager
def _stage(name: str, timing: dict[str, float]) -> Iterator[None]:
    log.debug("screen: %s", name)
    started = time.perf_counter()
    try:
        yield
    finally:
        timing[name] = round(time.perf_counter() - started, 3)


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(
            "the output path exists and is not a folder", "choose another --out", out_dir
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "result.json").exists():
        names = {p.name for p in out_dir.iterdir()}
        if not names <= set(FILES):
            raise InputError(
                "the output folder is not empty and holds no FemurScreen result",
                "choose a new or empty folder for --out (an earlier result folder is replaced)",
                out_dir,
            )


def _to_json(result: dict) -> str:
    return json.dumps(json_safe(result), indent=2, ensure_ascii=False) + "\n"


__all__ = [
    "FILES",
    "GRADED_STATUSES",
    "fingerprint",
    "graded_sides",
    "image_geometry",
    "is_complete",
    "read_identifiers",
    "screen",
]
