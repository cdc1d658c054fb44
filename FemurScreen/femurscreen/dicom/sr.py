"""result.json as a DICOM Structured Report (TID 1500 Measurement Report), with highdicom.

One measurement group (TID 1411, volumetric ROI) per femur side that has a segment, each
referencing its segment of our SEG (:mod:`femurscreen.dicom.seg`) and the source series:

- measurements: volume (ml), mean and SD attenuation per density ROI (Hounsfield units, UCUM
  ``[hnsf'U]``), the calibrated CT-derived aBMD (g/cm2) and T-scores of result.json's ``bmd``
  block where present, and the classifier's three probabilities (%);
- coded evaluations: segmentation status, predicted class (SNOMED CT disorder codes) and the
  CT-derived WHO class;
- text: the reason a side was not graded, each flag in plain words, the reliability note.

The root's "Qualitative Evaluations" container carries document-wide text: the demo-model
notice (whenever the classifier is a demo), the label of the density estimate, the case label.

Concepts without a standard code (our statuses, the probabilities, CT-derived aBMD and
T-scores, which are not DXA measurements) use the private coding scheme ``99FEMSCR``, declared
in the Coding Scheme Identification Sequence as DICOM asks.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from femurscreen import __version__
from femurscreen.dicom.seg import ANATOMICAL_STRUCTURE, FEMUR, LATERALITY, SEGMENT_BY_SIDE
from femurscreen.labels import CLASSES

SCHEME = "99FEMSCR"
SERIES_NUMBER = 9702
SIDE_ORDER = ("right", "left")
DEMO_TEXT = "DEMO MODEL - trained on synthetic data - not for clinical use"


def _private(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value, SCHEME, meaning)


CT_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")
VOLUME = hd.sr.CodedConcept("118565006", "SCT", "Volume")
ATTENUATION = hd.sr.CodedConcept("112031", "DCM", "Attenuation Coefficient")
MEAN = hd.sr.CodedConcept("373098007", "SCT", "Mean")
SD = hd.sr.CodedConcept("386136009", "SCT", "Standard Deviation")
ML = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
HU = hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")
G_CM2 = hd.sr.CodedConcept("g/cm2", "UCUM", "gram per square centimeter")
T_UNIT = hd.sr.CodedConcept("{T-score}", "UCUM", "T-score")
PERCENT = hd.sr.CodedConcept("%", "UCUM", "percent")
ROI_SITES = {
    "head": hd.sr.CodedConcept("68367000", "SCT", "Head of femur"),
    "neck": hd.sr.CodedConcept("29627003", "SCT", "Neck of femur"),
    "intertroch": hd.sr.CodedConcept("4786005", "SCT", "Intertrochanteric region of femur"),
    "whole": FEMUR,
}
STATUS_NAME = _private("status", "Segmentation status")
STATUS_WORDS = {
    "ok": "Segmented and graded",
    "implant": "Metal implant, not graded",
    "truncated": "Cut by the scan edge, not graded",
    "not_found": "No proximal femur found",
    "error": "Grading failed",
}
PREDICTED = _private("predicted", "Predicted bone status (demo classifier)")
WHO_CT = _private("who-ct", "CT-derived WHO class (not DXA)")
CLASS_CODES = {
    "normal": hd.sr.CodedConcept("17621005", "SCT", "Normal"),
    "osteopenia": hd.sr.CodedConcept("312894000", "SCT", "Osteopenia"),
    "osteoporosis": hd.sr.CodedConcept("64859006", "SCT", "Osteoporosis"),
}
PROBABILITY = {c: _private(f"p-{c}", f"Probability of {c} (demo classifier)") for c in CLASSES}
BMD_MEASURES = {
    "fn_abmd_g_cm2": (_private("fn-abmd", "CT-derived femoral neck aBMD"), G_CM2),
    "th_abmd_g_cm2": (_private("th-abmd", "CT-derived total hip aBMD"), G_CM2),
    "fn_t_score": (_private("fn-t", "CT-derived femoral neck T-score"), T_UNIT),
    "th_t_score": (_private("th-t", "CT-derived total hip T-score"), T_UNIT),
}
REASON = _private("reason", "Reason not graded")
FLAG = _private("flag", "Flag")
RELIABILITY = _private("reliability", "Classifier reliability")
NOTICE = _private("demo", "Demo model notice")
DENSITY_LABEL = _private("bmd-label", "Density estimate")
CASE = _private("case", "Case label")
QUALITATIVE = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _text(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=name, value=str(value)[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _flag_words(flag: str) -> str:
    """A flag's code and its plain words from the one flag table (code only if unknown)."""
    try:
        from femurscreen.segmentation.flags import FLAG_HELP

        words = FLAG_HELP.get(flag)
    except ImportError:  # pragma: no cover - the table moved
        words = None
    if isinstance(words, str) and words:
        return f"{flag}: {words}"
    return flag


def _side_group(
    side: str, info: dict, bmd_side: dict, seg: Dataset, source_series_uid: str
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    segment = SEGMENT_BY_SIDE[side]
    site = [hd.sr.FindingSite(FEMUR, laterality=LATERALITY[side])]
    measurements: list[hd.sr.Measurement] = []
    volume = _number(info.get("volume_ml"))
    if volume is not None:
        measurements.append(hd.sr.Measurement(name=VOLUME, value=volume, unit=ML))
    density = info.get("density") or {}
    for roi, location in ROI_SITES.items():
        roi_site = [hd.sr.FindingSite(location, laterality=LATERALITY[side])]
        for key, derivation in ((f"{roi}_mean_hu", MEAN), (f"{roi}_sd_hu", SD)):
            value = _number(density.get(key))
            if value is not None:
                measurements.append(
                    hd.sr.Measurement(
                        name=ATTENUATION,
                        value=round(value, 3),
                        unit=HU,
                        derivation=derivation,
                        finding_sites=roi_site,
                    )
                )
    for key, (name, unit) in BMD_MEASURES.items():
        value = _number(bmd_side.get(key))
        if value is not None:
            measurements.append(hd.sr.Measurement(name=name, value=value, unit=unit))
    for cls, p in (info.get("probabilities") or {}).items():
        value = _number(p)
        if value is not None and cls in PROBABILITY:
            measurements.append(
                hd.sr.Measurement(name=PROBABILITY[cls], value=round(100 * value, 3), unit=PERCENT)
            )
    status = str(info.get("status") or "error")
    evaluations = [
        hd.sr.QualitativeEvaluation(
            STATUS_NAME, _private(status, STATUS_WORDS.get(status, status.replace("_", " ")))
        )
    ]
    if info.get("predicted") in CLASS_CODES:
        evaluations.append(hd.sr.QualitativeEvaluation(PREDICTED, CLASS_CODES[info["predicted"]]))
    if bmd_side.get("who_class") in CLASS_CODES:
        evaluations.append(hd.sr.QualitativeEvaluation(WHO_CT, CLASS_CODES[bmd_side["who_class"]]))
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=segment.label),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=segment.number,
            source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid),
        ),
        finding_type=FEMUR,
        finding_category=ANATOMICAL_STRUCTURE,
        finding_sites=site,
        algorithm_id=hd.sr.AlgorithmIdentification(name="FemurScreen", version=__version__),
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )
    texts = []
    if info.get("reason"):
        texts.append(_text(REASON, info["reason"]))
    texts += [_text(FLAG, _flag_words(str(f))) for f in info.get("flags") or []]
    if info.get("reliability"):
        texts.append(_text(RELIABILITY, info["reliability"]))
    group[0].ContentSequence.extend(texts)
    return group


def build_report(
    result: dict,
    seg: Dataset,
    *,
    evidence: Sequence[Dataset] = (),
    series_instance_uid: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 Comprehensive 3D SR of ``result`` whose groups reference ``seg``'s segments.

    Patient and study come from ``seg`` (itself a copy of the source series'), so the SR is
    filed in the same study; ``evidence`` adds more instances of that study (the capture).
    """
    source_series_uid = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    bmd = result.get("bmd") or {}
    groups = []
    for side in SIDE_ORDER:
        info = result.get(side) or {}
        if _number(info.get("volume_ml")) in (None, 0.0):
            continue  # no voxels, no segment to point at: said in the root text below
        groups.append(_side_group(side, info, bmd.get(side) or {}, seg, source_series_uid))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="FemurScreen", manufacturer_name="FemurScreen"
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=CT_PROCEDURE,
        imaging_measurements=groups,
    )
    notes = []
    if result.get("demo"):
        notice = result.get("demo_notice") or ""
        notes.append(_text(NOTICE, f"{DEMO_TEXT}. {notice}".strip(". ") + "."))
    if bmd.get("label"):
        notes.append(_text(DENSITY_LABEL, bmd["label"]))
    if result.get("case"):
        notes.append(_text(CASE, result["case"]))
    for side in SIDE_ORDER:
        info = result.get(side) or {}
        if _number(info.get("volume_ml")) in (None, 0.0):
            status = str(info.get("status") or "not_found")
            notes.append(_text(REASON, f"{side}: {info.get('reason') or status}"))
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(notes)
    report[0].ContentSequence.append(container)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *evidence],
        content=report[0],
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="FemurScreen",
        is_complete=True,
        series_description="FemurScreen measurement report",
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "FemurScreen private concepts"
    scheme.CodingSchemeResponsibleOrganization = "FemurScreen project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


__all__ = ["SCHEME", "build_report"]
