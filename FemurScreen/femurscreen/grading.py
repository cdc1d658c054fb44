"""The one grading path: a CT and its femur label map -> features, per-side classes, result.

``femurscreen screen`` (:func:`femurscreen.screening.screen`) and the Slicer module (in its own
process and in a background process) all call :func:`grade`, so the CLI and Slicer cannot
drift: the same sides are graded, with the same feature list, the same classifier call and the
same ``result.json`` dictionary.

Which sides are graded: only a side whose segmentation status is in :data:`GRADED_STATUSES`
(see :mod:`femurscreen.screening` for why implant and truncated sides are not).

Run as ``python -m femurscreen.grading REQUEST.json`` it grades in a child process (the Slicer
panel uses this so that its GUI never waits for pyradiomics); see :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import SimpleITK as sitk

from femurscreen import __version__
from femurscreen.errors import FemurScreenError
from femurscreen.labels import CLASSES, SIDES
from femurscreen.output.columns import (  # noqa: F401 (SUMMARY_COLUMNS: batch)
    BMD_COLUMNS,
    QUALITY_COLUMNS,
    SUMMARY_COLUMNS,
)
from femurscreen.status import GRADED_STATUSES, Status
from femurscreen.values import finite_number, json_safe

if TYPE_CHECKING:
    from femurscreen.classifier import LoadedModel

log = logging.getLogger(__name__)

RESULT_FORMAT = "femurscreen-result"
RESULT_FORMAT_VERSION = 1
REQUEST_FORMAT = "femurscreen-grading-request"
RESPONSE_FORMAT = "femurscreen-grading"

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Grading:
    """What :func:`grade` produced."""

    rows: list[dict]  # feature rows, one per side that was extracted
    predictions: dict[str, dict]  # classifier output per side that was classified
    result: dict  # the result.json dictionary
    # the density's projection images per side (bmd.Projection, not JSON), for the report's
    # picture, so that the report does not measure the density a second time
    bmd_projections: dict[str, Any] = field(default_factory=dict)


def sides_to_grade(sides: Mapping[str, Any]) -> tuple[str, ...]:
    """The sides whose segmentation status allows grading, in :data:`SIDES` order."""
    return tuple(
        name
        for name in SIDES
        if sides.get(name) is not None and str(sides[name].status) in GRADED_STATUSES
    )


def grade(
    ct: sitk.Image,
    labels: sitk.Image,
    *,
    sides: Mapping[str, Any],
    model: LoadedModel,
    label: str,
    source: str = "given",
    segmentation: Mapping[str, Any] | None = None,
    engine: str = "default",
    timing: dict[str, float] | None = None,
    progress: Progress | None = None,
    check_anatomy: bool = False,
    bmd: bool = True,
) -> Grading:
    """Features, classification and the result dict of one CT and its label map.

    ``sides`` maps "left"/"right" to what the segmentation said about that side (an object with
    ``status``, ``flags``, ``volume_ml``, e.g. the core's ``SideResult``; None when absent).
    ``segmentation`` describes the engine for ``result["models"]["segmentation"]`` (see
    :func:`segmentation_info`); ``label``/``source`` name the case. ``timing`` (when given)
    receives the seconds spent in "features" and "classify"; ``progress(stage, fraction)`` is
    told when each stage starts.

    ``check_anatomy``: run the wrong-bone guard (``segmentation.guard``) on the label map before
    grading; for masks a person edited after segmentation (the guard already ran on what an
    engine produced), so an edit that leaves no proximal femur is not graded. ``bmd``: add the
    calibrated-density block (``femurscreen.bmd``: aBMD, T-score, WHO class) as ``result["bmd"]``.
    """
    from femurscreen.classifier import classify
    from femurscreen.features import DENSITY_KEYS, extract_case_features

    timing = {} if timing is None else timing
    report = progress or (lambda stage, fraction: None)
    sides = {name: sides.get(name) for name in SIDES}
    if check_anatomy:
        with stage("guard", timing):
            sides = recheck_anatomy(labels, sides)
    to_grade = sides_to_grade(sides)
    report("features", 0.1)
    with stage("features", timing):
        rows: list[dict] = []
        if to_grade:
            rows = extract_case_features(
                ct,
                labels,
                case_id=label,
                only=list(dict.fromkeys([*model.features, *DENSITY_KEYS])),
                sides=to_grade,
            )
    report("classify", 0.9)
    with stage("classify", timing):
        predictions = classify_rows(rows, model, classify)
    add_quality_columns(rows, sides)  # after classifying: the model never sees them
    result = build_result(
        label=label,
        source=source,
        ct=ct,
        segmentation=segmentation if segmentation is not None else {"engine": engine},
        sides=sides,
        rows=rows,
        predictions=predictions,
        model=model,
    )
    projections: dict[str, Any] = {}
    if bmd:
        report("bmd", 0.95)
        with stage("bmd", timing):
            from femurscreen.bmd import measure

            result["bmd"] = measure(
                ct,
                labels,
                side_status={n: str(s.status) for n, s in sides.items() if s is not None},
                keep_images=True,
            )
            projections = result["bmd"].pop("_projections", {})
        add_bmd_columns(rows, result["bmd"])
    report("done", 1.0)
    return Grading(rows=rows, predictions=predictions, result=result, bmd_projections=projections)


def bmd_numbers(block: Mapping[str, Any] | None) -> dict[str, Any]:
    """The :data:`BMD_COLUMNS` of one side's ``bmd`` block (all None when it was not graded)."""
    block = block or {}
    graded = str(block.get("status") or "") == Status.OK
    return {key: block.get(key) if graded else None for key in BMD_COLUMNS}


def quality_numbers(side: Any) -> dict[str, Any]:
    """The :data:`QUALITY_COLUMNS` of one side: its segmentation quality (0..1, None when not
    computed) and how it was obtained (``quality_method``); ``side`` a SideResult-like object
    or a result.json side dict."""
    get = side.get if isinstance(side, Mapping) else (lambda k, d=None: getattr(side, k, d))
    quality = None if side is None else finite_number(get("quality", None))
    method = None if side is None else get("quality_method", None)
    return {
        QUALITY_COLUMNS[0]: None if quality is None else round(quality, 3),
        QUALITY_COLUMNS[1]: None if method is None else str(method),
    }


def add_quality_columns(rows: list[dict], sides: Mapping[str, Any]) -> None:
    """Put each side's segmentation quality into its feature row (features.csv)."""
    for row in rows:
        row.update(quality_numbers(sides.get(str(row.get("side")))))


def quality_words(info: Mapping[str, Any]) -> str | None:
    """A side's segmentation quality in plain words, for the report, the terminal and the
    Slicer panel (one wording everywhere); None when the side has no mask to judge.

    ``info``: a result.json side (``quality``, ``quality_method``, ``status``).
    """
    from femurscreen.segmentation.pipeline import (
        QUALITY_EDITED,
        REVIEW_QUALITY,
        UNAVAILABLE_SUFFIX,
    )

    if str(info.get("status") or "") == Status.NOT_FOUND:
        return None
    quality = finite_number(info.get("quality"))
    method = str(info.get("quality_method") or "")
    other = method.removeprefix("dice_with_").removesuffix(UNAVAILABLE_SUFFIX) or "other"
    if quality is not None:
        if quality < REVIEW_QUALITY:
            return (
                f"check this mask: the two engines agree only {quality:.2f} (Dice with the "
                f"{other} engine; below {REVIEW_QUALITY:.2f} asks for a look)"
            )
        return f"engines agree: Dice {quality:.2f} (with the {other} engine)"
    if method == QUALITY_EDITED:
        return (
            "mask edited by hand: it is yours now, so no engine agreement is computed "
            "(check it yourself)"
        )
    if method.endswith(UNAVAILABLE_SUFFIX):
        return (
            f"segmentation not double-checked: the {other} engine is not available here "
            "(quality unknown, not low)"
        )
    return "segmentation not double-checked (the engine-agreement check was turned off)"


def add_bmd_columns(rows: list[dict], bmd: Mapping[str, Any] | None) -> None:
    """Put each side's calibrated-density numbers into its feature row (features.csv)."""
    for row in rows:
        row.update(bmd_numbers((bmd or {}).get(str(row.get("side")))))


@dataclass
class _Rechecked:
    """A side the guard re-judged on an edited mask (duck-types the core's ``SideResult``)."""

    status: str
    flags: list[str]
    volume_ml: float | None
    reason: str | None = None
    anatomy: dict | None = None
    quality: float | None = None
    quality_method: str | None = None


def recheck_anatomy(labels: sitk.Image, sides: Mapping[str, Any]) -> dict[str, Any]:
    """The sides with the wrong-bone guard's verdict on ``labels`` (as they are now).

    A side the guard rejects gets the guard's status (``not_found`` or ``truncated``), flag and
    reason; the other sides are returned unchanged.
    """
    import numpy as np

    from femurscreen.labels import SIDE_NAMES
    from femurscreen.segmentation.flags import FLAG_STATUS
    from femurscreen.segmentation.guard import check_labels
    from femurscreen.segmentation.postprocess import bounding_box

    array = sitk.GetArrayViewFromImage(labels)
    values = {name: value for value, name in SIDE_NAMES.items()}
    boxes = {}
    for name in sides_to_grade(sides):
        boxes[values[name]] = bounding_box(np.asarray(array) == values[name])
    flags_of = {values[n]: [str(f) for f in sides[n].flags] for n in sides_to_grade(sides)}
    verdicts = check_labels(
        labels,
        boxes,
        {v: "implant" in f for v, f in flags_of.items()},
        {v: "truncated" in f for v, f in flags_of.items()},
    )
    out = dict(sides)
    for value, verdict in verdicts.items():
        if verdict.verdict == Status.OK:
            continue
        name = SIDE_NAMES[value]
        side = sides[name]
        out[name] = _Rechecked(
            status=FLAG_STATUS.get(verdict.verdict, Status.NOT_FOUND),
            flags=[*[str(f) for f in side.flags], verdict.verdict],
            volume_ml=getattr(side, "volume_ml", None),
            reason=f"after editing: {verdict.reason}",
            anatomy=verdict.to_dict(),
            quality=getattr(side, "quality", None),
            quality_method=getattr(side, "quality_method", None),
        )
    return out


# --------------------------------------------------------------------------------------------
# Pieces of the result


def flag_help(flag: str) -> str:
    """A flag's plain words from the one flag table (``segmentation.flags.FLAGS``), the code in
    words for a flag the table does not know (e.g. one from the density estimate)."""
    from femurscreen.segmentation.flags import FLAG_HELP

    return FLAG_HELP.get(str(flag)) or str(flag).replace("_", " ")


def graded_sides(result: dict) -> list[str]:
    """The sides that received probabilities."""
    return [s for s in SIDES if result.get(s, {}).get("graded")]


def classify_rows(rows: list[dict], model, classify) -> dict[str, dict]:
    """Classifier output per side for the rows whose extraction succeeded.

    A side whose extraction failed (e.g. an edited mask with no intertrochanteric region left)
    keeps its error in the result; it must not stop the other side from being graded.
    """
    import pandas as pd

    rows = [r for r in rows if r.get("status", Status.OK) != Status.ERROR]
    if not rows:
        return {}
    table = pd.DataFrame(rows)
    out = classify(table, model)
    return {str(r["side"]): r for r in out.to_dict(orient="records")}


def build_result(
    *, label, ct, segmentation: Mapping[str, Any], sides, rows, predictions, model, source="given"
) -> dict:
    """The result.json dictionary (see :mod:`femurscreen.screening` for its files)."""
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
            name, sides.get(name), features_by_side.get(name), predictions.get(name)
        )
    result["graded_sides"] = graded_sides(result)
    result["models"] = {
        "segmentation": json_safe(dict(segmentation)),
        "classifier": _classifier_info(model),
    }
    result["input"] = image_geometry(ct)
    return result


def segmentation_info(seg: Any, engine: str = "default") -> dict:
    """Engine and model description of a segmentation result (the core's or a dict)."""
    get = seg.get if isinstance(seg, Mapping) else (lambda key, d=None: getattr(seg, key, d))
    info: dict[str, Any] = {"engine": str(get("engine", None) or engine)}
    for key in ("model", "model_info", "models"):
        value = get(key, None)
        if isinstance(value, dict):
            info.update(json_safe(value))
    return info


def _side_result(name: str, side, features: dict | None, prediction: dict | None) -> dict:
    status = Status.NOT_FOUND if side is None else str(side.status)
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
    if status == Status.IMPLANT:
        out["reason"] = "metal implant: texture and density are artefact, side not graded"
    elif status == Status.TRUNCATED:
        out["reason"] = "cut by the edge of the scan: ROI incomplete, side not graded"
    elif status == Status.NOT_FOUND:
        out["reason"] = "no proximal femur found on this side"
    elif status not in GRADED_STATUSES:
        out["reason"] = f"segmentation status '{status}': side not graded"
    from femurscreen.segmentation.flags import GUARD_FLAGS

    guard_reason = getattr(side, "reason", None)
    if guard_reason and status not in GRADED_STATUSES and set(flags) & set(GUARD_FLAGS):
        out["reason"] = f"{guard_reason}: side not graded"  # the guard says which check failed
    quality = finite_number(getattr(side, "quality", None))
    out["quality"] = None if quality is None else round(quality, 3)
    method = getattr(side, "quality_method", None)
    out["quality_method"] = None if method is None else str(method)
    if features is not None:
        out["density"] = {
            key[len("density_") :]: finite_number(value)
            for key, value in features.items()
            if key.startswith("density_")
        }
        if str(features.get("status", Status.OK)) != Status.OK:
            out["status"] = Status.ERROR
            out["reason"] = f"features could not be computed: {features.get('error') or ''}"
            _add_flag(out, "feature_error")
    if prediction is not None and str(prediction.get("status", Status.OK)) == Status.OK:
        probabilities = {c: finite_number(prediction.get(f"p_{c}")) for c in CLASSES}
        if all(v is not None for v in probabilities.values()):
            out["graded"] = True
            out["probabilities"] = probabilities
            out["predicted"] = str(prediction.get("predicted") or "") or max(
                probabilities, key=lambda c: float(probabilities[c] or 0.0)
            )
            out["applicable"] = bool(prediction.get("applicable", True))
            out["reliability"] = str(prediction.get("reliability") or "") or None
            if not out["applicable"]:
                _add_flag(out, "outside_training_distribution")
    elif prediction is not None:
        out["status"] = Status.ERROR
        out["reason"] = f"not classified: {prediction.get('error') or 'unknown reason'}"
        _add_flag(out, "classification_error")
    if status == Status.IMPLANT:
        _add_flag(out, "implant")
    if status == Status.TRUNCATED:
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
    from femurscreen.io.ct_checks import obliqueness_degrees, orientation_code

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


def summary_row(case: str, side: str, info: dict, bmd: Mapping[str, Any] | None = None) -> dict:
    """The batch summary CSV's columns (:data:`SUMMARY_COLUMNS`) for one side of a result dict;
    ``bmd``: that side's calibrated-density block (``result["bmd"][side]``), when there is one."""
    probabilities = info.get("probabilities") or {}
    row: dict[str, Any] = {
        "case_id": case,
        "side": side,
        "status": str(info.get("status") or ""),
        "predicted": info.get("predicted") or "",
    }
    for cls in CLASSES:
        row[f"p_{cls}"] = probabilities.get(cls)
    row.update(
        volume_ml=info.get("volume_ml"),
        flags=";".join(info.get("flags") or []),
        error=(info.get("reason") or "") if info.get("status") == Status.ERROR else "",
        applicable=info.get("applicable"),
        graded=bool(info.get("graded")),
    )
    row.update(bmd_numbers(bmd))
    row.update(quality_numbers(info))
    return row


def summary_rows(case: str, result: Mapping[str, Any]) -> list[dict]:
    """:func:`summary_row` of each side of a whole result dict (its ``bmd`` block included)."""
    bmd = result.get("bmd") or {}
    return [summary_row(case, side, result.get(side) or {}, bmd.get(side)) for side in SIDES]


@contextlib.contextmanager
def stage(name: str, timing: dict[str, float]) -> Iterator[None]:
    """Time a stage into ``timing[name]`` (seconds, 3 decimals)."""
    log.debug("grading: %s", name)
    started = time.perf_counter()
    try:
        yield
    finally:
        timing[name] = round(time.perf_counter() - started, 3)


# --------------------------------------------------------------------------------------------
# Grading in a child process


@dataclass(frozen=True)
class SideStatus:
    """A side's segmentation status as a request carries it (duck-types ``SideResult``)."""

    status: str
    flags: tuple[str, ...] = ()
    volume_ml: float | None = None
    quality: float | None = None
    quality_method: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SideStatus | None:
        if data is None:
            return None
        method = data.get("quality_method")
        return cls(
            status=str(data.get("status", Status.OK)),
            flags=tuple(str(f) for f in data.get("flags") or ()),
            volume_ml=finite_number(data.get("volume_ml")),
            quality=finite_number(data.get("quality")),
            quality_method=None if method is None else str(method),
        )


def write_request(
    path: str | Path,
    *,
    ct_path: str | Path,
    labels_path: str | Path,
    out_path: str | Path,
    sides: Mapping[str, Mapping[str, Any] | None],
    model_dir: str | Path,
    label: str,
    source: str = "given",
    segmentation: Mapping[str, Any] | None = None,
    check_anatomy: bool = False,
) -> Path:
    """Describe a grading job for :func:`main` (JSON; files by absolute path)."""
    request = {
        "format": REQUEST_FORMAT,
        "ct": str(Path(ct_path).resolve()),
        "labels": str(Path(labels_path).resolve()),
        "out": str(Path(out_path).resolve()),
        "sides": {name: _plain(sides.get(name)) for name in SIDES},
        "model_dir": str(Path(model_dir).resolve()),
        "label": label,
        "source": source,
        "segmentation": dict(segmentation or {"engine": "manual"}),
        "check_anatomy": bool(check_anatomy),
    }
    path = Path(path)
    path.write_text(json.dumps(json_safe(request), indent=2), encoding="utf-8")
    return path


def _plain(side: Mapping[str, Any] | None) -> dict | None:
    return None if side is None else dict(side)


def run_request(request_path: str | Path, progress: Progress | None = None) -> Path:
    """Grade what a request file describes and write the response JSON (rows, predictions,
    result) atomically to its ``out``; returns that path."""
    from femurscreen.atomic import write_text
    from femurscreen.classifier import load_model
    from femurscreen.errors import InputError

    request = _read_json(request_path, REQUEST_FORMAT, "grading request", InputError)
    report = progress or (lambda stage, fraction: None)
    report("reading", 0.0)
    ct = sitk.ReadImage(request["ct"])
    labels = sitk.ReadImage(request["labels"])
    report("model", 0.05)
    model = load_model(request["model_dir"])
    timing: dict[str, float] = {}
    grading = grade(
        ct,
        labels,
        sides={n: SideStatus.from_dict((request.get("sides") or {}).get(n)) for n in SIDES},
        model=model,
        label=str(request["label"]),
        source=str(request.get("source") or "given"),
        segmentation=request.get("segmentation") or {"engine": "manual"},
        timing=timing,
        progress=progress,
        check_anatomy=bool(request.get("check_anatomy", False)),
    )
    response = {
        "format": RESPONSE_FORMAT,
        "rows": grading.rows,
        "predictions": grading.predictions,
        "result": grading.result,
        "timing_s": timing,
    }
    text = json.dumps(json_safe(response), ensure_ascii=False) + "\n"
    return write_text(request["out"], text)


def read_response(path: str | Path) -> Grading:
    """The :class:`Grading` a child wrote with :func:`run_request`."""
    data = _read_json(path, RESPONSE_FORMAT, "grading result", FemurScreenError)
    return Grading(rows=data["rows"], predictions=data["predictions"], result=data["result"])


def _read_json(path: str | Path, fmt: str, what: str, error: type[FemurScreenError]) -> dict:
    """A JSON object of format ``fmt``, or ``error`` saying what is wrong with the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"the {what} cannot be read ({exc})", path=path) from exc
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise error(f"not a FemurScreen {what}", path=path)
    return data


def main(argv: list[str] | None = None) -> int:
    """``python -m femurscreen.grading REQUEST.json``: progress as "grading: STAGE N%" lines on
    stderr, errors as "femurscreen grade: error: ..." and exit code 1."""

    parser = argparse.ArgumentParser(prog="python -m femurscreen.grading")
    parser.add_argument("request", help="grading request JSON (see write_request)")
    args = parser.parse_args(argv)

    def progress(name: str, fraction: float) -> None:
        print(f"grading: {name} {100 * fraction:.0f}%", file=sys.stderr, flush=True)

    try:
        out = run_request(args.request, progress)
    except FemurScreenError as exc:
        print(f"femurscreen grade: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps({"out": str(out)}), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through a child process in tests
    sys.exit(main())
