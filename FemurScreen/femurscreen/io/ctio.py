"""Read a CT from NIfTI, NRRD, MetaImage or a DICOM series, and refuse input we cannot trust.

``read_ct`` returns a plain 3D ``sitk.Image`` in Hounsfield units with the geometry exactly as
the file states it, in SimpleITK's world frame: LPS (x toward the patient's left, y toward
posterior, z toward superior), millimetres. Nothing is resampled or reoriented.

Pixel type: int16 when every value is a whole number in -32768..32767 (every CT stored with an
integer rescale slope/intercept, i.e. practically all scanners), else float32 (a non-integer
rescale, or a resampled/filtered volume). Values are never rounded; only float64 input with
fractional values loses precision beyond float32's ~7 significant digits.

Why the extra work around SimpleITK: its NIfTI reader fills a truncated or corrupted file with
zeros without an error, its DICOM series reader silently skips unreadable slices and leaves a
gap, and its error messages name C++ source files. Each of those cases ends here as an
``InputError`` that names the file, says what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from femurscreen.errors import InputError
from femurscreen.io.ct_checks import all_integral, describe_ct, validate_ct

__all__ = [
    "DicomSeries",
    "as_ct_pixel_type",
    "ct_info",
    "describe_ct",
    "dicom_series",
    "read_ct",
    "validate_ct",
]

log = logging.getLogger(__name__)

FORMATS = (
    "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a DICOM series folder"
)
_FORMAT_NAMES = {"NiftiImageIO": "NIfTI", "NrrdImageIO": "NRRD", "MetaImageIO": "MetaImage"}
_CT_MODALITIES = {"CT", "OT", ""}  # OT: "other", used by some exports of CT
_SLICE_STEP_TOLERANCE = 0.05  # relative deviation of a DICOM slice step from the spacing
# carried from a DICOM series onto the image: what the calibrated density (bmd) needs to know
# of the scanner: the tube voltage (the energy prior) and the key of a site calibration entry
SCANNER_TAGS = (
    "0018|0060",  # KVP
    "0008|0070",  # Manufacturer
    "0008|1090",  # Manufacturer's Model Name
    "0018|1210",  # Convolution Kernel
)


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series in a folder, as GDCM groups files by SeriesInstanceUID."""

    uid: str
    files: tuple[str, ...] = field(repr=False)
    description: str = ""
    number: str = ""
    modality: str = ""

    @property
    def slices(self) -> int:
        return len(self.files)

    def summary(self) -> str:
        uid = self.uid if self.uid else '"" (empty series UID)'
        parts = [uid, f"{self.slices} slices"]
        if self.modality:
            parts.append(self.modality)
        if self.number:
            parts.append(f"series {self.number}")
        if self.description:
            parts.append(f"'{self.description}'")
        return ", ".join(parts)


def read_ct(path: str | Path, *, series_uid: str | None = None) -> sitk.Image:
    """Read a CT volume and check it (see ``ct_checks`` for the rules).

    ``path``: a NIfTI/NRRD/MetaImage file, a DICOM series folder, or one file of a DICOM series
    (the whole series it belongs to is read). ``series_uid`` picks a series when the folder
    holds several; an empty string is a valid UID (anonymised data often has one).
    Returns a 3D image in HU, LPS world frame, int16 or float32 (see module doc).
    """
    image, _ = _read_with_source(path, series_uid)
    return image


def ct_info(path: str | Path, *, series_uid: str | None = None) -> dict:
    """Read and check a CT, then describe it: ``describe_ct`` plus where it came from."""
    image, source = _read_with_source(path, series_uid)
    return {**source, **describe_ct(image)}


def as_ct_pixel_type(image: sitk.Image) -> sitk.Image:
    """int16 when all values are whole numbers that fit, else float32 (exact below 2**24)."""
    if image.GetPixelID() == sitk.sitkInt16:
        return image
    array = sitk.GetArrayViewFromImage(image)
    low, high = float(array.min()), float(array.max())
    fits = low >= -32768 and high <= 32767
    is_float = image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64)
    integral = not is_float or all_integral(array)
    target = sitk.sitkInt16 if fits and integral else sitk.sitkFloat32
    if image.GetPixelID() == target:
        return image
    cast = sitk.Cast(image, target)
    for tag in SCANNER_TAGS:  # a cast keeps no metadata; the density needs these
        if image.HasMetaDataKey(tag):
            cast.SetMetaData(tag, image.GetMetaData(tag))
    return cast


def dicom_series(folder: str | Path) -> list[DicomSeries]:
    """The DICOM series directly inside ``folder`` (not recursive), with a few header fields."""
    folder = str(folder)
    with _quiet_itk():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
        series = []
        for uid in uids:  # the empty string is a real ID here: anonymised data has empty UIDs
            files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
            header = _dicom_header(files[0]) if files else {}
            series.append(
                DicomSeries(
                    uid=uid,
                    files=files,
                    description=header.get("0008|103e", ""),
                    number=header.get("0020|0011", ""),
                    modality=header.get("0008|0060", ""),
                )
            )
    return series


def _read_with_source(path: str | Path, series_uid: str | None) -> tuple[sitk.Image, dict]:
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(
            "not found: no such file or folder",
            f"Check the path; pass a CT as {FORMATS}",
            path,
        )
    if path.is_dir():
        image, source = _read_dicom_folder(path, series_uid)
    else:
        image, source = _read_file(path, series_uid)
    validate_ct(image, path)
    image = as_ct_pixel_type(image)
    return image, {"path": str(path), **source}


def _read_file(path: Path, series_uid: str | None) -> tuple[sitk.Image, dict]:
    if path.stat().st_size == 0:
        raise InputError("is an empty file (0 bytes)", "Copy or export the CT again", path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with _quiet_itk():
        io_name = reader.GetImageIOFromFileName(str(path))
    if not io_name:
        raise InputError(
            "cannot be read as an image: its content is not a format SimpleITK recognises "
            "(empty, truncated, or another kind of file renamed)",
            f"Pass a CT as {FORMATS}",
            path,
        )
    if io_name == "GDCMImageIO":
        return _read_dicom_file(path, series_uid)
    if series_uid is not None:
        raise InputError(
            "is not a DICOM series, so a series UID cannot be chosen in it",
            "Leave out --series / series_uid for NIfTI, NRRD and MetaImage files",
            path,
        )
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_data(path)
    with _quiet_itk():
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise _unreadable(path, exc) from None
    return _drop_single_time_point(image), {"format": _FORMAT_NAMES.get(io_name, io_name)}


def _read_dicom_file(path: Path, series_uid: str | None) -> tuple[sitk.Image, dict]:
    """One DICOM file: read the series it belongs to from its folder (or a multi-frame file)."""
    header = _dicom_header(str(path))
    uid = header.get("0020|000e", "")
    if series_uid is not None and series_uid != uid:
        raise InputError(
            f"belongs to DICOM series {uid!r}, not to the requested series {series_uid!r}",
            "Pass the folder with --series / series_uid=, or a file of that series",
            path,
        )
    resolved = path.resolve()
    in_folder = dicom_series(path.parent)
    for series in in_folder:
        files = {Path(f).resolve() for f in series.files}
        if series.uid == uid and resolved in files and series.slices > 1:
            log.info("%s: reading its whole DICOM series (%d files)", path, series.slices)
            return _read_series(path.parent, series, in_folder)
    with _quiet_itk():
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise _unreadable(path, exc) from None
    if image.GetDimension() == 3 and image.GetSize()[2] > 1:  # a multi-frame file
        return image, {"format": "DICOM", "series_uid": uid, "dicom_files": 1}
    raise InputError(
        "is a single DICOM slice, not a CT volume, and no other slice of its series is in its "
        "folder",
        "Pass the folder that holds all slices of the series",
        path,
    )


def _read_dicom_folder(folder: Path, series_uid: str | None) -> tuple[sitk.Image, dict]:
    series = dicom_series(folder)
    if not series:
        raise InputError(
            "is a folder with no DICOM files in it" + _folder_hint(folder),
            f"Pass the folder that holds the DICOM slice files, or a CT as {FORMATS}",
            folder,
        )
    if series_uid is not None:
        chosen = [s for s in series if s.uid == series_uid]
        if not chosen:
            raise InputError(
                f"holds no DICOM series with UID {series_uid!r}; it holds: "
                + "; ".join(s.summary() for s in series),
                "Pick one of the listed series UIDs with --series UID / series_uid=",
                folder,
            )
        return _read_series(folder, chosen[0], series)
    if len(series) > 1:
        raise InputError(
            f"holds several DICOM series ({len(series)}): "
            + "; ".join(s.summary() for s in series),
            "Pick one with --series UID (command line) or series_uid= (Python)",
            folder,
        )
    return _read_series(folder, series[0], series)


def _read_series(
    folder: Path, series: DicomSeries, in_folder: list[DicomSeries]
) -> tuple[sitk.Image, dict]:
    if series.modality.strip().upper() not in _CT_MODALITIES:
        raise InputError(
            f"DICOM series {series.uid!r} has modality {series.modality}, not CT",
            "Pass a CT series",
            folder,
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    reader.MetaDataDictionaryArrayUpdateOn()
    with _quiet_itk():
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise _unreadable(folder, exc) from None
    for tag in SCANNER_TAGS:
        if reader.HasMetaDataKey(0, tag):
            image.SetMetaData(tag, reader.GetMetaData(0, tag).strip(" \x00"))
    damaged = _damaged_dicom_files(folder, in_folder)
    if image.GetDimension() == 3 and image.GetSize()[2] > 1:
        _check_slice_positions(folder, series, reader, image, damaged)
    if damaged:
        log.warning(
            "%s: %d DICOM file(s) cannot be read and were left out: %s",
            folder,
            len(damaged),
            ", ".join(p.name for p in damaged[:5]),
        )
    source = {
        "format": "DICOM",
        "series_uid": series.uid,
        "series_description": series.description,
        "dicom_files": series.slices,
    }
    return image, source


def _damaged_dicom_files(folder: Path, in_folder: list[DicomSeries]) -> list[Path]:
    """Files of ``folder`` that look like DICOM (preamble "DICM" or .dcm) but that GDCM cannot
    parse: its series reader silently leaves them out, which shows only as a gap."""
    listed: set[Path] = set()
    for series in in_folder:
        listed.update(Path(f).resolve() for f in series.files)
    damaged = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.resolve() in listed or not looks_like_dicom(path):
            continue
        if not _dicom_header(str(path)):
            damaged.append(path)
    return damaged


def looks_like_dicom(path: Path) -> bool:
    """A ``.dcm`` name or the DICM preamble marker (cheap: reads 132 bytes)."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _check_slice_positions(
    folder: Path,
    series: DicomSeries,
    reader: sitk.ImageSeriesReader,
    image: sitk.Image,
    damaged: list[Path] | None = None,
) -> None:
    """Refuse gaps, duplicates and gantry tilt, which ITK reads into a wrong geometry."""
    positions = []
    for index in range(len(series.files)):
        if not reader.HasMetaDataKey(index, "0020|0032"):
            log.warning("%s: slice %d has no ImagePositionPatient; not checked", folder, index)
            return
        positions.append([float(v) for v in reader.GetMetaData(index, "0020|0032").split("\\")])
    points = np.asarray(positions)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    steps = np.diff(points @ direction[:, 2])
    if np.any(np.abs(steps) < 1e-3 * spacing[2]):
        raise InputError(
            f"DICOM series {series.uid!r} has several slices at the same position "
            "(duplicates, or more than one acquisition in one series)",
            "Export the series again with one image per position, or convert it with dcm2niix "
            "and pass the NIfTI",
            folder,
        )
    lateral = (points - points[0]) @ direction[:, :2]
    if np.abs(lateral).max() > 0.5 * min(spacing[:2]):
        raise InputError(
            f"DICOM series {series.uid!r} has slices shifted sideways along the stack (gantry "
            f"tilt, up to {np.abs(lateral).max():.3g} mm), which a plain series reader would "
            "place wrongly",
            "Convert the series with a tool that corrects gantry tilt (e.g. dcm2niix) and pass "
            "the NIfTI",
            folder,
        )
    deviation = np.abs(steps - spacing[2]) / spacing[2]
    if deviation.max() > _SLICE_STEP_TOLERANCE and damaged:
        names = ", ".join(str(p) for p in damaged[:5]) + (" ..." if len(damaged) > 5 else "")
        raise InputError(
            f"DICOM series {series.uid!r} has a gap (steps between {steps.min():.4g} and "
            f"{steps.max():.4g} mm) because {len(damaged)} DICOM file(s) in the folder cannot "
            f"be read (damaged header): {names}",
            "Copy or export those slices again from the scanner or PACS; the series is "
            "incomplete without them",
            folder,
        )
    if deviation.max() > _SLICE_STEP_TOLERANCE:
        raise InputError(
            f"DICOM series {series.uid!r} has non-uniform slice spacing (steps between "
            f"{steps.min():.4g} and {steps.max():.4g} mm): a slice is missing or unreadable, "
            "or the series has variable spacing",
            "Make sure the folder holds the complete series; a series with variable spacing "
            "must be resampled (e.g. convert it with dcm2niix) and passed as NIfTI",
            folder,
        )


def _dicom_header(filename: str) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(filename)
    reader.SetImageIO("GDCMImageIO")
    with _quiet_itk():
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return {}
    keys = ("0008|0060", "0008|103e", "0020|000e", "0020|0011")
    return {k: reader.GetMetaData(k).strip(" \x00") for k in keys if reader.HasMetaDataKey(k)}


def _drop_single_time_point(image: sitk.Image) -> sitk.Image:
    """A 4D image with one time point is a 3D volume; keep its 3D geometry."""
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        size = list(image.GetSize())
        size[3] = 0
        return sitk.Extract(image, size, [0, 0, 0, 0])
    return image


_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8", 32: "f4", 1792: "f8"}  # float32/64, complex64/128


@dataclass(frozen=True)
class _NiftiLayout:
    """Where a single-file NIfTI's voxels are and how they are stored."""

    offset: int
    end: int
    dtype: np.dtype | None  # a floating type whose values we must check; None for integers


def _check_nifti_data(path: Path) -> None:
    """Refuse a truncated, corrupted or non-finite NIfTI, which SimpleITK reads without a word.

    Its NIfTI reader zero-fills missing data and replaces NaN and Inf voxels by 0, so a CT
    with NaN slices would be graded as if they held water. The raw voxel bytes are read here
    (streamed, once) and checked before SimpleITK sees the file.
    """
    compressed = path.name.lower().endswith(".gz")
    non_finite = [0, 0]  # NaN, Inf
    try:
        with gzip.open(path, "rb") if compressed else path.open("rb") as stream:
            header = stream.read(540)
            layout = _nifti_layout(header)
            if layout is None:
                return  # not a single-file NIfTI-1/2: SimpleITK's own checks apply
            available = len(header)
            if len(header) < layout.offset:
                available += len(stream.read(layout.offset - len(header)))
            to_check = layout.end - layout.offset  # voxel bytes; anything after is not data
            pending = header[layout.offset :][:to_check]
            to_check -= len(pending)
            while chunk := stream.read(1 << 22):
                available += len(chunk)
                pending = _count_non_finite(pending + chunk[: max(to_check, 0)], layout, non_finite)
                to_check -= len(chunk)
            _count_non_finite(pending, layout, non_finite)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise InputError(
            f"is truncated or corrupted: its compressed data cannot be read to the end ({exc})",
            "Copy or export the file again; the download or copy was probably incomplete",
            path,
        ) from None
    if available < layout.end:
        raise InputError(
            f"is truncated: its header announces {layout.end} bytes but it holds only {available}",
            "Copy or export the file again; the download or copy was probably incomplete",
            path,
        )
    if non_finite[0] or non_finite[1]:
        raise InputError(
            f"contains non-finite voxel values ({non_finite[0]} NaN, {non_finite[1]} Inf), "
            "which SimpleITK's NIfTI reader would silently turn into 0 HU",
            "Re-export the CT without NaN/Inf (e.g. fill outside the field of view with -1024 HU)",
            path,
        )


def _count_non_finite(data: bytes, layout: _NiftiLayout, counts: list[int]) -> bytes:
    """Add the NaN and Inf values of whole items in ``data`` to ``counts``; return the rest."""
    if layout.dtype is None:
        return b""
    size = layout.dtype.itemsize
    whole = len(data) - len(data) % size
    values = np.frombuffer(data[:whole], dtype=layout.dtype)
    if not np.isfinite(values.min(initial=0.0)) or not np.isfinite(values.max(initial=0.0)):
        counts[0] += int(np.count_nonzero(np.isnan(values)))
        counts[1] += int(np.count_nonzero(np.isinf(values)))
    return data[whole:]


def _nifti_layout(header: bytes) -> _NiftiLayout | None:
    """Voxel data offset, end and float type of a single-file NIfTI-1/2; None if not one."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            if header[344:347] != b"n+1":
                return None
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype = struct.unpack(endian + "h", header[70:72])[0]
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            if header[4:7] != b"n+2":
                return None
            dims = struct.unpack(endian + "8q", header[16:80])
            datatype = struct.unpack(endian + "h", header[12:14])[0]
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or offset < 0:
        return None
    voxels = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]]))
    kind = _NIFTI_FLOAT_TYPES.get(int(datatype))
    dtype = None if kind is None else np.dtype(endian + kind)
    return _NiftiLayout(offset=offset, end=offset + voxels * bitpix // 8, dtype=dtype)


def _unreadable(path: Path, exc: RuntimeError) -> InputError:
    reason = _itk_reason(exc)
    what = "cannot be read: it looks damaged, truncated or is not an image file"
    if "spacing" in reason.lower():
        what = "cannot be read: its header holds a zero or invalid voxel spacing"
    elif "direction" in str(exc).lower():
        what = "cannot be read: its header holds a degenerate (singular) direction matrix"
    if reason:
        what += f" (SimpleITK: {reason})"
    return InputError(what, f"Export the CT again as {FORMATS}", path)


def _itk_reason(exc: RuntimeError) -> str:
    """The informative part of an ITK exception, without C++ file names and pointers."""
    useful = []
    for line in (line.strip() for line in str(exc).splitlines()):
        if not line or line.startswith("Exception thrown in SimpleITK") or ".cxx:" in line:
            continue
        line = re.sub(r"^(sitk::ERROR:|ITK ERROR:)\s*", "", line)
        line = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", line)  # "MetaImageIO(0x55..): "
        if "No such file or directory" in line:  # MetaIO's words for truncated data
            line = "data incomplete or missing"
        useful.append(line)
    return " ".join(useful[-2:])[:300]  # the last lines say what failed; earlier ones are context


def _folder_hint(folder: Path) -> str:
    """Point at likely inputs near an empty-looking folder."""
    images = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file()
        and p.name.lower().endswith((".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"))
    )
    if images:
        return f" (it holds image files: {', '.join(images[:3])}; pass one of them instead)"
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if subfolders:
        return f" (subfolders: {', '.join(subfolders[:5])}; DICOM slices may be in one of them)"
    return ""


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """ITK warnings go straight to stderr; our own checks report the same problems clearly."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)
