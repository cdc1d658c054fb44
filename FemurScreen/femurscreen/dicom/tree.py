"""Find the screenable CT series in a tree of DICOM files, and say why the others were left out.

A PACS export or a CD holds many series per study: scouts (localisers), reformatted coronal or
sagittal views, dose reports, secondary captures, sometimes other modalities. The batch screens
one case per *axial CT series* and records every other series with the reason it was skipped.

Series are grouped by (StudyInstanceUID, SeriesInstanceUID), read with pydicom without pixel
data. Anonymised files with an empty SeriesInstanceUID are grouped per folder as well, so two
such series in different folders stay apart. The same rules apply to headers from a DICOMweb
server (:func:`series_from_datasets`), so the local tree and ``--from-dicomweb`` choose alike.

A series is chosen when all of these hold (else the first one that fails is its reason):

- Modality is CT (and the SOP class, where given, is a CT image storage class);
- ImageType names no localiser / scout / topogram;
- every slice has ImageOrientationPatient, all the same, with a slice normal within
  :data:`MAX_TILT_DEG` of the patient's head-foot axis (axial);
- at least :data:`MIN_SLICES` slices (the segmentation needs a volume, not a few slices).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from femurscreen.io.ctio import looks_like_dicom

log = logging.getLogger(__name__)

MIN_SLICES = 10  # fewer is a scout, a key image or a fragment, not an abdomen-pelvis CT
MAX_TILT_DEG = 5.0  # slice normal vs the patient z axis; beyond it the series is a reformat

CT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    }
)
LOCALISER_WORDS = frozenset({"LOCALIZER", "LOCALISER", "SCOUT", "TOPOGRAM", "SCANOGRAM"})

# Header fields read from each file (the rest of the header is not needed).
_TAGS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "ImageType",
    "ImageOrientationPatient",
    "NumberOfFrames",
    "SeriesNumber",
    "SeriesDescription",
    "SharedFunctionalGroupsSequence",
)


@dataclass
class Series:
    """One series as found: where its files are and the header values that decide on it."""

    study_uid: str
    series_uid: str
    files: list[Path] = field(default_factory=list)
    modalities: set[str] = field(default_factory=set)
    sop_classes: set[str] = field(default_factory=set)
    image_types: set[str] = field(default_factory=set)
    orientations: set[tuple[float, ...] | None] = field(default_factory=set)
    slices: int = 0
    number: str = ""
    description: str = ""
    folder: Path | None = None  # the folder grouping anonymised series with empty UIDs
    reason: str = ""  # why it is skipped; empty when chosen

    @property
    def chosen(self) -> bool:
        return not self.reason

    @property
    def key(self) -> str:
        """A short non-identifying id of the series (a hash of its UIDs and, if they are
        empty, of its folder): names skipped series in summaries without showing a UID."""
        text = f"{self.study_uid}\0{self.series_uid}\0{self.folder or ''}"
        return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=5).hexdigest()

    @property
    def folders(self) -> list[Path]:
        return sorted({p.parent for p in self.files})

    def describe(self, include_identifiers: bool = False) -> dict:
        """The series for batch-index.json: counts and the reason; UIDs only when asked."""
        info = {
            "series": f"series-{self.key}",
            "modality": "/".join(sorted(self.modalities)) or "none",
            "slices": self.slices,
            "status": "chosen" if self.chosen else "skipped",
            "reason": self.reason,
        }
        if self.files:
            info["files"] = len(self.files)
        if include_identifiers:
            info.update(
                study_uid=self.study_uid,
                series_uid=self.series_uid,
                series_number=self.number,
                description=self.description,
                folders=[str(p) for p in self.folders],
            )
        return info


def index_tree(
    root: str | Path, skip: Iterable[str | Path] = (), include_root_files: bool = True
) -> list[Series]:
    """Every DICOM series under ``root`` (recursively), each judged (see module doc).

    Hidden entries, folders in ``skip`` (e.g. the output folder) and FemurScreen result folders
    (those holding ``result.json``: their SEG/SR are outputs, not inputs) are not entered.
    Files that are not DICOM are ignored.
    """
    root = Path(root)
    skipped = {Path(p).resolve() for p in skip}
    found: dict[tuple[str, str, str], Series] = {}
    seen_sops: set[tuple[str, str]] = set()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and (here / d).resolve() not in skipped
            and not (here / d / "result.json").exists()
        )
        if here == root and not include_root_files:
            continue
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = here / name
            dataset = read_header(path)
            if dataset is None:
                continue
            sop = (
                str(dataset.get("SeriesInstanceUID", "")),
                str(dataset.get("SOPInstanceUID", "")),
            )
            if sop[1]:
                if sop in seen_sops:
                    continue  # the same instance twice (a copy): count it once
                seen_sops.add(sop)
            _add(found, dataset, path)
    series = sorted(found.values(), key=lambda s: (str(s.folders[0]), s.number, s.series_uid))
    for item in series:
        item.reason = judge(item)
    return series


def series_from_datasets(datasets: Iterable[Dataset]) -> list[Series]:
    """Group headers that did not come from files (e.g. DICOMweb metadata) and judge them."""
    found: dict[tuple[str, str, str], Series] = {}
    for dataset in datasets:
        _add(found, dataset, None)
    series = list(found.values())
    for item in series:
        item.reason = judge(item)
    return series


def read_header(path: Path) -> Dataset | None:
    """The header of a DICOM file without pixel data, or None for a file that is not DICOM."""
    if not looks_like_dicom(path):
        return None
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_TAGS))
    except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, AttributeError) as exc:
        log.debug("%s: not read as DICOM (%s)", path, exc)
        return None


def _add(found: dict, dataset: Dataset, path: Path | None) -> None:
    study = str(dataset.get("StudyInstanceUID", "") or "")
    series_uid = str(dataset.get("SeriesInstanceUID", "") or "")
    folder = path.parent if (path is not None and not series_uid) else None
    key = (study, series_uid, str(folder or ""))
    item = found.get(key)
    if item is None:
        item = found[key] = Series(study, series_uid, folder=folder)
        item.number = str(dataset.get("SeriesNumber", "") or "")
        item.description = str(dataset.get("SeriesDescription", "") or "")
    if path is not None:
        item.files.append(path)
    item.modalities.add(str(dataset.get("Modality", "") or "").strip().upper())
    sop_class = str(dataset.get("SOPClassUID", "") or "")
    if sop_class:
        item.sop_classes.add(sop_class)
    item.image_types.update(_image_type(dataset))
    item.orientations.add(_orientation(dataset))
    try:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    item.slices += max(frames, 1)


def _image_type(dataset: Dataset) -> set[str]:
    value = dataset.get("ImageType", None)
    if value is None:
        return set()
    values = [value] if isinstance(value, str) else list(value)
    return {str(v).strip().upper() for v in values if str(v).strip()}


def _orientation(dataset: Dataset) -> tuple[float, ...] | None:
    value = dataset.get("ImageOrientationPatient", None)
    if value is None:  # enhanced (multi-frame) CT keeps it in the shared functional groups
        try:
            shared = dataset.SharedFunctionalGroupsSequence[0]
            value = shared.PlaneOrientationSequence[0].ImageOrientationPatient
        except (AttributeError, IndexError, KeyError):
            return None
    try:
        numbers = tuple(round(float(v), 3) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == 6 else None


def tilt_degrees(orientation: Sequence[float]) -> float:
    """The angle between the slice normal (row x column cosines) and the patient z axis."""
    rx, ry, rz, cx, cy, cz = orientation
    nx, ny, nz = ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx
    norm = math.sqrt(nx * nx + ny * ny + nz * nz)
    if norm < 1e-6:
        return 90.0
    return math.degrees(math.acos(min(1.0, abs(nz) / norm)))


def judge(series: Series) -> str:
    """Why ``series`` is not screened ("" when it is): the first rule it fails."""
    modalities = series.modalities - {""}
    if modalities != {"CT"}:
        shown = "/".join(sorted(modalities)) or "none"
        return f"modality {shown}, not CT"
    other = sorted(series.sop_classes - CT_SOP_CLASSES)
    if other:
        name = UID(other[0]).name
        return f"SOP class {name}, not a CT image"
    localiser = sorted(series.image_types & LOCALISER_WORDS)
    if localiser:
        return f"localiser / scout (ImageType {localiser[0]})"
    if None in series.orientations:
        return "no ImageOrientationPatient on some slices: the slice direction is unknown"
    if len(series.orientations) > 1:
        return "slices of different orientations in one series"
    (orientation,) = series.orientations
    tilt = tilt_degrees(orientation)  # type: ignore[arg-type]
    if tilt > MAX_TILT_DEG:
        return f"not axial (slice normal {tilt:.0f} degrees from the head-foot axis)"
    if series.slices < MIN_SLICES:
        return f"only {series.slices} slice(s), fewer than {MIN_SLICES}"
    return ""


def chosen(series: Iterable[Series]) -> list[Series]:
    return [s for s in series if s.chosen]


def skipped(series: Iterable[Series]) -> list[Series]:
    return [s for s in series if not s.chosen]


__all__ = [
    "MAX_TILT_DEG",
    "MIN_SLICES",
    "Series",
    "chosen",
    "index_tree",
    "judge",
    "read_header",
    "series_from_datasets",
    "skipped",
    "tilt_degrees",
]
