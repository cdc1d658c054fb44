"""Femur label maps <-> segments of a ``vtkMRMLSegmentationNode``.

Each side becomes one named, coloured segment coded with SNOMED CT, so that DICOM SEG export
and other Slicer modules know what it is: category "Anatomical Structure" (123037004), type
"Femur" (71341001) and laterality as the type modifier, "Left" (7771000) or "Right"
(24028007), exactly as in Slicer's DICOM master list (which lists Left/Right as femur
modifiers) and as SlicerTotalSegmentator codes femur_left/femur_right.

Reading back works on whatever the user made of the segments in the Segment Editor: a segment
belongs to a side by our tag, else by its terminology modifier, else by its name. Segments of
the same side are merged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import slicer
import vtk
from femurscreen.labels import LEFT, RIGHT, SIDE_COLORS, SIDES
from vtk.util import numpy_support

from FemurScreenLib.volume_convert import array_to_matrix, ijk_to_ras, volume_array

SIDE_TAG = "FemurScreen.Side"  # segment tag: which side the segment measures
CONTENT_HASH_ATTRIBUTE = "FemurScreen.ContentHash"  # node attribute: hash when we last wrote it
CREATED_BY_ATTRIBUTE = "FemurScreen.CreatedBy"  # node attribute: engine and version

TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"
CATEGORY = ("SCT", "123037004", "Anatomical Structure")
FEMUR = ("SCT", "71341001", "Femur")


def singleton_node(scene, class_name: str, tag: str):
    """The scene's hidden singleton node of ``class_name`` tagged ``tag``, created on first use
    (the panels' own Segment Editor and plot view nodes, apart from the other modules')."""
    node = scene.GetSingletonNode(tag, class_name)
    if node is None:
        node = scene.CreateNodeByClass(class_name)
        node.UnRegister(None)
        node.SetSingletonTag(tag)
        node.SetName(tag)
        node.SetHideFromEditors(True)
        node = scene.AddNode(node)
    return node


@dataclass(frozen=True)
class SegmentSpec:
    """How one side is shown and coded."""

    side: str
    label: int
    segment_id: str
    name: str
    color: tuple[float, float, float]
    laterality: tuple[str, str, str]  # (coding scheme, code value, meaning)


# IDs, names and codes match femurscreen.io.segfile, so a .seg.nrrd from the command line and one
# saved from Slicer describe the segments identically.
SEGMENTS: dict[str, SegmentSpec] = {
    "left": SegmentSpec(
        "left", LEFT, "femur_left", "Left proximal femur", SIDE_COLORS["left"],
        ("SCT", "7771000", "Left"),
    ),
    "right": SegmentSpec(
        "right", RIGHT, "femur_right", "Right proximal femur", SIDE_COLORS["right"],
        ("SCT", "24028007", "Right"),
    ),
}  # fmt: skip


def terminology_entry(side: str) -> str:
    """Slicer's serialised terminology entry for one side (built by Slicer's own serialiser)."""
    spec = SEGMENTS[side]
    entry = slicer.vtkSlicerTerminologyEntry()
    entry.SetTerminologyContextName(TERMINOLOGY_CONTEXT)
    entry.SetRegionContextName(REGION_CONTEXT)
    for code, target in (
        (CATEGORY, entry.GetCategoryObject()),
        (FEMUR, entry.GetTypeObject()),
        (spec.laterality, entry.GetTypeModifierObject()),
    ):
        target.SetCodingSchemeDesignator(code[0])
        target.SetCodeValue(code[1])
        target.SetCodeMeaning(code[2])
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(entry)


def set_terminology(segment, side: str) -> None:
    """Code a segment as the left or right femur (``vtkSegment.SetTerminology``, Slicer 5.8+)."""
    segment.SetTerminology(terminology_entry(side))


def oriented_mask(mask: np.ndarray, volume_node) -> slicer.vtkOrientedImageData:
    """A binary (k, j, i) mask on the volume's grid as a ``vtkOrientedImageData``."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    scalars = numpy_support.numpy_to_vtk(
        np.ascontiguousarray(mask, dtype=np.uint8).ravel(), deep=True
    )
    image.GetPointData().SetScalars(scalars)
    image.SetImageToWorldMatrix(array_to_matrix(ijk_to_ras(volume_node)))
    return image


def write_segments(
    segmentation_node, labels: np.ndarray, volume_node, sides: tuple[str, ...] = ("left", "right")
) -> dict[str, str]:
    """Replace the node's segments with one segment per requested side; side -> segment ID.

    ``labels`` is a (k, j, i) 0/1/2 array on ``volume_node``'s grid. A side whose mask is
    empty still gets an (empty) segment so that the user can paint it.
    """
    segmentation = segmentation_node.GetSegmentation()
    segmentation.RemoveAllSegments()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segmentation_node.SetNodeReferenceID(
        segmentation_node.GetReferenceImageGeometryReferenceRole(), volume_node.GetID()
    )
    segmentation_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    ids: dict[str, str] = {}
    for side in sides:
        spec = SEGMENTS[side]
        mask = labels == spec.label
        if mask.any():
            segment_id = segmentation_node.AddSegmentFromBinaryLabelmapRepresentation(
                oriented_mask(mask, volume_node), spec.name, spec.color, spec.segment_id
            )
        else:
            segment_id = segmentation.AddEmptySegment(spec.segment_id, spec.name, spec.color)
        segment = segmentation.GetSegment(segment_id)
        set_terminology(segment, side)
        segment.SetTag(SIDE_TAG, side)
        ids[side] = segment_id
    return ids


def segment_side(segment) -> str | None:
    """Which side a (possibly user-made or renamed) segment measures, or None."""
    if segment.HasTag(SIDE_TAG):
        holder = vtk.reference("")
        segment.GetTag(SIDE_TAG, holder)
        if str(holder) in SIDES:
            return str(holder)
    terminology = segment.GetTerminology() or ""
    if f"^{FEMUR[1]}^" in terminology:
        for side, spec in SEGMENTS.items():
            if f"~{spec.laterality[0]}^{spec.laterality[1]}^" in terminology:
                return side
    name = (segment.GetName() or "").lower()
    if "femur" in name or "hip" in name:
        for side in SIDES:
            if side in name.split() or name.startswith(side):
                return side
    return None


def side_segment_ids(segmentation_node) -> dict[str, list[str]]:
    """Segment IDs per side (sides without segments are absent)."""
    segmentation = segmentation_node.GetSegmentation()
    out: dict[str, list[str]] = {}
    for segment_id in segmentation.GetSegmentIDs():
        side = segment_side(segmentation.GetSegment(segment_id))
        if side is not None:
            out.setdefault(side, []).append(segment_id)
    return out


def _node_ids(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def segment_mask(segmentation_node, segment_ids: list[str], volume_node) -> np.ndarray:
    """Union of segments as a (k, j, i) bool array on the volume's grid.

    Uses Slicer's own export onto the reference volume (as ``slicer.util``'s
    ``arrayFromSegmentBinaryLabelmap`` does), then removes every node the export added to the
    scene (the temporary label map, its display node and colour table).
    """
    scene = volume_node.GetScene()
    ids = vtk.vtkStringArray()
    for segment_id in segment_ids:
        ids.InsertNextValue(segment_id)
    before = _node_ids(scene)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__FemurScreen_temp__")
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, volume_node
        )
        if not ok:
            raise RuntimeError(
                f"Slicer could not export segments {segment_ids} of "
                f"'{segmentation_node.GetName()}' onto the grid of '{volume_node.GetName()}'"
            )
        return volume_array(labelmap) > 0
    finally:
        for node_id in _node_ids(scene) - before:
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)


@dataclass(frozen=True)
class SideMasks:
    """The segmentation read back on the CT grid."""

    labels: np.ndarray  # (k, j, i) uint8, 0 / LEFT / RIGHT
    segment_ids: dict[str, list[str]]
    overlap_voxels: int  # voxels claimed by both sides (given to neither)


def read_labels(segmentation_node, volume_node) -> SideMasks:
    """The (possibly edited) segments as a 0/1/2 label array on the volume's grid."""
    shape = volume_array(volume_node).shape
    labels = np.zeros(shape, dtype=np.uint8)
    ids = side_segment_ids(segmentation_node)
    masks = {
        side: segment_mask(segmentation_node, seg_ids, volume_node) for side, seg_ids in ids.items()
    }
    for side, mask in masks.items():
        labels[mask] = SEGMENTS[side].label
    overlap = 0
    if len(masks) == 2:
        both = masks["left"] & masks["right"]
        overlap = int(both.sum())
        labels[both] = 0
    return SideMasks(labels=labels, segment_ids=ids, overlap_voxels=overlap)


def labels_hash(labels: np.ndarray) -> str:
    """A digest of a label array (shape and voxels) for change detection."""
    digest = hashlib.sha256()
    digest.update(str(labels.shape).encode())
    digest.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return digest.hexdigest()
