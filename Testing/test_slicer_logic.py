"""The Slicer-side Logic (FemurScreenLib) on Slicer's real MRML core (``slicer-core``).

Every node, storage node, terminology and segmentation call here is Slicer's own C++ class; the
only set-up is registering the real module logics in a real application logic (slicer_harness).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "FemurScreen"))  # FemurScreenLib, as Slicer puts it on the path
sys.path.insert(0, str(Path(__file__).resolve().parent))

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
vtk = pytest.importorskip("vtk")

from femurscreen.labels import CLASSES, LEFT, RIGHT, SIDE_COLORS  # noqa: E402
from femurscreen.resources import resource_dir  # noqa: E402
from femurscreen.segmentation.pipeline import QUALITY_EDITED, REVIEW_QUALITY  # noqa: E402
from FemurScreenLib import segments as seg_io  # noqa: E402
from FemurScreenLib import tables, volume_convert  # noqa: E402
from FemurScreenLib.background import BackgroundProcess  # noqa: E402
from FemurScreenLib.logic import ENGINE_CHOICES, FemurScreenLogic, quality_text  # noqa: E402
from slicer_harness import start_slicer_core  # noqa: E402

# ---------------------------------------------------------------------------- fixtures


def _load_volume(scene, path: Path, name: str = "ct"):
    """Read a file into a scalar volume node with Slicer's own reader."""
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(volume), f"Slicer could not read {path}"
    return volume


def _lps_corners(image: sitk.Image) -> np.ndarray:
    size = image.GetSize()
    return np.array(
        [
            image.TransformIndexToPhysicalPoint((i, j, k))
            for i in (0, size[0] - 1)
            for j in (0, size[1] - 1)
            for k in (0, size[2] - 1)
        ]
    )


def _assert_same_world_image(actual: sitk.Image, expected: sitk.Image) -> None:
    """Same voxels at the same world positions, whatever the voxel order.

    Slicer's reader may reorder a mirrored (left-handed) grid into a right-handed one, so the
    arrays are compared after mapping one onto the other's grid (the voxel centres coincide,
    so nearest-neighbour resampling is exact).
    """
    assert actual.GetSize() == expected.GetSize()
    np.testing.assert_allclose(
        np.sort(np.round(_lps_corners(actual), 4), axis=0),
        np.sort(np.round(_lps_corners(expected), 4), axis=0),
        atol=1e-3,
    )
    mapped = sitk.Resample(actual, expected, sitk.Transform(), sitk.sitkNearestNeighbor, -9999)
    assert np.array_equal(sitk.GetArrayViewFromImage(mapped), sitk.GetArrayViewFromImage(expected))


def _oblique_image(flip: bool) -> sitk.Image:
    """A small image with a rotated (and optionally mirrored) direction and a gradient."""
    rng = np.random.default_rng(3)
    array = rng.integers(-1000, 1500, size=(7, 9, 11)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    a, b = math.radians(25), math.radians(-10)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    direction = rz @ rx
    if flip:
        direction = direction @ np.diag([1.0, -1.0, 1.0])  # a left-handed (mirrored) grid
    image.SetDirection(tuple(direction.ravel()))
    image.SetSpacing((0.7, 1.3, 2.5))
    image.SetOrigin((12.5, -40.25, 301.0))
    return image


# ---------------------------------------------------------------------------- geometry


def test_real_ct_converts_exactly_both_ways(scene, real_ct_path):
    volume = _load_volume(scene, real_ct_path)
    reference = sitk.ReadImage(str(real_ct_path))

    image = volume_convert.volume_to_image(volume)
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(reference))

    back = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "back")
    volume_convert.image_to_volume(image, back)
    np.testing.assert_allclose(
        volume_convert.ijk_to_ras(back), volume_convert.ijk_to_ras(volume), atol=1e-6
    )
    assert np.array_equal(volume_convert.volume_array(back), volume_convert.volume_array(volume))


@pytest.mark.parametrize("flip", [False, True], ids=["oblique", "oblique-mirrored"])
def test_oblique_geometry_agrees_with_slicer_reader_and_writer(scene, tmp_path, flip):
    image = _oblique_image(flip)
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(image, str(path))

    # Slicer's reader -> our conversion gives back the file's voxels and world corners.
    volume = _load_volume(scene, path)
    converted = volume_convert.volume_to_image(volume)
    _assert_same_world_image(converted, image)

    # The corners in RAS from Slicer's own IJK-to-RAS matrix are the LPS corners, x/y negated.
    ras = volume_convert.corner_points_world(volume_convert.ijk_to_ras(volume), image.GetSize())
    np.testing.assert_allclose(ras * [-1, -1, 1], _lps_corners(converted), atol=1e-4)

    # Our conversion -> a new node -> Slicer's writer -> SimpleITK: the same image again.
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "written")
    volume_convert.image_to_volume(image, node)
    out = tmp_path / "written.nrrd"
    writer = slicer.vtkMRMLVolumeArchetypeStorageNode()
    writer.SetFileName(str(out))
    assert writer.WriteData(node)
    _assert_same_world_image(sitk.ReadImage(str(out)), image)
    # A node made by our conversion holds the image's own voxel order and directions.
    np.testing.assert_allclose(
        volume_convert.ijk_to_ras(node)[:3, :3] / image.GetSpacing(),
        np.diag([-1, -1, 1]) @ np.array(image.GetDirection()).reshape(3, 3),
        atol=1e-9,
    )


def test_vector_volume_is_refused_with_advice(scene):
    volume = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    data = vtk.vtkImageData()
    data.SetDimensions(4, 4, 4)
    data.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    volume.SetAndObserveImageData(data)
    from femurscreen.errors import InputError

    with pytest.raises(InputError, match="grey-scale CT"):
        volume_convert.volume_to_image(volume)


# ---------------------------------------------------------------------------- segments


def _box_labels(shape) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    k, j, i = shape
    labels[k // 4 : k // 2, j // 3 : 2 * j // 3, i // 10 : i // 3] = RIGHT  # low i = patient right
    labels[k // 4 : k // 2, j // 3 : 2 * j // 3, 2 * i // 3 : 9 * i // 10] = LEFT
    return labels


def _segmentation_with_boxes(scene, volume, sides=("left", "right")):
    logic = FemurScreenLogic(scene)
    labels = _box_labels(volume_convert.volume_array(volume).shape)
    info = {"engine": "test", "sides": {s: {"status": "ok", "flags": []} for s in sides}}
    node = logic.apply_labels(volume, labels, sides, info)
    return logic, node, labels


def test_segments_are_named_coloured_and_coded(scene, real_ct_path):
    volume = _load_volume(scene, real_ct_path)
    _, node, labels = _segmentation_with_boxes(scene, volume)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    for side, code in (("left", "7771000"), ("right", "24028007")):
        segment = segmentation.GetSegment(seg_io.SEGMENTS[side].segment_id)
        assert segment.GetName() == f"{side.capitalize()} proximal femur"
        np.testing.assert_allclose(segment.GetColor(), SIDE_COLORS[side], atol=1e-6)
        entry = slicer.vtkSlicerTerminologyEntry()
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(
            segment.GetTerminology(), entry
        )
        assert entry.GetTerminologyContextName() == seg_io.TERMINOLOGY_CONTEXT
        assert entry.GetCategoryObject().GetCodeValue() == "123037004"
        assert entry.GetTypeObject().GetCodingSchemeDesignator() == "SCT"
        assert entry.GetTypeObject().GetCodeValue() == "71341001"
        assert entry.GetTypeModifierObject().GetCodeValue() == code
        assert seg_io.segment_side(segment) == side
    # The segments are exactly the label map, read back on the CT grid.
    read = seg_io.read_labels(node, volume)
    assert np.array_equal(read.labels, labels)
    assert read.overlap_voxels == 0
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is volume


def test_only_requested_sides_become_segments(scene, real_ct_path):
    volume = _load_volume(scene, real_ct_path)
    _, node, labels = _segmentation_with_boxes(scene, volume, sides=("right",))
    assert node.GetSegmentation().GetNumberOfSegments() == 1
    read = seg_io.read_labels(node, volume)
    assert np.array_equal(read.labels, np.where(labels == RIGHT, RIGHT, 0))


def test_user_made_segments_are_recognised_by_terminology_or_name(scene, real_ct_path):
    volume = _load_volume(scene, real_ct_path)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "manual")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    labels = _box_labels(volume_convert.volume_array(volume).shape)
    by_name = node.AddSegmentFromBinaryLabelmapRepresentation(
        seg_io.oriented_mask(labels == LEFT, volume), "left femur (redrawn)", (1.0, 0.0, 0.0)
    )
    by_code = node.AddSegmentFromBinaryLabelmapRepresentation(
        seg_io.oriented_mask(labels == RIGHT, volume), "Segment_2", (0.0, 1.0, 0.0)
    )
    node.GetSegmentation().GetSegment(by_code).SetTerminology(seg_io.terminology_entry("right"))
    node.GetSegmentation().AddEmptySegment("", "bladder")
    assert seg_io.side_segment_ids(node) == {"left": [by_name], "right": [by_code]}
    assert np.array_equal(seg_io.read_labels(node, volume).labels, labels)


def test_edits_through_slicer_util_are_detected_and_read_back(scene, real_ct_path):
    volume = _load_volume(scene, real_ct_path)
    logic, node, labels = _segmentation_with_boxes(scene, volume)
    assert not logic.is_edited(node)
    nodes_before = scene.GetNumberOfNodes()

    segment_id = seg_io.SEGMENTS["right"].segment_id
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, volume)
    assert np.array_equal(mask > 0, labels == RIGHT)
    rows = np.flatnonzero(mask.any(axis=(1, 2)))
    mask[rows[0] : rows[0] + 3] = 0  # erase a slab of three slices
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, segment_id, volume)

    assert logic.is_edited(node)
    read = seg_io.read_labels(node, volume).labels
    assert (read == RIGHT).sum() == (mask > 0).sum() < (labels == RIGHT).sum()
    assert np.array_equal(read == LEFT, labels == LEFT)
    # Reading never leaves temporary nodes behind.
    assert scene.GetNumberOfNodes() <= nodes_before + 2  # util's own temporary display node


def test_seg_nrrd_export_rereads_with_slicer_and_with_the_core(scene, real_ct_path, tmp_path):
    volume = _load_volume(scene, real_ct_path)
    logic, node, labels = _segmentation_with_boxes(scene, volume)
    path = logic.export_segmentation(node, tmp_path / "femur.seg.nrrd")
    assert path.exists()

    again = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "again")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(again)
    segmentation = again.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    for side in ("left", "right"):
        spec = seg_io.SEGMENTS[side]
        segment = segmentation.GetSegment(spec.segment_id)
        assert segment.GetName() == spec.name
        assert segment.GetTerminology() == seg_io.terminology_entry(side)
        np.testing.assert_allclose(segment.GetColor(), spec.color, atol=1e-5)
    assert np.array_equal(seg_io.read_labels(again, volume).labels, labels)

    from femurscreen.io.segfile import read_seg_nrrd

    core_labels = read_seg_nrrd(path)
    assert core_labels.GetSize() == volume_convert.volume_to_image(volume).GetSize()
    assert np.array_equal(sitk.GetArrayViewFromImage(core_labels), labels)


def test_core_seg_nrrd_file_loads_in_slicer_as_the_module_writes_it(scene, real_ct_path, tmp_path):
    """The CLI's .seg.nrrd (written without Slicer) is what Slicer's reader expects."""
    from femurscreen.io.segfile import write_seg_nrrd

    volume = _load_volume(scene, real_ct_path)
    ct = volume_convert.volume_to_image(volume)
    labels = _box_labels(sitk.GetArrayViewFromImage(ct).shape)
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(ct)
    path = write_seg_nrrd(label_image, tmp_path / "core.seg.nrrd")

    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "from-core")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    for side in ("left", "right"):
        segment = node.GetSegmentation().GetSegment(seg_io.SEGMENTS[side].segment_id)
        assert segment is not None
        assert segment.GetName() == seg_io.SEGMENTS[side].name
        assert segment.GetTerminology() == seg_io.terminology_entry(side)
        assert seg_io.segment_side(segment) == side
    assert np.array_equal(seg_io.read_labels(node, volume).labels, labels)


# ---------------------------------------------------------------------------- tables


def test_tables_and_chart_have_the_expected_columns(scene):
    rows = [
        {"case_id": "c", "side": "right", "status": "ok", "error": "", "f_a": 1.5, "f_b": 2},
        {"case_id": "c", "side": "left", "status": "ok", "error": "", "f_a": 3.0, "f_b": -1},
    ]
    features = tables.features_table(scene, rows)
    assert [features.GetColumnName(i) for i in range(features.GetNumberOfColumns())] == [
        "feature",
        "right",
        "left",
    ]
    assert features.GetNumberOfRows() == 2
    assert features.GetTable().GetValue(0, 2).ToDouble() == 3.0
    assert features.GetLocked()

    results = [
        {"side": "right", "p_normal": 0.2, "p_osteopenia": 0.3, "p_osteoporosis": 0.5},
        {"side": "left", "p_normal": 0.6, "p_osteopenia": 0.3, "p_osteoporosis": 0.1},
    ]
    table = tables.results_table(scene, results)
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == [
        key for key, _ in tables.RESULT_COLUMNS
    ]
    probabilities, chart = tables.probability_chart(scene, results)
    assert probabilities.GetNumberOfRows() == len(CLASSES)
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    series = chart.GetNthPlotSeriesNode(0)
    assert series.GetPlotType() == series.PlotTypeBar
    assert series.GetYColumnName() == "right"
    np.testing.assert_allclose(series.GetColor(), SIDE_COLORS["right"], atol=1e-6)
    # Reusing the nodes replaces the series instead of piling them up.
    n_series = scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode")
    tables.probability_chart(scene, results[:1], probabilities, chart)
    assert chart.GetNumberOfPlotSeriesNodes() == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == n_series - 1


def _column(table_node, name: str) -> list:
    """A results/features table column as Python values (NaN for an empty number)."""
    column = table_node.GetTable().GetColumnByName(name)
    assert column is not None, name
    return [column.GetVariantValue(i).ToString() if column.IsA("vtkStringArray")
            else column.GetValue(i) for i in range(column.GetNumberOfTuples())]  # fmt: skip


def test_results_table_shows_t_scores_beside_the_probabilities(scene):
    """The CT-derived T-scores and WHO class sit in the results table next to P(class), titled
    as an estimate; a side whose density was not measured shows them empty, and the density
    numbers never appear as features."""
    from FemurScreenLib.logic import density_text, display_row

    result = {
        "right": {"status": "ok", "graded": True, "probabilities": {c: 1 / 3 for c in CLASSES}},
        "left": {"status": "implant", "graded": False, "reason": "metal implant"},
        "bmd": {
            "calibration": {"status": "ok"},
            "right": {"status": "ok", "fn_abmd_g_cm2": 0.61, "th_abmd_g_cm2": None,
                      "fn_t_score": -2.07, "th_t_score": None, "who_class": "osteopenia",
                      "t_score_sd": 0.37, "flags": []},
            "left": {"status": "implant", "reason": "metal inside the femur: not graded",
                     "fn_t_score": None, "who_class": None},
        },
    }  # fmt: skip
    rows = [display_row(s, result[s], result["bmd"][s]) for s in ("right", "left")]
    table = tables.results_table(scene, rows)
    names = [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())]
    assert names.index("fn_t_score") == names.index("p_osteoporosis") + 1
    assert "not DXA" in table.GetColumnTitle("fn_t_score")
    fn = _column(table, "fn_t_score")
    assert fn[0] == pytest.approx(-2.07) and math.isnan(fn[1])
    assert math.isnan(_column(table, "th_t_score")[0])
    assert _column(table, "who_class") == ["osteopenia", ""]
    assert density_text("right", result) == (
        "T-score neck -2.1 ± 0.4, total hip -, WHO osteopenia (CT-derived estimate, not DXA)"
    )
    assert density_text("left", result).startswith("CT-derived estimate, not DXA: not measured")
    refused = {**result, "bmd": {**result["bmd"], "calibration": {"status": "refused",
               "reason": "no fat peak"}, "right": {"status": "calibration_refused"}}}  # fmt: skip
    assert "calibration refused (no fat peak)" in density_text("right", refused)
    assert density_text("right", {"right": result["right"]}) == ""  # no density block at all
    features = tables.features_table(
        scene, [{"side": "right", "f_a": 1.0, "fn_t_score": -2.07, "fn_abmd_g_cm2": 0.61}]
    )
    assert _column(features, "feature") == ["f_a"]


def test_results_table_and_panel_line_show_the_mask_check(scene):
    """The results table's "Mask check" column holds each side's quality (empty when there is
    none), and the panel's line says in words what the number, or its absence, means."""
    from FemurScreenLib.logic import display_row

    result = {
        "right": {"status": "ok", "graded": True, "quality": 0.572,
                  "quality_method": "dice_with_vbnet", "flags": ["review_segmentation"]},
        "left": {"status": "implant", "graded": False, "quality": 0.912,
                 "quality_method": "dice_with_vbnet", "flags": ["implant"]},
    }  # fmt: skip
    rows = [display_row(s, result[s]) for s in ("right", "left")]
    table = tables.results_table(scene, rows)
    assert "two engines" in table.GetColumnTitle("seg_quality")
    assert _column(table, "seg_quality") == [pytest.approx(0.572), pytest.approx(0.912)]
    assert quality_text("right", result).startswith("Mask check: check this mask")
    assert "0.57" in quality_text("right", result)
    assert quality_text("left", result) == (
        "Mask check: engines agree: Dice 0.91 (with the vbnet engine)"
    )
    missing = {"right": {"status": "ok", "quality": None,
                         "quality_method": "dice_with_vbnet_unavailable"}}  # fmt: skip
    assert "vbnet engine is not available here" in quality_text("right", missing)
    edited = {"right": {"status": "ok", "quality": None, "quality_method": QUALITY_EDITED}}
    assert "edited by hand" in quality_text("right", edited)
    assert "turned off" in quality_text("right", {"right": {"status": "ok"}})
    assert quality_text("left", {"left": {"status": "not_found"}}) == ""  # no mask, no check
    empty = tables.results_table(scene, [display_row("right", missing["right"])])
    assert math.isnan(_column(empty, "seg_quality")[0])


def test_parameter_node_is_a_singleton_with_the_module_name(scene):
    logic = FemurScreenLogic(scene)
    node = logic.getParameterNode()
    assert node is logic.getParameterNode()
    assert node.GetAttribute("ModuleName") == "FemurScreen"
    assert node.IsA("vtkMRMLScriptedModuleNode")


def test_state_survives_scene_save_and_reload(core, real_ct_path, tmp_path):
    """Parameter node, segmentation info and the edit-tracking hash are saved with the scene."""
    scene = core.scene
    volume = _load_volume(scene, real_ct_path)
    logic, node, labels = _segmentation_with_boxes(scene, volume)
    parameters = logic.getParameterNode()
    parameters.SetParameter("engine", "classical")
    parameters.SetNodeReferenceID("outputSegmentation", node.GetID())
    scene.SetRootDirectory(str(tmp_path))
    for storable, name in ((volume, "ct.nrrd"), (node, "femur.seg.nrrd")):
        storable.AddDefaultStorageNode()
        storable.GetStorageNode().SetFileName(str(tmp_path / name))
        assert storable.GetStorageNode().WriteData(storable)
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    core.close()

    reloaded = start_slicer_core()
    reloaded.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert reloaded.scene.Connect()
    logic2 = FemurScreenLogic(reloaded.scene)
    parameters2 = logic2.getParameterNode()
    assert reloaded.scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1
    assert parameters2.GetParameter("engine") == "classical"
    node2 = parameters2.GetNodeReference("outputSegmentation")
    assert node2.GetName() == node.GetName()
    assert logic2.segmentation_info(node2)["engine"] == "test"
    assert not logic2.is_edited(node2)
    volume2 = logic2.reference_volume(node2)
    assert np.array_equal(seg_io.read_labels(node2, volume2).labels, labels)
    reloaded.close()
    core.activate()


def test_model_location_matches_the_core():
    from femurscreen.classifier import predict
    from FemurScreenLib.logic import DEMO_MODEL

    assert tuple(predict.DEMO_MODEL) == DEMO_MODEL


def test_engine_choices_match_the_core():
    from femurscreen.segmentation import ENGINES

    names = set(ENGINES) if not isinstance(ENGINES, dict) else set(ENGINES.keys())
    assert set(ENGINE_CHOICES) - {"default"} <= names


# ---------------------------------------------------------------------------- background


def test_background_process_streams_output_and_cancel_kills_the_tree():
    psutil = pytest.importorskip("psutil")
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
        "print('working 50%', file=sys.stderr, flush=True)\n"
        "time.sleep(120)\n"
    )
    process = BackgroundProcess([sys.executable, "-c", script]).start()
    deadline = time.monotonic() + 30
    while not process.stdout and time.monotonic() < deadline:
        process.poll()
        time.sleep(0.05)
    grandchild = int(process.stdout.split()[0])
    parent = process.proc.pid
    assert process.running
    process.cancel()
    assert process.wait(timeout=30) < 0
    assert process.cancelled
    for pid in (parent, grandchild):
        with contextlib.suppress(psutil.NoSuchProcess):
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_background_process_reports_exit_code_and_streams():
    code = "import sys; print('{\"a\": 1}'); print('oops', file=sys.stderr); sys.exit(3)"
    process = BackgroundProcess([sys.executable, "-c", code]).start()
    assert process.wait(timeout=30) == 3
    assert json.loads(process.stdout) == {"a": 1}
    assert process.stderr == "oops"


# ---------------------------------------------------------------------------- dependencies


def test_dependency_check_reads_metadata_only():
    from FemurScreenLib import dependencies

    present = dependencies.Requirement("numpy", ">=1.0", "test")
    too_new = dependencies.Requirement("numpy", ">=999", "test")
    absent = dependencies.Requirement("femurscreen-no-such-package", ">=1", "test")
    missing = dependencies.missing([present, too_new, absent])
    assert [m.requirement for m in missing] == [too_new, absent]
    assert missing[0].installed == dependencies.installed_version("numpy")
    assert missing[1].installed is None
    assert dependencies.satisfies("2.13.0+cpu", ">=2.1")
    assert "torch" not in {r.name for r in dependencies.requirements_for("classical")}


def test_declined_installation_installs_nothing():
    from FemurScreenLib import dependencies

    calls = []
    needed = [dependencies.Missing(dependencies.REQUIREMENTS[0], None)]
    with pytest.raises(dependencies.InstallError, match="declined"):
        dependencies.install(needed, confirm=lambda q, d: False, pip_install=calls.append)
    assert calls == []
    question, details = dependencies.confirmation_text(
        [dependencies.Missing(r, None) for r in dependencies.REQUIREMENTS]
    )
    assert "pyradiomics" in details and "Radiomics" in details and "PyTorch" in details


# ---------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def segmented(core, real_ct_path):
    """The real sample CT segmented by the real core, in the module's scene."""
    volume = _load_volume(core.scene, real_ct_path, "sample CT")
    logic = FemurScreenLogic(core.scene)
    started = time.perf_counter()
    node = logic.process(volume)
    return logic, volume, node, time.perf_counter() - started


def test_process_writes_a_new_coded_segmentation_of_the_real_ct(segmented, real_ct_path):
    logic, volume, node, _seconds = segmented
    assert node.GetName().startswith("sample CT femur")
    ids = seg_io.side_segment_ids(node)
    assert set(ids) == {"left", "right"}
    read = seg_io.read_labels(node, volume)
    assert (read.labels == LEFT).any() and (read.labels == RIGHT).any()
    # Patient's left is world +x in LPS, i.e. -x in Slicer's RAS.
    ras = volume_convert.ijk_to_ras(volume)
    centres = {}
    for value in (LEFT, RIGHT):
        k, j, i = np.nonzero(read.labels == value)
        centres[value] = (ras @ np.array([i.mean(), j.mean(), k.mean(), 1.0]))[0]
    assert centres[LEFT] < centres[RIGHT]
    info = logic.segmentation_info(node)
    assert set(info["sides"]) == {"left", "right"}
    assert not logic.is_edited(node)
    # The quality signal is on by default: a Dice with the VB-Net per side, or, where torch is
    # missing (.venv-312), "unavailable" with no number; never a failed segmentation.
    for side in ("left", "right"):
        found = info["sides"][side]
        if importlib.util.find_spec("torch") is None:
            assert found["quality"] is None
            assert found["quality_method"] == "dice_with_vbnet_unavailable"
        else:
            assert found["quality_method"] == "dice_with_vbnet"
            assert 0.0 <= found["quality"] <= 1.0
            low = found["quality"] < REVIEW_QUALITY
            assert ("review_segmentation" in found["flags"]) == low


def test_compute_then_edit_changes_features_and_probabilities(segmented, tmp_path):
    logic, volume, node, _ = segmented
    first = logic.compute(volume, node)
    graded = [s for s in ("left", "right") if first.result[s]["graded"]]
    assert graded, first.result
    assert first.results_table.GetNumberOfRows() == 2
    assert first.chart.GetNumberOfPlotSeriesNodes() == len(graded)
    assert first.features_table.GetNumberOfColumns() == 1 + len(graded)
    assert first.features_table.GetNumberOfRows() >= len(logic.model_summary()["features"])
    for side in graded:
        p = first.result[side]["probabilities"]
        assert math.isclose(sum(p.values()), 1.0, abs_tol=1e-6)
    _assert_density_shown(first)
    info = logic.segmentation_info(node)
    for name in ("left", "right"):  # the segmentation's quality, carried into the result
        assert first.result[name]["quality"] == info["sides"][name]["quality"]
        assert first.result[name]["quality_method"] == info["sides"][name]["quality_method"]
    _assert_quality_shown(first)

    side = graded[0]
    segment_id = seg_io.side_segment_ids(node)[side][0]
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, volume)
    # An annotator's correction that leaves a femur: trim the greater trochanter (mask voxels
    # within 20 mm of the side's most lateral voxel). Erasing the head instead is refused by the
    # wrong-bone guard (test_an_edit_that_leaves_no_femur_is_not_graded).
    kji = np.argwhere(mask)
    centre_i = (mask.shape[2] - 1) / 2.0
    tip = kji[np.argmax(np.abs(kji[:, 2] - centre_i))]
    spacing_kji = np.array(volume.GetSpacing())[::-1]
    near = np.linalg.norm((kji - tip) * spacing_kji, axis=1) <= 20.0
    mask[tuple(kji[near].T)] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, segment_id, volume)
    assert logic.is_edited(node)

    second = logic.compute(volume, node)
    assert second.features_table is first.features_table  # the same nodes, updated in place
    before = next(r for r in first.rows if r["side"] == side)
    after = next(r for r in second.rows if r["side"] == side)
    changed = [k for k in logic.model_summary()["features"] if before[k] != after[k]]
    assert changed
    assert second.result[side]["volume_ml"] < first.result[side]["volume_ml"]
    p1, p2 = first.result[side]["probabilities"], second.result[side]["probabilities"]
    assert any(not math.isclose(p1[c], p2[c], abs_tol=1e-9) for c in CLASSES)
    _assert_density_shown(second)  # the density was measured again on the edited mask
    # The edited mask is the annotator's now: no engine's agreement number describes it; the
    # side nobody touched keeps its engine's number and flag.
    assert second.result[side]["quality"] is None
    assert second.result[side]["quality_method"] == QUALITY_EDITED
    assert "review_segmentation" not in second.result[side]["flags"]
    assert "edited by hand" in quality_text(side, second.result)
    other = "left" if side == "right" else "right"
    for key in ("quality", "quality_method"):
        assert second.result[other][key] == first.result[other][key] == info["sides"][other][key]
    assert ("review_segmentation" in second.result[other]["flags"]) == (
        "review_segmentation" in first.result[other]["flags"]
    )
    _assert_quality_shown(second)

    # Exports: CSV (one row per side), result.json in the CLI's format, the HTML report.
    csv_path = logic.export_csv(second, tmp_path / "femur.csv")
    import pandas as pd

    frame = pd.read_csv(csv_path)
    assert list(frame["side"]) == ["left", "right"]
    by_side = frame.set_index("side")
    assert pd.isna(by_side.loc[side, "seg_quality"])
    assert by_side.loc[side, "seg_quality_method"] == QUALITY_EDITED
    if second.result[other]["quality"] is not None:
        assert by_side.loc[other, "seg_quality"] == pytest.approx(second.result[other]["quality"])
    for side, t in zip(frame["side"], frame["fn_t_score"], strict=True):
        expected = second.result["bmd"][side]["fn_t_score"]
        assert (math.isnan(t) and expected is None) or t == pytest.approx(expected)
    data = json.loads(
        logic.export_json(second, tmp_path / "result.json").read_text(encoding="utf-8")
    )
    assert data["format"] == "femurscreen-result" and data["demo"] == second.demo
    assert data["models"]["segmentation"]["edited_in_slicer"] is True
    assert first.result["models"]["segmentation"]["edited_in_slicer"] is False
    if logic.report_available():
        html = logic.export_report(second, tmp_path / "report.html").read_text(encoding="utf-8")
        assert "<html" in html.lower()


def test_an_edit_that_leaves_no_femur_is_not_graded(segmented):
    """An edit that leaves no valid femur on a side: that side reports why, nothing raises."""
    logic, volume, _, _ = segmented
    node = logic.process(volume, quality=False)
    first = logic.compute(volume, node)
    side = next(s for s in ("right", "left") if first.result[s]["graded"])
    segment_id = seg_io.side_segment_ids(node)[side][0]
    broken = slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, volume)
    rows = np.flatnonzero(broken.any(axis=(1, 2)))
    broken[rows[len(rows) // 2] :] = 0  # head and neck gone
    slicer.util.updateSegmentBinaryLabelmapFromArray(broken, node, segment_id, volume)
    third = logic.compute(volume, node)
    assert not third.result[side]["graded"]
    assert third.result[side]["reason"].startswith("after editing")
    # The density follows the guard: no T-score for a side that is no longer a femur.
    assert first.result["bmd"][side]["status"] == "ok"
    assert third.result["bmd"][side]["status"] != "ok"
    row = ["left", "right"].index(side)
    assert math.isnan(_column(third.results_table, "fn_t_score")[row])
    _assert_density_shown(third)


def _assert_quality_shown(shown) -> None:
    """The results table's mask-check column is the result's quality, side by side."""
    sides = _column(shown.results_table, "side")
    for side, value in zip(sides, _column(shown.results_table, "seg_quality"), strict=True):
        expected = shown.result[side]["quality"]
        assert (math.isnan(value) and expected is None) or value == pytest.approx(expected)
    assert "seg_quality" not in _column(shown.features_table, "feature")


def _assert_density_shown(shown) -> None:
    """The results table's T-score columns are the result's bmd block, side by side."""
    bmd = shown.result["bmd"]
    sides = [_column(shown.results_table, "side")][0]
    for key in ("fn_t_score", "th_t_score"):
        for side, value in zip(sides, _column(shown.results_table, key), strict=True):
            expected = bmd[side][key] if bmd[side]["status"] == "ok" else None
            assert (math.isnan(value) and expected is None) or value == pytest.approx(expected)
    whos = _column(shown.results_table, "who_class")
    assert whos == [bmd[s]["who_class"] or "" if bmd[s]["status"] == "ok" else "" for s in sides]
    features = _column(shown.features_table, "feature")
    assert not {"fn_t_score", "who_class", "fn_abmd_g_cm2"} & set(features)


def test_background_segmentation_matches_in_process(segmented):
    logic, volume, _, _ = segmented
    node = logic.process(volume)  # fresh: other tests edit the module's shared segmentation
    job = logic.start_segmentation(volume, sides=("right",))
    assert job.wait(timeout=300) == 0, job.error_message()
    background = logic.finish_segmentation(job)
    assert not job.temp_dir.exists()
    assert background is not node
    assert set(seg_io.side_segment_ids(background)) == {"right"}
    ours = seg_io.read_labels(background, volume).labels
    reference = seg_io.read_labels(node, volume).labels
    assert np.array_equal(ours == RIGHT, reference == RIGHT)
    # the child process ran the quality check too (segment --quality), with the same answer
    there = logic.segmentation_info(background)["sides"]["right"]
    here = logic.segmentation_info(node)["sides"]["right"]
    assert there["quality_method"] == here["quality_method"] is not None
    if here["quality"] is None:  # no second engine here (.venv-312)
        assert there["quality"] is None
    else:
        assert there["quality"] == pytest.approx(here["quality"], abs=2e-3)


@pytest.mark.parametrize("kind", ["segmentation", "grading"])
def test_background_jobs_can_be_cancelled(segmented, kind):
    logic, volume, node, _ = segmented
    if kind == "segmentation":
        job, finish = logic.start_segmentation(volume), logic.finish_segmentation
        time.sleep(0.5)
    else:
        job, finish = logic.start_grading(volume, node), logic.finish_grading
    job.cancel()
    job.wait(timeout=30)
    assert job.cancelled
    from femurscreen.errors import FemurScreenError

    with pytest.raises(FemurScreenError, match="cancelled"):
        finish(job)
    assert not job.temp_dir.exists()


def test_child_environment_puts_the_core_on_the_path():
    from FemurScreenLib.logic import CORE_DIR, child_environment

    env = child_environment()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(CORE_DIR)
    assert (CORE_DIR / "femurscreen" / "__init__.py").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="torch not installed (.venv-312: PyPI's torch 2.13.0 for 3.12 is the CUDA build)",
)
def test_demo_segmentation_weights_are_labelled_in_the_node_and_the_result(core, real_ct_path):
    """A background VB-Net run: the node's info carries the DEMO status the panel shows."""
    phantom = resource_dir() / "SampleData" / "femurscreen_phantom_ct.nii.gz"
    volume = _load_volume(core.scene, phantom, "phantom for vbnet")
    logic = FemurScreenLogic(core.scene)
    job = logic.start_segmentation(volume, engine="vbnet")
    assert job.wait(timeout=300) == 0, job.error_message()
    node = logic.finish_segmentation(job)
    info = logic.segmentation_info(node)
    assert info["engine"] == "vbnet"
    assert info["model"]["demo"] is True and info["model"]["demo_notice"].startswith("DEMO")
    # The classical engine misses the heads of this 3 mm phantom (the wrong-bone guard then
    # refuses its trochanter-only masks: test_wrong_bone.py), so its run uses the real CT.
    real = _load_volume(core.scene, real_ct_path, "real CT for classical")
    plain = logic.process(real, engine="classical", quality=False)
    assert logic.segmentation_info(plain)["model"] == {}  # no learned weights, nothing to flag


# ---------------------------------------------------------------------------- one grading path


def _comparable(result: dict) -> dict:
    """A result without what differs between two runs of the same case (time stamps)."""
    from femurscreen.values import json_safe

    out = json_safe(result)
    out.pop("created_utc", None)
    out.pop("timing_s", None)
    return out


def test_background_grading_equals_in_process_on_the_real_ct(segmented):
    """The GUI's grading (a child process) gives exactly what compute() gives in-process."""
    logic, volume, _, _ = segmented
    node = logic.process(volume, quality=False)  # fresh: others edit the shared segmentation
    here = logic.compute(volume, node)
    job = logic.start_grading(volume, node)
    assert job.wait(timeout=300) == 0, job.error_message()
    assert job.progress == 1.0 and "grading" in job.message
    there = logic.finish_grading(job)
    assert not job.temp_dir.exists()
    assert _comparable(there.result) == _comparable(here.result)
    assert there.result["right"]["graded"] and there.result["left"]["status"] == "implant"
    from femurscreen.values import json_safe

    assert json_safe(there.rows) == json_safe(here.rows)
    # The same table nodes are filled as by compute (views update in place).
    assert there.features_table is here.features_table
    assert there.results_table.GetNumberOfRows() == 2


def test_slicer_and_cli_grade_the_same_labels_identically(segmented, tmp_path):
    """Slicer's Logic and screen() both call femurscreen.grading.grade: same labels, same
    features and probabilities (no copy of the sequence that could drift)."""
    from femurscreen import grading, screening
    from femurscreen.classifier import load_model
    from femurscreen.segmentation import segment

    logic, volume, _, _ = segmented
    ct = volume_convert.volume_to_image(volume)
    seg = segment(ct)
    node = logic.apply_labels(
        volume,
        sitk.GetArrayFromImage(seg.labels),
        ("left", "right"),
        {
            "engine": str(seg.engine),
            "sides": {
                s: {"status": v.status, "flags": list(v.flags)} for s, v in seg.sides.items()
            },
        },
    )
    slicer_result = logic.compute(volume, node).result
    core = grading.grade(
        ct,
        seg.labels,
        sides=seg.sides,
        model=load_model(logic.model_dir_path()),
        label=screening.fingerprint(ct),
        source="fingerprint",
        segmentation=grading.segmentation_info(seg),
    ).result
    for side in ("left", "right"):
        assert slicer_result[side]["status"] == core[side]["status"]
        assert slicer_result[side]["probabilities"] == core[side]["probabilities"]
        assert slicer_result[side]["density"] == core[side]["density"]
    assert slicer_result["case"] == core["case"]


# ---------------------------------------------------------------------------- panel state


def test_plot_view_keeps_its_own_chart(scene):
    """Other charts shown in Slicer must not replace the panel's probability chart."""
    logic = FemurScreenLogic(scene)
    view = logic.plot_view_node()
    assert view.IsA("vtkMRMLPlotViewNode")
    assert view.GetDoPropagatePlotChartSelection() is False
    assert logic.plot_view_node() is view  # one per scene
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode") == 1
    editor = logic.segment_editor_node()
    assert editor.IsA("vtkMRMLSegmentEditorNode") and logic.segment_editor_node() is editor


def _air_volume(scene):
    """A volume of air only: every CT check downstream refuses it (not a CT of the hips)."""
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "air")
    data = vtk.vtkImageData()
    data.SetDimensions(32, 32, 16)
    data.AllocateScalars(vtk.VTK_SHORT, 1)
    data.GetPointData().GetScalars().Fill(-1000)
    volume.SetAndObserveImageData(data)
    volume.SetSpacing(2.0, 2.0, 3.0)
    return volume


def test_failed_segmentation_resets_the_panel(scene):
    from FemurScreenLib.logic import PanelState

    volume = _air_volume(scene)
    state = PanelState(FemurScreenLogic(scene))
    assert state.start_segmentation(volume, "classical", ("left", "right")) is None
    assert state.controls(volume=True, segmentation=False, sides=True).segment_text == "Cancel"
    job = state.segmentation_job
    assert job.wait(timeout=120) != 0
    outcome = state.finish_segmentation()  # must not raise: the widget relies on it
    assert outcome.node is None and outcome.error and not outcome.cancelled
    assert not state.segmenting and state.job is None
    controls = state.controls(volume=True, segmentation=False, sides=True)
    assert controls.segment_text == "Segment" and controls.segment_enabled and not controls.busy
    assert not job.temp_dir.exists()
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_failed_recompute_clears_the_stale_result(core, real_ct_path, tmp_path):
    """After a failed grading the old result is neither shown nor exportable."""
    from FemurScreenLib.logic import PanelState

    # Its own volume: tests with the `scene` fixture empty the module's shared scene.
    volume = _load_volume(core.activate().scene, real_ct_path, "stale result")
    logic = FemurScreenLogic(core.scene)
    node = logic.process(volume, quality=False)
    state = PanelState(logic)
    assert state.start_grading(volume, node) is None
    running = state.controls(volume=True, segmentation=True, sides=True)
    assert running.recompute_text == "Cancel" and running.busy
    assert not running.export_result_enabled and not running.segment_enabled
    state.grading_job.wait(timeout=300)
    outcome = state.finish_grading()
    assert outcome.error is None and state.result is outcome.result
    assert state.controls(volume=True, segmentation=True, sides=True).export_result_enabled
    # DICOM export: only for a CT loaded from the DICOM database, and never while busy
    assert not state.controls(volume=True, segmentation=True, sides=True).export_dicom_enabled
    assert state.controls(
        volume=True, segmentation=True, sides=True, dicom=True
    ).export_dicom_enabled
    assert not running.export_dicom_enabled

    # 1. The child fails (a corrupt classifier folder): the error comes back as text.
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "manifest.json").write_text("{ not json", encoding="utf-8")
    good_model = logic.model_dir
    logic.model_dir = broken
    try:
        assert state.start_grading(volume, node) is None
        state.grading_job.wait(timeout=300)
        outcome = state.finish_grading()
    finally:
        logic.model_dir = good_model
    assert outcome.result is None and "manifest" in outcome.error
    assert state.result is None and not state.grading
    controls = state.controls(volume=True, segmentation=True, sides=True)
    assert not controls.export_result_enabled and controls.recompute_text == "Recompute"

    # 2. It cannot even start (every femur voxel erased): same reset, clear message.
    assert state.start_grading(volume, node) is None
    state.grading_job.wait(timeout=300)
    assert state.finish_grading().error is None and state.result is not None
    for segment_ids in seg_io.side_segment_ids(node).values():
        for segment_id in segment_ids:
            empty = np.zeros(volume_convert.volume_array(volume).shape, dtype=np.uint8)
            slicer.util.updateSegmentBinaryLabelmapFromArray(empty, node, segment_id, volume)
    error = state.start_grading(volume, node)
    assert error and "no left or right femur voxels" in error
    assert state.result is None and not state.grading
    assert not state.controls(volume=True, segmentation=True, sides=True).export_result_enabled


def test_recompute_checks_packages_before_starting(scene, real_ct_path):
    """A missing grading package is a clear error naming it, and no child is started."""
    from FemurScreenLib import dependencies
    from FemurScreenLib.logic import MissingPackagesError, PanelState

    volume = _load_volume(scene, real_ct_path)
    logic, node, _ = _segmentation_with_boxes(scene, volume)
    asked = []
    absent = dependencies.Requirement("femurscreen-no-such-package", ">=1", "test")

    def requirements_for(engine, stage):
        asked.append((engine, stage))
        return (absent,)

    logic.requirements_for = requirements_for
    with pytest.raises(MissingPackagesError, match="femurscreen-no-such-package") as caught:
        logic.start_grading(volume, node, engine="classical")
    assert [m.requirement for m in caught.value.needed] == [absent]
    assert asked == [("classical", "grade")]
    state = PanelState(logic)
    error = state.start_grading(volume, node, "classical")
    assert "femurscreen-no-such-package" in error and not state.grading


def test_each_step_asks_only_for_its_own_packages():
    """Segment with the classical engine needs neither PyTorch nor pyradiomics; grading needs
    the classifier's and pyradiomics' packages whatever the engine."""
    logic = FemurScreenLogic(slicer.vtkMRMLScene())
    segment = {r.name for r in logic.requirements_for("classical", "segment")}
    grade = {r.name for r in logic.requirements_for("classical", "grade")}
    assert "torch" not in segment | grade
    assert not {n for n in segment if "radiomics" in n.lower()}
    assert {"scikit-learn", "skops"} <= grade
    assert any("radiomics" in n.lower() for n in grade)
    assert "torch" in {r.name for r in logic.requirements_for("vbnet", "segment")}


# ---------------------------------------------------------------------------- DICOM SEG + SR


class _DicomDatabase:
    """The one call the export makes on Slicer's ``ctkDICOMDatabase``: ``fileForInstance``
    (SOP Instance UID -> file). ``slicer-core`` has no DICOM database (a CTK/Qt object), so
    the test indexes real DICOM files the way the database does."""

    isOpen = True

    def __init__(self, files) -> None:
        import pydicom

        self.files = {
            str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): str(f) for f in files
        }

    def fileForInstance(self, uid: str) -> str:  # noqa: N802 - ctkDICOMDatabase's name
        return self.files.get(uid, "")


@pytest.fixture(scope="module")
def dicom_files(tmp_path_factory, real_ct_path) -> list[Path]:
    """The real CT as a standard DICOM CT series (one file per slice)."""
    from femurscreen.dicom.series import write_ct_series

    folder = tmp_path_factory.mktemp("dicom-ct")
    return write_ct_series(sitk.ReadImage(str(real_ct_path)), folder)


def _load_from_dicom(scene, files: list[Path]):
    """A volume as Slicer's DICOM scalar volume plugin leaves it: Slicer's reader on the series
    and ``DICOM.instanceUIDs`` naming the file of each slice, in slice order (matched along the
    slice normal, as the plugin's sorted file list is)."""
    import pydicom

    volume = _load_volume(scene, files[0], "CT from DICOM")
    image = volume_convert.volume_to_image(volume)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    row, col = np.array(headers[0].ImageOrientationPatient, float).reshape(2, 3)
    normal = np.cross(row, col)
    along = {round(float(np.dot(h.ImagePositionPatient, normal)), 2): h for h in headers}
    uids = []
    for k in range(image.GetSize()[2]):
        position = np.dot(image.TransformIndexToPhysicalPoint((0, 0, k)), normal)
        uids.append(str(along[round(float(position), 2)].SOPInstanceUID))
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    return volume


def _seg_pixels(path: Path) -> dict[str, int]:
    """Foreground pixels per segment label of a binary DICOM SEG (read back with pydicom)."""
    import pydicom

    seg = pydicom.dcmread(path)
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    out: dict[str, int] = dict.fromkeys(names.values(), 0)
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        out[names[number]] += int(np.count_nonzero(frame))
    return out


def test_export_dicom_seg_and_sr_of_the_edited_segmentation(core, dicom_files, tmp_path):
    """A CT loaded from DICOM, segmented, edited, recomputed: the export writes SEG, SR and the
    report capture into the CT's study, and the SEG holds the edited masks voxel for voxel."""
    import pydicom
    from femurscreen.errors import InputError

    scene = core.activate().scene
    volume = _load_from_dicom(scene, dicom_files)
    database = _DicomDatabase(dicom_files)
    logic = FemurScreenLogic(scene)
    assert logic.loaded_from_dicom(volume)
    assert [p.name for p in logic.dicom_source_files(volume, database)] == sorted(
        p.name for p in dicom_files
    )
    node = logic.process(volume, engine="classical", quality=False)
    first = logic.compute(volume, node)
    assert first.result["right"]["graded"]  # the left has an implant
    segment_id = seg_io.side_segment_ids(node)["right"][0]
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, volume)
    kji = np.argwhere(mask)
    mask[tuple(kji[kji[:, 0] == kji[:, 0].min()].T)] = 0  # the annotator trims the lowest slice
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, segment_id, volume)

    with pytest.raises(InputError, match="changed after the bone status was computed"):
        logic.export_dicom(first, volume, node, tmp_path / "stale", database)
    assert not (tmp_path / "stale").exists()  # refused before writing anything

    second = logic.compute(volume, node)
    written = logic.export_dicom(second, volume, node, tmp_path / "out", database)
    assert [p.name for p in written] == ["seg.dcm", "sr.dcm", "report.dcm"]
    source = pydicom.dcmread(dicom_files[0], stop_before_pixels=True)
    seg, sr = (pydicom.dcmread(p) for p in written[:2])
    assert seg.Modality == "SEG" and sr.Modality == "SR"
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    referenced = {
        str(i.ReferencedSOPInstanceUID)
        for s in seg.ReferencedSeriesSequence
        for i in s.ReferencedInstanceSequence
    }
    assert referenced and referenced <= set(database.files)
    labels = sitk.GetArrayViewFromImage(second.labels)
    pixels = _seg_pixels(written[0])
    assert pixels == {
        seg_io.SEGMENTS[s].name: int(np.count_nonzero(labels == seg_io.SEGMENTS[s].label))
        for s in ("left", "right")
    }
    before = int(np.count_nonzero(sitk.GetArrayViewFromImage(first.labels) == RIGHT))
    assert pixels[seg_io.SEGMENTS["right"].name] < before  # the edit is in the SEG
    assert str(seg.SOPInstanceUID) in str(sr)  # the SR's measurements point at this SEG

    # A volume that did not come from the DICOM database: a clear refusal, nothing written.
    plain = _load_volume(scene, Path(dicom_files[0]), "no DICOM attribute")
    with pytest.raises(InputError, match="not loaded from Slicer's DICOM database"):
        logic.export_dicom(second, plain, node, tmp_path / "plain", database)
    # The database lost a file: the export says so instead of writing a SEG with holes.
    database.files.pop(next(iter(referenced)))
    with pytest.raises(InputError, match="no longer in the DICOM database"):
        logic.dicom_source_files(volume, database)
    assert not (tmp_path / "plain").exists()
