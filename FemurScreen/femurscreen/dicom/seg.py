"""The femur label map as a DICOM Segmentation (SEG) of the source CT series, with highdicom.

Two binary segments with stable numbers, the same as our label values: 1 = patient's left
proximal femur, 2 = right (both always described, a femur that was not found is an empty
segment, so the SR can reference a segment number that never changes meaning). Codes are
those of the ``.seg.nrrd`` (:mod:`femurscreen.io.segfile`): category Anatomical Structure
(SCT 123037004), type Femur (SCT 71341001) with laterality as the type modifier (Left SCT
7771000, Right SCT 24028007), so Slicer's DICOM import shows the same terminology.

How voxels reach frames: the label map lives on the CT's grid as SimpleITK read it (any
direction matrix), while a SEG frame must match one source slice pixel for pixel. For each
source slice we build that slice's own geometry from its header (position, row/column
directions, pixel spacing) and sample the label map there (nearest neighbour) after checking
that the slice's pixels sit exactly on the label map's voxel lattice. Slice order in files,
instance numbers and flipped or oblique orientations therefore cannot swap or shift a femur.

A series that cannot carry such a SEG is refused with :class:`InputError`: a gap or a
duplicate between slices, slices shifted sideways (gantry tilt), mixed orientations or
sizes, missing UIDs, or a label map that is not on this series' grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from femurscreen import __version__
from femurscreen.errors import InputError
from femurscreen.labels import LEFT, RIGHT, SIDE_COLORS

MANUFACTURER = "FemurScreen"
SERIES_NUMBER = 9701
FEMUR = hd.sr.CodedConcept("71341001", "SCT", "Femur")
ANATOMICAL_STRUCTURE = hd.sr.CodedConcept("123037004", "SCT", "Anatomical Structure")
LATERALITY = {
    "left": hd.sr.CodedConcept("7771000", "SCT", "Left"),
    "right": hd.sr.CodedConcept("24028007", "SCT", "Right"),
}


@dataclass(frozen=True)
class SegmentInfo:
    """One segment of our SEG: its number (= label value), side and label."""

    number: int
    side: str
    label: str


SEGMENTS: tuple[SegmentInfo, ...] = (
    SegmentInfo(LEFT, "left", "Left proximal femur"),
    SegmentInfo(RIGHT, "right", "Right proximal femur"),
)
SEGMENT_BY_SIDE: Mapping[str, SegmentInfo] = {s.side: s for s in SEGMENTS}

_LATTICE_TOLERANCE = 0.05  # voxels: how far a slice pixel may sit from a label-map voxel centre
_STEP_TOLERANCE = 0.05  # relative deviation of a slice step from the median step
_TILT_TOLERANCE = 0.5  # pixels of sideways shift along the stack before it counts as tilt


def check_series(datasets: Sequence[Dataset]) -> np.ndarray:
    """Refuse a series a SEG cannot reference frame by frame; return the slice order.

    The returned indices sort ``datasets`` along the slice normal. Raises ``InputError``
    saying what is wrong (and what to do) for a gap, tilt, duplicates, mixed geometry, a
    multi-frame image or missing UIDs.
    """
    if not datasets:
        raise InputError("the DICOM series has no images", "pass the screened CT's series")
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        missing = sum(1 for ds in datasets if not str(ds.get(keyword, "")).strip())
        if missing:
            raise InputError(
                f"{missing} of {len(datasets)} DICOM files have no {keyword}, so a DICOM SEG "
                "or SR cannot reference them",
                "screen the series as it came from the scanner or PACS (not an export that "
                "blanked its UIDs), or leave out --dicom",
            )
    for keyword in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(keyword, "")) for ds in datasets}
        if len(values) > 1:
            raise InputError(
                f"the DICOM files belong to {len(values)} different {keyword}s",
                "pass the files of one CT series only",
            )
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise InputError(
            "the series is a multi-frame (enhanced) CT, which this SEG writer does not map",
            "export the series as single-frame CT images, or leave out --dicom",
        )
    orientations = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
    if np.abs(orientations - orientations[0]).max() > 1e-4:
        raise InputError(
            "the slices of the series have different orientations",
            "pass one axial series with one orientation",
        )
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    spacings = {tuple(round(float(v), 5) for v in ds.PixelSpacing) for ds in datasets}
    if len(shapes) > 1 or len(spacings) > 1:
        raise InputError(
            "the slices of the series have different sizes or pixel spacings",
            "pass one CT series with one slice size",
        )
    row, column = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, column)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    if len(datasets) > 1:
        pixel = min(float(v) for v in datasets[0].PixelSpacing)
        offsets = positions - positions[0]
        sideways = np.abs(offsets @ np.stack([row, column], axis=1)).max()
        if sideways > _TILT_TOLERANCE * pixel:
            raise InputError(
                f"the slices are shifted sideways along the stack by up to {sideways:.3g} mm "
                "(gantry tilt): a DICOM SEG on these frames would not describe a regular "
                "volume, and the label map cannot be placed on them",
                "reconstruct the series without tilt (or correct it, e.g. with dcm2niix) and "
                "screen that; or leave out --dicom",
            )
        steps = np.diff(positions @ normal)
        if np.any(steps < 1e-3 * pixel):
            raise InputError(
                "the series has several slices at the same position (duplicates)",
                "pass a series with one image per position, or leave out --dicom",
            )
        median = float(np.median(steps))
        worst = float(np.abs(steps - median).max() / median)
        if worst > _STEP_TOLERANCE:
            raise InputError(
                f"the series has a gap or uneven slice spacing (steps {steps.min():.4g} to "
                f"{steps.max():.4g} mm): a slice is missing, so the label map does not match "
                "the frames",
                "screen the complete series (all slices), or leave out --dicom",
            )
    return order


def _slice_grid(ds: Dataset) -> sitk.Image:
    """An empty one-slice image with exactly the geometry of the DICOM slice ``ds``."""
    iop = [float(v) for v in ds.ImageOrientationPatient]
    row, column = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, column)
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)  # between rows, columns
    grid = sitk.Image([int(ds.Columns), int(ds.Rows), 1], sitk.sitkUInt8)
    grid.SetOrigin([float(v) for v in ds.ImagePositionPatient])
    grid.SetSpacing([column_spacing, row_spacing, 1.0])
    grid.SetDirection(np.stack([row, column, normal], axis=1).ravel().tolist())
    return grid


def frames_from_labels(labels: sitk.Image, datasets: Sequence[Dataset]) -> np.ndarray:
    """The label map sampled on each source slice: (n_slices, rows, columns) uint8, in the
    order of ``datasets``; refuses a label map that is not on the series' voxel lattice."""
    check_series(datasets)
    labels = sitk.Cast(labels, sitk.sitkUInt8)
    size = np.asarray(labels.GetSize())
    frames = np.zeros((len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)), np.uint8)
    for index, ds in enumerate(datasets):
        grid = _slice_grid(ds)
        corners = [(0, 0, 0), (grid.GetSize()[0] - 1, 0, 0), (0, grid.GetSize()[1] - 1, 0)]
        for corner in corners:
            point = grid.TransformIndexToPhysicalPoint(corner)
            cont = np.asarray(labels.TransformPhysicalPointToContinuousIndex(point))
            off_lattice = np.abs(cont - np.round(cont)).max()
            outside = np.any(np.round(cont) < 0) or np.any(np.round(cont) > size - 1)
            if off_lattice > _LATTICE_TOLERANCE or outside:
                raise InputError(
                    f"the label map is not on the voxel grid of this DICOM series (slice "
                    f"{ds.get('InstanceNumber', index + 1)} falls "
                    + ("outside it" if outside else f"{off_lattice:.2f} voxel between voxels")
                    + ")",
                    "write the DICOM objects for the series the CT was read from",
                )
        sampled = sitk.Resample(labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        frames[index] = sitk.GetArrayViewFromImage(sampled)[0]
    array = sitk.GetArrayViewFromImage(labels)
    for segment in SEGMENTS:
        expected = int(np.count_nonzero(array == segment.number))
        got = int(np.count_nonzero(frames == segment.number))
        if got != expected:
            raise InputError(
                f"the DICOM series covers {got} of the {expected} voxels of the "
                f"{segment.label.lower()}: the label map and the series do not match",
                "write the DICOM objects for the complete series the CT was read from",
            )
    return frames


def segment_descriptions(engine: str = "default") -> list[hd.seg.SegmentDescription]:
    """Both femur segments, SNOMED-coded with laterality, in our display colours."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"FemurScreen segmentation ({engine})",
        family=codes.cid7162.ArtificialIntelligence,
        version=__version__,
    )
    out = []
    for segment in SEGMENTS:
        description = hd.seg.SegmentDescription(
            segment_number=segment.number,
            segment_label=segment.label,
            segmented_property_category=ANATOMICAL_STRUCTURE,
            segmented_property_type=FEMUR,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=segment.label,
            display_color=hd.color.CIELabColor.from_rgb(
                *(255 * c for c in SIDE_COLORS[segment.side])
            ),
        )
        # Laterality is the type's modifier (as in the .seg.nrrd); fresh items per segment, as
        # highdicom may share one coded-concept item between descriptions.
        item = description.SegmentedPropertyTypeCodeSequence[0]
        description.SegmentedPropertyTypeCodeSequence = [hd.sr.CodedConcept(*_code_tuple(item))]
        description.SegmentedPropertyTypeCodeSequence[
            0
        ].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept(*_code_tuple(LATERALITY[segment.side]))
        ]
        out.append(description)
    return out


def _code_tuple(code: Dataset) -> tuple[str, str, str]:
    return str(code.CodeValue), str(code.CodingSchemeDesignator), str(code.CodeMeaning)


def build_segmentation(
    labels: sitk.Image,
    datasets: Sequence[Dataset],
    *,
    engine: str = "default",
    series_instance_uid: str | None = None,
) -> hd.seg.Segmentation:
    """A binary DICOM SEG of ``labels`` (0/1/2 on the CT's grid) over the source ``datasets``.

    Every source slice gets its frame (empty ones included), so readers that rebuild a volume
    from the SEG alone (dcmqi) get the whole CT grid back. Patient and study modules are
    copied from the source by highdicom, the Study Instance UID included.
    """
    values = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist())
    if not values <= {0, LEFT, RIGHT}:
        raise InputError(
            f"label values {sorted(values)[:10]} are not 0/1/2",
            "pass a femur label map (0 background, 1 left femur, 2 right femur)",
        )
    frames = frames_from_labels(labels, datasets)
    return hd.seg.Segmentation(
        source_images=list(datasets),
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(engine),
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="femurscreen",
        software_versions=__version__,
        device_serial_number="none",
        series_description="FemurScreen proximal femur segmentation",
        content_description="Proximal femurs (left, right) for osteoporosis screening",
        content_label="FEMURS",
        omit_empty_frames=False,
    )


__all__ = [
    "SEGMENTS",
    "SEGMENT_BY_SIDE",
    "SegmentInfo",
    "build_segmentation",
    "check_series",
    "frames_from_labels",
    "segment_descriptions",
]
