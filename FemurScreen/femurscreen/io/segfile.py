"""Slicer segmentation files (``.seg.nrrd``) for the femur label map, without Slicer.

A ``.seg.nrrd`` is an ordinary NRRD image plus ``key:=value`` fields that Slicer's
``vtkMRMLSegmentationStorageNode`` reads to rebuild named, coloured, terminology-coded
segments. Writing one lets a radiologist drag the result into Slicer and edit it in the
Segment Editor with the right names and colours at once, instead of importing a bare label map.

The fields below follow Slicer's own writer (``vtkMRMLSegmentationStorageNode::
WriteBinaryLabelmapRepresentation``) and reader (``ReadBinaryLabelmapRepresentation``):

- one 3D layer (``SegmentN_Layer = 0``) whose voxel values are the segments' ``LabelValue``
  (1 = patient's left femur, 2 = right), as Slicer writes non-overlapping segments;
- the image is cropped to the union of the segments' bounding boxes; where the crop starts in
  the CT's voxel grid goes into ``Segmentation_ReferenceImageExtentOffset`` and the full CT
  grid into the "Reference image geometry" conversion parameter (RAS image-to-world matrix
  followed by the extent, ``;``-separated), so Slicer places the segments on the CT's grid;
- ``SegmentN_Extent`` is each segment's bounding box in the *file's* voxel indices
  (``0 -1 0 -1 0 -1`` for an empty segment, e.g. a femur that was not found);
- ``SegmentN_Tags`` holds ``FemurScreen.Side:<side>|`` (the tag our Slicer module reads) and
  ``TerminologyEntry:<entry>|`` where ``<entry>`` has Slicer's seven
  ``~``-separated parts (context, category, type, type modifier, region context, region,
  region modifier; each code ``scheme^value^meaning``). Femur (SCT 71341001) lives in the
  "DICOM master list" context with laterality as its *type modifier* (Left SCT 7771000, Right
  SCT 24028007), not in the "3D Slicer General Anatomy list".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from femurscreen.atomic import atomic_path
from femurscreen.errors import InputError
from femurscreen.labels import LEFT, RIGHT, SIDE_COLORS

CATEGORY = "SCT^123037004^Anatomical Structure"
TYPE_FEMUR = "SCT^71341001^Femur"
LATERALITY = {"left": "SCT^7771000^Left", "right": "SCT^24028007^Right"}
CATEGORY_CONTEXT = "Segmentation category and type - DICOM master list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"

SIDE_TAG = "FemurScreen.Side"  # the tag FemurScreen's Slicer module reads a segment's side from
# (side, label value, segment ID, segment name)
SEGMENTS: tuple[tuple[str, int, str, str], ...] = (
    ("left", LEFT, "femur_left", "Left proximal femur"),
    ("right", RIGHT, "femur_right", "Right proximal femur"),
)

_EMPTY_EXTENT = (0, -1, 0, -1, 0, -1)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def terminology_entry(side: str) -> str:
    """Slicer's serialised terminology entry for the left or right femur."""
    return "~".join(
        (CATEGORY_CONTEXT, CATEGORY, TYPE_FEMUR, LATERALITY[side], REGION_CONTEXT, "^^", "^^")
    )


def _ras_geometry(image: sitk.Image) -> str:
    """Slicer's serialised image geometry: RAS IJK-to-world matrix (row-major) then extent."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = _LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=float)
    size = image.GetSize()
    extent = (0, size[0] - 1, 0, size[1] - 1, 0, size[2] - 1)
    values = [f"{float(v):.17g}" for v in matrix.ravel()] + [str(e) for e in extent]
    return "".join(v + ";" for v in values)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int, int, int] | None:
    """Bounding box of a (z, y, x) mask as a VTK extent (i0, i1, j0, j1, k0, k1)."""
    if not mask.any():
        return None
    bounds = []
    for axis in (2, 1, 0):  # x (i), y (j), z (k)
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        bounds += [int(hit[0]), int(hit[-1])]
    return tuple(bounds)  # type: ignore[return-value]


def _extent_string(extent: tuple[int, ...]) -> str:
    return " ".join(str(v) for v in extent)


def seg_nrrd_image(labels: sitk.Image) -> sitk.Image:
    """The cropped label image with all Slicer segmentation fields set as metadata."""
    array = sitk.GetArrayViewFromImage(labels)
    values = set(np.unique(array).tolist())
    if not values <= {0, LEFT, RIGHT}:
        raise InputError(
            f"label values {sorted(values)[:10]} are not 0/1/2",
            "pass a femur label map (0 background, 1 left femur, 2 right femur)",
        )
    boxes = {side: _bbox(array == value) for side, value, _, _ in SEGMENTS}
    present = [b for b in boxes.values() if b is not None]
    if present:
        union = tuple(
            min(b[i] for b in present) if i % 2 == 0 else max(b[i] for b in present)
            for i in range(6)
        )
    else:  # no femur at all: Slicer's convention is a 1x1x1 image with extent 0 0 0 0 0 0
        union = (0, 0, 0, 0, 0, 0)
    offset = (union[0], union[2], union[4])
    cropped = labels[union[0] : union[1] + 1, union[2] : union[3] + 1, union[4] : union[5] + 1]
    out = sitk.Cast(cropped, sitk.sitkUInt8)

    meta = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|Closed surface|",
        "Segmentation_ConversionParameters": (
            "Reference image geometry|"
            + _ras_geometry(labels)
            + "|Image geometry description string determining the geometry of the labelmap "
            "that is created in course of conversion.&"
        ),
        "Segmentation_ReferenceImageExtentOffset": _extent_string(offset),
    }
    for index, (side, value, segment_id, name) in enumerate(SEGMENTS):
        box = boxes[side]
        extent: tuple[int, ...]
        if box is None:
            extent = _EMPTY_EXTENT
        else:
            extent = tuple(v - offset[i // 2] for i, v in enumerate(box))
        key = f"Segment{index}_"
        meta[key + "ID"] = segment_id
        meta[key + "Name"] = name
        meta[key + "NameAutoGenerated"] = "0"
        meta[key + "Color"] = " ".join(f"{c:.6g}" for c in SIDE_COLORS[side])
        meta[key + "ColorAutoGenerated"] = "0"
        meta[key + "LabelValue"] = str(value)
        meta[key + "Layer"] = "0"
        meta[key + "Extent"] = _extent_string(extent)
        meta[key + "Tags"] = f"{SIDE_TAG}:{side}|TerminologyEntry:{terminology_entry(side)}|"
    for key, text in meta.items():
        out.SetMetaData(key, text)
    return out


def write_seg_nrrd(labels: sitk.Image, path: str | Path) -> Path:
    """Write a femur label map (0/1/2) as a Slicer ``.seg.nrrd``, atomically, gzip-compressed."""
    image = seg_nrrd_image(labels)
    path = Path(path)
    with atomic_path(path, suffix=".seg.nrrd") as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return path


def read_seg_nrrd(path: str | Path) -> sitk.Image:
    """Read a ``.seg.nrrd`` written by Slicer or by us back into a full-grid 0/1/2 label map.

    Handles the single-layer files we write and Slicer's own files when the femur segments
    share one layer; the segments named/tagged left and right femur become labels 1 and 2.
    """
    path = Path(path)
    image = sitk.ReadImage(str(path))
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            "is a multi-layer segmentation (overlapping segments)",
            "in Slicer, keep the femur segments in one layer, or export a label map",
            path,
        )
    keys = set(image.GetMetaDataKeys())
    array = sitk.GetArrayViewFromImage(image)
    out = np.zeros(array.shape, dtype=np.uint8)
    index = 0
    while f"Segment{index}_ID" in keys:
        key = f"Segment{index}_"
        value = int(image.GetMetaData(key + "LabelValue")) if key + "LabelValue" in keys else 1
        side = _segment_side(image, key, keys)
        if side is not None:
            out[array == value] = LEFT if side == "left" else RIGHT
        index += 1
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    # The file holds a crop in its true place; resampling onto the stored reference grid (same
    # voxel lattice, nearest neighbour) puts it back on the CT's full grid.
    reference = None
    if "Segmentation_ConversionParameters" in keys:
        reference = _reference_from_conversion(
            image.GetMetaData("Segmentation_ConversionParameters")
        )
    if reference is None:
        return result
    return sitk.Resample(result, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


def _segment_side(image: sitk.Image, key: str, keys: set[str]) -> str | None:
    """Side of a segment: our tag, else the words left/right in its ID, name or terminology."""
    tags = image.GetMetaData(key + "Tags") if key + "Tags" in keys else ""
    for tag in tags.split("|"):
        name, _, value = tag.partition(":")
        if name == SIDE_TAG and value in ("left", "right"):
            return value
    text = " ".join(image.GetMetaData(key + k) for k in ("ID", "Name") if key + k in keys)
    text = (text + " " + tags).lower()
    if "left" in text and "right" not in text:
        return "left"
    if "right" in text and "left" not in text:
        return "right"
    return None


def _reference_from_conversion(text: str) -> sitk.Image | None:
    """The reference grid stored in the "Reference image geometry" conversion parameter."""
    for item in text.split("&"):
        parts = item.split("|")
        if len(parts) >= 2 and parts[0] == "Reference image geometry":
            numbers = [v for v in parts[1].split(";") if v.strip()]
            if len(numbers) != 22:
                return None
            matrix = np.asarray([float(v) for v in numbers[:16]]).reshape(4, 4)
            extent = [int(v) for v in numbers[16:]]
            lps = np.linalg.inv(_LPS_TO_RAS) @ matrix[:3, :3]
            spacing = np.linalg.norm(lps, axis=0)
            direction = lps / spacing
            origin = np.linalg.inv(_LPS_TO_RAS) @ matrix[:3, 3]
            start = np.asarray(extent[0::2], dtype=float)
            size = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
            if min(size) <= 0:
                return None
            ref = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
            ref.SetSpacing([float(s) for s in spacing])
            ref.SetDirection([float(v) for v in direction.ravel()])
            ref.SetOrigin([float(v) for v in origin + lps @ start])
            return ref
    return None
