"""``femurscreen screen`` end to end on the real sample data, the report, the .seg.nrrd, and
all-or-nothing output folders."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cli_runner import run_cli
from femurscreen import screening
from femurscreen.errors import NoFemurError
from femurscreen.io.segfile import read_seg_nrrd, terminology_entry, write_seg_nrrd
from femurscreen.labels import SIDE_COLORS
from femurscreen.output.report import DEMO_BANNER, render_html


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, real_ct_path: Path) -> dict:
    """``femurscreen screen`` on the real sample CT, once for the module."""
    out = tmp_path_factory.mktemp("screen") / "case"
    code, stdout, stderr = run_cli("screen", str(real_ct_path), "--out", str(out))
    return {"code": code, "stdout": stdout, "stderr": stderr, "out": out}


# --------------------------------------------------------------------------------------------
# The real CT: right femur graded, left femur (metal implant) not graded


def test_real_ct_right_graded_left_implant(real_run: dict) -> None:
    assert real_run["code"] == 0, real_run["stderr"]
    out: Path = real_run["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(screening.FILES)
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    right, left = result["right"], result["left"]
    assert right["status"] == "ok" and right["graded"] is True
    probabilities = right["probabilities"]
    assert set(probabilities) == {"normal", "osteopenia", "osteoporosis"}
    assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-6)
    assert right["predicted"] == max(probabilities, key=probabilities.get)
    assert right["volume_ml"] > 50
    assert right["density"]["head_mean_hu"] > 0  # trabecular bone, not fat or air
    assert left["status"] == "implant" and left["graded"] is False
    assert left["probabilities"] is None and left["predicted"] is None
    assert "implant" in left["flags"]
    assert result["graded_sides"] == ["right"]
    assert result["models"]["classifier"]["sha256"]
    for stage in ("read", "segment", "features", "classify", "write", "report", "total"):
        assert result["timing_s"][stage] >= 0
    # Terminal output: a line per side, the report path; the demo banner on stderr.
    assert "report" in real_run["stdout"] and str(out / "report.html") in real_run["stdout"]
    assert "implant" in real_run["stdout"]
    if result["demo"]:
        assert DEMO_BANNER in real_run["stderr"]


def test_real_ct_label_files_agree(real_run: dict, real_ct_path: Path) -> None:
    out: Path = real_run["out"]
    labels = sitk.ReadImage(str(out / "femur.nii.gz"))
    ct = sitk.ReadImage(str(real_ct_path))
    assert labels.GetSize() == ct.GetSize()
    assert np.allclose(labels.GetOrigin(), ct.GetOrigin(), atol=1e-3)
    array = sitk.GetArrayFromImage(labels)
    assert set(np.unique(array).tolist()) == {0, 1, 2}
    # Patient's left (label 1) lies at larger world x (LPS) than the right (label 2).
    centroids = {}
    for value in (1, 2):
        kji = np.argwhere(array == value).mean(axis=0)
        centroids[value] = labels.TransformContinuousIndexToPhysicalPoint(kji[::-1].tolist())
    assert centroids[1][0] > centroids[2][0]
    seg = read_seg_nrrd(out / "femur.seg.nrrd")
    assert np.array_equal(sitk.GetArrayFromImage(seg), array)
    features = (out / "features.csv").read_text(encoding="utf-8").splitlines()
    assert len(features) == 2  # header + the graded (right) side only
    assert ",right," in features[1]


def test_report_contents_and_no_identifiers(real_run: dict, real_ct_path: Path) -> None:
    out: Path = real_run["out"]
    report = (out / "report.html").read_text(encoding="utf-8")
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert "Right proximal femur" in report and "Left proximal femur" in report
    assert "Metal implant in the left femur: this side was not graded" in report
    assert report.count("data:image/png;base64,") >= 3  # each femur + overview
    assert "<script" not in report and "http://" not in report and "https://" not in report
    if result["demo"]:
        assert DEMO_BANNER in report
    assert result["case"] in report
    # Neither the file name nor its folder appears anywhere in what we wrote.
    for name in ("totalseg", "example_ct", real_ct_path.name, str(real_ct_path.parent)):
        for file in ("report.html", "result.json", "features.csv"):
            assert name not in (out / file).read_text(encoding="utf-8"), (name, file)
    assert "identifiers" not in result


# --------------------------------------------------------------------------------------------
# No femur: clear error, nothing written


def test_dicom_without_femur_fails_cleanly(tmp_path: Path, real_dicom_dir: Path) -> None:
    out = tmp_path / "results" / "case"
    code, stdout, stderr = run_cli("screen", str(real_dicom_dir), "--out", str(out))
    assert code != 0
    assert "no proximal femur" in stderr.lower()
    assert "Traceback" not in stderr
    assert not out.exists()
    leftovers = list(out.parent.iterdir()) if out.parent.exists() else []
    assert leftovers == []
    with pytest.raises(NoFemurError):
        screening.screen(real_dicom_dir, out)
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# All or nothing


def _crash(*args, **kwargs):
    raise RuntimeError("simulated crash while writing")


def test_crash_mid_way_leaves_nothing(
    tmp_path: Path, real_ct_path: Path, real_run: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage that fails after some files were written: no result folder, no hidden folder;
    an earlier complete result stays exactly as it was."""
    import femurscreen.io.segfile

    previous = tmp_path / "previous"
    shutil.copytree(real_run["out"], previous)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    monkeypatch.setattr(femurscreen.io.segfile, "write_seg_nrrd", _crash)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="simulated crash"):
        screening.screen(real_ct_path, fresh)
    assert not fresh.exists()
    with pytest.raises(RuntimeError, match="simulated crash"):
        screening.screen(real_ct_path, previous)
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous"]  # no .tmp folders
    assert screening.is_complete(previous) and not screening.is_complete(fresh)


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path, real_ct_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="not empty"):
        screening.screen(real_ct_path, tmp_path)
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"


# --------------------------------------------------------------------------------------------
# Report rendering (no pipeline)


def _result(**left) -> dict:
    return {
        "case": "CT-0123456789",
        "demo": True,
        "demo_notice": "trained on phantoms",
        "right": {
            "status": "ok",
            "graded": True,
            "probabilities": {"normal": 0.2, "osteopenia": 0.5, "osteoporosis": 0.3},
            "predicted": "osteopenia",
            "applicable": False,
            "volume_ml": 150.0,
            "density": {"head_mean_hu": 210.0, "head_sd_hu": 40.0, "head_ml": 20.0},
            "flags": ["outside_training_distribution"],
        },
        "left": {"status": "truncated", "graded": False, "flags": ["truncated"], **left},
        "models": {"classifier": {"sha256": "f" * 64, "demo": True, "n_features": 12}},
        "timing_s": {"read": 0.1, "total": 1.0},
    }


def test_render_html_words_and_escaping() -> None:
    page = render_html(_result())
    assert DEMO_BANNER in page
    assert "cut by the edge of the scan" in page
    assert "outside the range of the model" in page
    assert "50%" in page and "Osteopenia" in page
    assert "ffffffffffff…" in page
    assert "Identifiers" not in page and "Patient" not in page
    no_demo = render_html({**_result(), "demo": False})
    assert DEMO_BANNER not in no_demo
    failed = render_html(_result(status="error", reason="<b>bad</b>"))
    assert "&lt;b&gt;bad&lt;/b&gt;" in failed and "<b>bad</b>" not in failed


def test_render_html_with_identifiers() -> None:
    result = _result()
    result["identifiers"] = {"patient_name": "DOE^JANE", "patient_id": "12345", "input_name": "x"}
    page = render_html(result)
    assert "DOE^JANE" in page and "12345" in page and "Patient ID" in page


def test_read_identifiers_from_dicom(real_dicom_dir: Path) -> None:
    ids = screening.read_identifiers(real_dicom_dir)
    assert ids["input_name"] == real_dicom_dir.name
    assert set(ids) <= {"input_name", *screening.IDENTIFIER_TAGS}


# --------------------------------------------------------------------------------------------
# .seg.nrrd


def _blocks(direction=(0, 1, 0, -1, 0, 0, 0, 0, 1)) -> sitk.Image:
    """Two blocks on a rotated, anisotropic grid (so geometry errors cannot cancel out)."""
    a = np.zeros((30, 40, 50), np.uint8)
    a[5:12, 10:20, 30:40] = 1
    a[8:15, 12:25, 5:15] = 2
    a[9, 11, 31] = 0  # a hole, so the count is not a box volume
    image = sitk.GetImageFromArray(a)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-100.0, -50.0, 20.0))
    image.SetDirection(direction)
    return image


def test_seg_nrrd_round_trip_and_crop(tmp_path: Path) -> None:
    labels = _blocks()
    path = write_seg_nrrd(labels, tmp_path / "femur.seg.nrrd")
    back = read_seg_nrrd(path)
    assert back.GetSize() == labels.GetSize()
    assert np.allclose(back.GetOrigin(), labels.GetOrigin())
    assert np.allclose(back.GetDirection(), labels.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(labels))
    on_disk = sitk.ReadImage(str(path))
    assert on_disk.GetSize() == (35, 15, 10)  # cropped to the femurs
    assert on_disk.GetMetaData("Segmentation_ReferenceImageExtentOffset") == "5 10 5"


def test_seg_nrrd_empty_side_and_bad_values(tmp_path: Path) -> None:
    only_right = sitk.ChangeLabel(_blocks(), {1: 0})
    path = write_seg_nrrd(only_right, tmp_path / "right.seg.nrrd")
    image = sitk.ReadImage(str(path))
    assert image.GetMetaData("Segment0_Name") == "Left proximal femur"
    assert image.GetMetaData("Segment0_Extent") == "0 -1 0 -1 0 -1"
    assert np.array_equal(
        sitk.GetArrayFromImage(read_seg_nrrd(path)), sitk.GetArrayFromImage(only_right)
    )
    with pytest.raises(Exception, match="0/1/2"):
        write_seg_nrrd(_blocks() + 3, tmp_path / "bad.seg.nrrd")


def _slicer_segments(path: Path) -> dict:
    """Read a .seg.nrrd with Slicer's own C++ storage node; per segment its facts and voxels."""
    slicer = pytest.importorskip("slicer")
    import vtk
    from vtk.util import numpy_support

    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    segmentation = node.GetSegmentation()
    terminology = slicer.vtkSlicerTerminologiesModuleLogic()
    out = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        tag, side_tag = vtk.reference(""), vtk.reference("")
        segment.GetTag("TerminologyEntry", tag)
        segment.GetTag("FemurScreen.Side", side_tag)
        entry = slicer.vtkSlicerTerminologyEntry()
        parsed = terminology.DeserializeTerminologyEntry(str(tag), entry)
        labelmap = segment.GetRepresentation("Binary labelmap")
        scalars = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
        extent = labelmap.GetExtent()
        shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
        mask = scalars.reshape(shape) == segment.GetLabelValue()
        matrix = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(matrix)
        m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        ijk = np.argwhere(mask)[:, ::-1] + np.array(extent[0::2])
        lps = (ijk @ m[:3, :3].T + m[:3, 3]) * np.array([-1.0, -1.0, 1.0])
        out[segment_id] = {
            "name": segment.GetName(),
            "color": segment.GetColor(),
            "tag": str(tag),
            "side_tag": str(side_tag),
            "parsed": parsed,
            "type": entry.GetTypeObject().GetCodeValue() if parsed else None,
            "laterality": entry.GetTypeModifierObject().GetCodeMeaning() if parsed else None,
            "count": int(mask.sum()),
            "world_lps": lps,
        }
    return out


def test_slicer_reads_seg_nrrd_at_the_right_place(tmp_path: Path) -> None:
    """Names, colours, SNOMED codes; every voxel at the same world position as ours."""
    labels = _blocks()
    segments = _slicer_segments(write_seg_nrrd(labels, tmp_path / "femur.seg.nrrd"))
    array = sitk.GetArrayFromImage(labels)
    assert sorted(segments) == ["femur_left", "femur_right"]
    for segment_id, side, value in (("femur_left", "left", 1), ("femur_right", "right", 2)):
        seg = segments[segment_id]
        assert seg["name"] == f"{side.capitalize()} proximal femur"
        assert np.allclose(seg["color"], SIDE_COLORS[side])
        assert seg["tag"] == terminology_entry(side)
        assert seg["side_tag"] == side
        assert seg["parsed"] and seg["type"] == "71341001"  # SNOMED CT femur
        assert seg["laterality"] == side.capitalize()
        assert seg["count"] == (array == value).sum()
        ours = {labels.TransformPhysicalPointToIndex(tuple(p)) for p in seg["world_lps"]}
        expected = {tuple(int(v) for v in kji[::-1]) for kji in np.argwhere(array == value)}
        assert ours == expected


def test_file_saved_by_slicer_reads_back(tmp_path: Path) -> None:
    """Ours -> Slicer's reader -> Slicer's writer -> our reader: the same label map."""
    slicer = pytest.importorskip("slicer")
    labels = _blocks()
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(write_seg_nrrd(labels, tmp_path / "ours.seg.nrrd")))
    assert storage.ReadData(node) == 1
    storage.SetFileName(str(tmp_path / "slicer.seg.nrrd"))
    assert storage.WriteData(node) == 1
    back = read_seg_nrrd(tmp_path / "slicer.seg.nrrd")
    assert back.GetSize() == labels.GetSize()
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(labels))


def test_slicer_reads_screen_output(real_run: dict) -> None:
    out: Path = real_run["out"]
    segments = _slicer_segments(out / "femur.seg.nrrd")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "femur.nii.gz")))
    names = {s["name"]: s["count"] for s in segments.values()}
    assert names == {
        "Left proximal femur": int((labels == 1).sum()),
        "Right proximal femur": int((labels == 2).sum()),
    }


def test_no_gradable_side_exits_nonzero_and_explains(tmp_path: Path) -> None:
    """Implant on one side, the other cut by the scan edge: the result folder is written (it
    says why), but the command fails so that scripts notice."""
    from femurscreen.phantom import PhantomOptions, make_case

    options = PhantomOptions(spacing=(1.5, 1.5, 1.5), implant="left", truncate="right")
    ct, _, _ = make_case(11, -2.0, options)
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"), True)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("screen", str(tmp_path / "ct.nii.gz"), "--out", str(out))
    assert code == 1
    assert "no side could be graded" in stderr
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert result["left"]["status"] == "implant"
    assert result["right"]["status"] == "truncated"
    assert result["graded_sides"] == []
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "cut by the edge of the scan" in report and "Metal implant in the left femur" in report


def _write_dicom_series(ct: sitk.Image, folder: Path, tags: dict[str, str]) -> None:
    """The CT as a DICOM CT series (one file per slice) carrying the given patient tags."""
    folder.mkdir(parents=True)
    image = sitk.Cast(ct, sitk.sitkInt16)
    direction = image.GetDirection()
    series_tags = {
        "0008|0060": "CT",
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1.1",
        "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
        "0020|0037": "\\".join(f"{v:.6f}" for v in direction[0:7:3] + direction[1:8:3]),
        "0028|1052": "0",
        "0028|1053": "1",
        **tags,
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        for tag, value in series_tags.items():
            slice_.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_.SetMetaData("0020|0032", "\\".join(f"{v:.4f}" for v in position))
        slice_.SetMetaData("0020|0013", str(k + 1))
        slice_.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.3.{k + 1}")
        writer.SetFileName(str(folder / f"slice{k:04d}.dcm"))
        writer.Execute(slice_)


def test_dicom_input_with_identifiers(tmp_path: Path, real_ct_path: Path) -> None:
    """A DICOM series screened with --include-identifiers shows who it is; the default never."""
    tags = {"0010|0010": "TEST^PATIENT", "0010|0020": "ID-4711", "0010|0030": "19500101"}
    series = tmp_path / "dicom"
    _write_dicom_series(sitk.ReadImage(str(real_ct_path)), series, tags)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        "screen", str(series), "--out", str(out), "--include-identifiers", "--json"
    )
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["identifiers"]["patient_name"] == "TEST^PATIENT"
    assert result["identifiers"]["patient_id"] == "ID-4711"
    assert result["right"]["graded"] and result["left"]["status"] == "implant"
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "TEST^PATIENT" in report and "ID-4711" in report and "19500101" in report
    assert "image fingerprint" not in report


# --------------------------------------------------------------------------------------------
# Calibrated density in the tables beside result.json


def test_features_csv_and_summary_carry_the_calibrated_density(real_run: dict) -> None:
    """features.csv and the batch summary rows carry result.json's bmd numbers; the implant
    side (not graded) has them empty."""
    import pandas as pd
    from femurscreen.grading import SUMMARY_COLUMNS, summary_rows
    from femurscreen.output.columns import BMD_COLUMNS, QUALITY_COLUMNS

    out: Path = real_run["out"]
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    bmd = result["bmd"]["right"]
    assert bmd["status"] == "ok" and bmd["who_class"] in {"normal", "osteopenia", "osteoporosis"}
    table = pd.read_csv(out / "features.csv")
    trailing = (*BMD_COLUMNS, *QUALITY_COLUMNS)  # the density, then the mask check
    assert list(table.columns[-len(trailing) :]) == list(trailing)
    right = table.set_index("side").loc["right"]
    for key in BMD_COLUMNS:
        if bmd[key] is None:  # e.g. total hip on this scan: its field of view ends too high
            assert pd.isna(right[key]), key
        elif key == "who_class":
            assert right[key] == bmd[key]
        else:
            assert math.isclose(float(right[key]), bmd[key], abs_tol=1e-9), key
    assert bmd["fn_t_score"] is not None and not pd.isna(right["fn_t_score"])
    rows = {row["side"]: row for row in summary_rows(result["case"], result)}
    assert list(rows["right"]) == list(SUMMARY_COLUMNS)
    assert {k: rows["right"][k] for k in BMD_COLUMNS} == {k: bmd[k] for k in BMD_COLUMNS}
    assert result["bmd"]["left"]["status"] != "ok"
    assert all(rows["left"][k] is None for k in BMD_COLUMNS)


# --------------------------------------------------------------------------------------------
# The segmentation quality signal (on by default): result.json, features.csv, summary, report


def test_real_ct_quality_signal_reaches_every_output(real_run: dict) -> None:
    """``screen`` checks each found side's mask against the other engine by default: a Dice in
    [0, 1] in result.json, the same number in features.csv, the summary rows and the report's
    card, the terminal line, and what it cost inside "segment"."""
    import importlib.util
    import re

    import pandas as pd
    from femurscreen.grading import summary_rows
    from femurscreen.segmentation.pipeline import REVIEW_QUALITY

    out: Path = real_run["out"]
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    if importlib.util.find_spec("torch") is None:  # .venv-312: no second engine there
        assert result["right"]["quality_method"] == "dice_with_vbnet_unavailable"
        return
    rows = {row["side"]: row for row in summary_rows(result["case"], result)}
    report = (out / "report.html").read_text(encoding="utf-8")
    for side in ("right", "left"):  # the implant side is not graded, its mask still checked
        info = result[side]
        quality = info["quality"]
        assert info["quality_method"] == "dice_with_vbnet"
        assert isinstance(quality, float) and 0.0 <= quality <= 1.0
        assert ("review_segmentation" in info["flags"]) == (quality < REVIEW_QUALITY)
        assert rows[side]["seg_quality"] == quality
        assert rows[side]["seg_quality_method"] == "dice_with_vbnet"
        assert f"Dice {quality:.2f}" in report or f"agree only {quality:.2f}" in report
    features = pd.read_csv(out / "features.csv").set_index("side")
    assert features.loc["right", "seg_quality"] == pytest.approx(result["right"]["quality"])
    assert features.loc["right", "seg_quality_method"] == "dice_with_vbnet"
    low = result["right"]["quality"] < REVIEW_QUALITY
    card = re.search(r'<p class="quality( low)?"><strong>Segmentation check', report)
    assert card is not None and bool(card.group(1)) == low
    assert "mask:" in real_run["stdout"]
    seconds = result["models"]["segmentation"]["quality_seconds"]
    assert 0 < seconds <= result["timing_s"]["segment"]
    assert result["right"]["graded"] is True  # the check informs; it never blocks grading


def test_no_quality_option_skips_the_second_engine(tmp_path: Path, real_ct_path: Path) -> None:
    """``screen --no-quality``: no second segmentation, no number, no method, no review flag;
    the grading is the default run's."""
    out = tmp_path / "case"
    code, stdout, stderr = run_cli("screen", str(real_ct_path), "--out", str(out), "--no-quality")
    assert code == 0, stderr
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    for side in ("right", "left"):
        assert result[side]["quality"] is None and result[side]["quality_method"] is None
        assert "review_segmentation" not in result[side]["flags"]
    assert "quality_seconds" not in result["models"]["segmentation"]
    assert result["right"]["graded"] is True
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "engine-agreement check was turned off" in report
    assert "mask:" not in stdout  # nothing to say on the terminal


def test_report_shows_the_calibrated_density(real_run: dict) -> None:
    """The report's density section carries result.json's numbers, labelled as a CT-derived
    estimate, with the implant side's reason and the projection/calibration picture embedded."""
    import base64
    import re

    from femurscreen.output.report import BMD_TITLE

    out: Path = real_run["out"]
    report = (out / "report.html").read_text(encoding="utf-8")
    bmd = json.loads((out / "result.json").read_text(encoding="utf-8"))["bmd"]
    assert BMD_TITLE in report and "not a DXA" in report
    t = f"{bmd['right']['fn_t_score']:.2f}".replace("-", "−")
    assert f"{t} ± {bmd['right']['t_score_sd']:.2f}" in report
    assert f"{bmd['right']['fn_abmd_g_cm2']:.3f}" in report
    assert "metal implant: texture and density are artefact" in report  # left column
    assert "standard error of estimate of 0.044 g/cm²" in report
    figure = re.search(r'class="bmd-figure"[^>]*src="data:image/png;base64,([^"]+)"', report)
    assert figure is not None
    png = base64.b64decode(figure.group(1))
    image = sitk.ReadImage(_write_bytes(out.parent / "bmd.png", png))
    assert image.GetSize()[0] > 800  # the three-panel figure, not a placeholder
    assert report.count("data:image/png;base64,") >= 4  # each femur, overview, density


def _write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_render_html_density_refused_and_near_a_class_limit() -> None:
    from femurscreen.output.report import BMD_TITLE

    refused = {
        "label": "CT-derived estimate",
        "see_g_cm2": 0.044,
        "calibration": {"status": "refused", "reason": "no fat peak in the body"},
        "right": {"status": "calibration_refused", "reason": "no fat peak in the body"},
        "left": {"status": "truncated", "reason": "segmentation status truncated: not graded"},
    }
    page = render_html({**_result(), "bmd": refused})
    assert BMD_TITLE in page and "Calibration refused" in page
    assert "no fat peak in the body" in page and "No density numbers" in page
    assert "T-score neck" not in page  # no card line without numbers
    assert "Femoral neck aBMD" not in page  # no table of dashes either
    graded = {
        **refused,
        "calibration": {"status": "ok"},
        "right": {
            "status": "ok",
            "fn_abmd_g_cm2": 0.561,
            "th_abmd_g_cm2": 0.64,
            "fn_t_score": -2.48,
            "th_t_score": -2.48,
            "who_class": "osteopenia",
            "t_score_sd": 0.37,
            "flags": ["class_uncertain"],
        },
    }
    page = render_html({**_result(reason="ROI incomplete here"), "bmd": graded})
    assert "Calibration refused" not in page
    assert "−2.48 ± 0.37" in page and "near a class limit" in page
    assert "T-score neck −2.5, total hip −2.5" in page  # the right card's line
    assert "ROI incomplete here" in page  # left column: the segmentation's reason
    no_bmd = render_html(_result())
    assert BMD_TITLE not in no_bmd


def test_report_of_a_scan_whose_calibration_is_refused(tmp_path: Path) -> None:
    """A scan without the air/fat/muscle the calibration needs: the report says why there are
    no density numbers and still shows the calibration plot."""
    import html
    import re

    from femurscreen.bmd import measure
    from femurscreen.output.report import write_report

    array = np.full((40, 48, 48), 40, np.int16)  # all soft tissue: no air, no fat peak
    array[10:30, 14:30, 8:20] = 400  # a 'femur' on the patient's right (low x in LPS)
    ct = sitk.GetImageFromArray(array)
    ct.SetSpacing((1.5, 1.5, 1.5))
    labels = sitk.GetImageFromArray(np.where(array == 400, 2, 0).astype(np.uint8))
    labels.CopyInformation(ct)
    bmd = measure(ct, labels, side_status={"right": "ok", "left": "not_found"})
    assert bmd["calibration"]["status"] != "ok"
    result = {**_result(), "bmd": bmd}
    page = write_report(result, ct, labels, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Calibration refused" in page
    assert html.escape(bmd["calibration"]["reason"], quote=True) in page
    assert re.search(r'class="bmd-figure"[^>]*src="data:image/png;base64,', page)
    assert "Femoral neck aBMD" not in page


def test_kvp_option_reaches_the_density_of_a_nifti(tmp_path: Path) -> None:
    """A NIfTI cannot tell its tube voltage: ``screen --kvp`` gives it to the calibration (and
    the report's pictures); a value that is no tube voltage is refused before any work."""
    phantom = (
        Path(__file__).resolve().parents[1]
        / "FemurScreen/Resources/SampleData/femurscreen_phantom_ct.nii.gz"
    )
    code, _out, err = run_cli("screen", str(phantom), "--out", str(tmp_path / "bad"), "--kvp", "9")
    assert code == 1 and "--kvp 9 is not a CT tube voltage" in err
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "case"
    code, _out, err = run_cli("screen", str(phantom), "--out", str(out), "--kvp", "100")
    assert code == 0, err
    calibration = json.loads((out / "result.json").read_text(encoding="utf-8"))["bmd"][
        "calibration"
    ]
    assert calibration["kvp"] == 100.0 and "kvp_unknown" not in calibration["flags"]


def test_scanner_calibration_option_reaches_the_density(tmp_path: Path) -> None:
    """``screen --scanner-calibration FILE``: a site file (written by the site module's own
    writer) is used for the density of a NIfTI (no scanner tags: the entry's kVp is assumed,
    flagged); a file that is no site calibration is refused before any work, nothing written."""
    from femurscreen.bmd.site import SiteEntry, update_site_file

    phantom = (
        Path(__file__).resolve().parents[1]
        / "FemurScreen/Resources/SampleData/femurscreen_phantom_ct.nii.gz"
    )
    bad = tmp_path / "not-a-site.json"
    bad.write_text('{"format": "something else"}', encoding="utf-8")
    code, _out, err = run_cli(
        "screen", str(phantom), "--out", str(tmp_path / "bad"), "--scanner-calibration", str(bad)
    )
    assert code == 1 and "not a FemurScreen site calibration" in err, err
    assert not (tmp_path / "bad").exists()
    entry = SiteEntry(
        manufacturer="ACME", model="Scan 1", kvp=120.0, kernel="B30f", energy_kev=68.0,
        energy_sd_kev=1.0, hu_scale=1.0, hu_offset=0.0, date="2026-01-01",
    )  # fmt: skip
    site, _ = update_site_file(tmp_path / "site.json", entry)
    out = tmp_path / "case"
    code, _out, err = run_cli(
        "screen", str(phantom), "--out", str(out), "--scanner-calibration", str(site),
        "--no-quality",
    )  # fmt: skip
    assert code == 0, err
    calibration = json.loads((out / "result.json").read_text(encoding="utf-8"))["bmd"][
        "calibration"
    ]
    assert calibration["source"] == "site"
    assert calibration["site"]["status"] == "used" and calibration["site"]["file"] == "site.json"
    assert "site_kvp_unverified" in calibration["flags"]
    assert str(tmp_path) not in (out / "result.json").read_text(encoding="utf-8")
