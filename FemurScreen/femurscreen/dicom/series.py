"""Write a SimpleITK CT as a plain DICOM CT series, and read a series' headers back.

Why our own writer: tests and demos need a real, standard CT series made from the bundled
NIfTI (which has no DICOM form with femurs), with fresh UIDs and full patient/study/series/
frame-of-reference modules, so that the SEG and SR written from it can be checked by
independent readers (dcmqi, dciodvfy). It is vendor-neutral (pydicom, no scanner-private
tags) and can also write the awkward variants a scanner or PACS export produces: slices
stored in reverse order, a flipped or oblique orientation, gantry tilt (slices shifted
sideways) and a missing slice (a gap). Those variants are what :mod:`femurscreen.dicom.seg`
must either map correctly or refuse.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from femurscreen import __version__
from femurscreen.errors import InputError

MANUFACTURER = "FemurScreen"

# Test patient written when the caller gives none (never a real person).
DEFAULT_PATIENT: dict[str, str] = {
    "PatientName": "FEMURSCREEN^TEST",
    "PatientID": "FS-TEST-0001",
    "PatientBirthDate": "19500101",
    "PatientSex": "F",
}


@dataclass
class SeriesOptions:
    """How to write the series; the defaults give a clean, standard axial series."""

    patient: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PATIENT))
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    series_number: int = 1
    series_description: str = "CT written by FemurScreen"
    reverse_files: bool = False  # instance 1 = last slice, file names in that order
    tilt_mm_per_slice: float = 0.0  # shift each slice along the column direction (gantry tilt)
    drop_slices: Sequence[int] = ()  # slice indices left out (a gap)


def write_ct_series(
    image: sitk.Image, folder: str | Path, options: SeriesOptions | None = None
) -> list[Path]:
    """Write ``image`` (a 3D CT in HU) as one single-frame CT file per slice into ``folder``.

    Geometry comes from the image as it is: the row/column directions of every slice are the
    image's first two direction columns, the positions its voxel (0, 0, k) centres. Voxel
    values must be whole numbers in int16 range (stored as signed 16-bit, slope 1, intercept
    0). Returns the files written, in instance-number order.
    """
    options = options or SeriesOptions()
    if image.GetDimension() != 3:
        raise InputError("is not a 3D image", "pass a 3D CT volume", None)
    array = sitk.GetArrayFromImage(image)
    if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
        raise InputError(
            "has non-integer or non-finite voxel values",
            "round the CT to whole HU before writing it as DICOM",
        )
    if array.min() < -32768 or array.max() > 32767:
        raise InputError("has values outside int16", "clip the CT to -32768..32767 HU")
    pixels = array.astype(np.int16)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = image.GetSpacing()
    study_uid = options.study_instance_uid or generate_uid()
    series_uid = options.series_instance_uid or generate_uid()
    frame_uid = options.frame_of_reference_uid or generate_uid()
    now = dt.datetime.now(dt.UTC)
    slices = [k for k in range(image.GetSize()[2]) if k not in set(options.drop_slices)]
    order = list(reversed(slices)) if options.reverse_files else slices
    written = []
    for instance, k in enumerate(order, start=1):
        position = np.asarray(image.TransformIndexToPhysicalPoint((0, 0, k)), dtype=float)
        position = position + k * options.tilt_mm_per_slice * direction[:, 1]
        ds = _slice_dataset(
            pixels[k],
            row_direction=direction[:, 0],
            column_direction=direction[:, 1],
            position=position,
            pixel_spacing=(spacing[1], spacing[0]),
            thickness=spacing[2],
            instance=instance,
            uids=(study_uid, series_uid, frame_uid),
            options=options,
            now=now,
        )
        if options.tilt_mm_per_slice:
            tilt = np.degrees(np.arctan2(options.tilt_mm_per_slice, spacing[2]))
            ds.GantryDetectorTilt = f"{tilt:.4f}"
        path = folder / f"CT{instance:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def _ds(value: float) -> str:
    """A DS string (max 16 characters) that keeps micrometre precision."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text[:16]


def _slice_dataset(
    pixels: np.ndarray,
    *,
    row_direction: np.ndarray,
    column_direction: np.ndarray,
    position: np.ndarray,
    pixel_spacing: tuple[float, float],
    thickness: float,
    instance: int,
    uids: tuple[str, str, str],
    options: SeriesOptions,
    now: dt.datetime,
) -> Dataset:
    study_uid, series_uid, frame_uid = uids
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
    ds.AccessionNumber = "FS0001"
    ds.Modality = "CT"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "femurscreen.dicom.series"
    ds.SoftwareVersions = __version__
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "FemurScreen test study"
    ds.SeriesDescription = options.series_description
    for keyword, value in options.patient.items():
        setattr(ds, keyword, value)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = options.series_number
    ds.InstanceNumber = instance
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "HFS"
    ds.Laterality = ""  # type 2C in General Series: a CT of both hips has no one laterality
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [_ds(v) for v in (*row_direction, *column_direction)]
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
    ds.SliceThickness = _ds(thickness)
    ds.KVP = "120"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds


def read_series_headers(
    source: str | Path | Sequence[Dataset], series_uid: str | None = None
) -> list[Dataset]:
    """The headers (no pixel data) of one DICOM series: a folder, one of its files, or datasets.

    ``series_uid`` picks a series in a folder that holds several (required then). The order
    is whatever the folder gives; :mod:`femurscreen.dicom.seg` sorts by position itself.
    """
    if not isinstance(source, (str, Path)):
        datasets = list(source)
        if not datasets:
            raise InputError("no DICOM datasets were given", "pass the CT series' datasets")
        return datasets
    path = Path(source)
    if path.is_file():
        first = pydicom.dcmread(path, stop_before_pixels=True)
        series_uid = series_uid if series_uid is not None else str(first.SeriesInstanceUID)
        path = path.parent
    if not path.is_dir():
        raise InputError("is not a DICOM series folder", "pass the CT's DICOM folder", path)
    by_series: dict[str, list[Dataset]] = {}
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, EOFError):
            continue
        if "SOPClassUID" not in ds or "ImagePositionPatient" not in ds:
            continue  # not an image slice (a DICOMDIR, an SR, ...)
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
    if series_uid is not None:
        chosen = by_series.get(series_uid)
    elif len(by_series) == 1:
        chosen = next(iter(by_series.values()))
    else:
        chosen = None
    if not chosen:
        found = ", ".join(
            f"{uid or '(empty UID)'} ({len(v)} files)" for uid, v in by_series.items()
        )
        raise InputError(
            f"holds no single DICOM image series to reference (series found: {found or 'none'})",
            "pass the folder of the screened CT series and its --series UID",
            path,
        )
    return chosen


__all__ = ["DEFAULT_PATIENT", "SeriesOptions", "read_series_headers", "write_ct_series"]
