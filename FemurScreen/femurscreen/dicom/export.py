"""Write the DICOM outputs of one screened case: SEG, SR and the report capture.

One entry point, :func:`write_dicom_outputs`, used by ``screen --dicom``, the batch/PACS path
and the Slicer panel. All three objects go into the *source CT's study* (same Study Instance
UID and patient module, copied from the series' headers, because PACS files objects by them)
as three new series. Everything is built in memory first, so a refusal (a series that cannot
carry a SEG: gap, tilt, missing UIDs) writes nothing; files are then written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import SimpleITK as sitk
from pydicom.dataset import Dataset

from femurscreen.atomic import atomic_path

SEG_NAME = "seg.dcm"
SR_NAME = "sr.dcm"
REPORT_NAME = "report.dcm"
NAMES = (SEG_NAME, SR_NAME, REPORT_NAME)


def write_dicom_outputs(
    result: dict,
    labels: sitk.Image,
    source: str | Path | Sequence[Dataset],
    out_dir: str | Path,
    *,
    series_uid: str | None = None,
    ct: sitk.Image | None = None,
) -> list[Path]:
    """Write ``seg.dcm``, ``sr.dcm`` and ``report.dcm`` for ``result`` into ``out_dir``.

    ``labels``: the femur label map (0/1/2) on the grid of the CT read from ``source``.
    ``source``: the CT's DICOM folder (``series_uid`` picks one of several), one of its files,
    or its datasets (headers are enough). ``ct`` adds the femur pictures to the capture.
    Returns the paths written (SEG, SR, capture). Raises ``InputError`` before writing
    anything when the series cannot carry a SEG.
    """
    from femurscreen.dicom.capture import build_capture
    from femurscreen.dicom.seg import build_segmentation
    from femurscreen.dicom.series import read_series_headers
    from femurscreen.dicom.sr import build_report

    datasets = read_series_headers(source, series_uid)
    engine = str((result.get("segmentation") or {}).get("engine") or "default")
    seg = build_segmentation(labels, datasets, engine=engine)
    capture = build_capture(result, seg, ct=ct, labels=labels)
    sr = build_report(result, seg, evidence=[capture])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dataset in zip(NAMES, (seg, sr, capture), strict=True):
        with atomic_path(out_dir / name, suffix=".dcm") as tmp:
            dataset.save_as(tmp, enforce_file_format=True)
        written.append(out_dir / name)
    return written


def dicom_block(folder: str = "dicom", study_instance_uid: str | None = None) -> dict:
    """The ``dicom`` block of result.json: paths relative to the result folder, and the Study
    Instance UID only when given (``screen`` gives it only with include_identifiers)."""
    block: dict[str, str] = {
        "seg": f"{folder}/{SEG_NAME}",
        "sr": f"{folder}/{SR_NAME}",
        "report": f"{folder}/{REPORT_NAME}",
    }
    if study_instance_uid:
        block["study_instance_uid"] = study_instance_uid
    return block


__all__ = ["NAMES", "REPORT_NAME", "SEG_NAME", "SR_NAME", "dicom_block", "write_dicom_outputs"]
