"""DICOM outputs of ``screen --dicom`` (SEG, TID 1500 SR, report capture), checked by
independent readers: dcmqi's ``segimage2itkimage`` reads each SEG back voxel by voxel,
dicom3tools' ``dciodvfy`` validates each object, pydicom reads the SR tree.

The source is the bundled real CT (TotalSegmentator, 3 mm) written as a DICOM CT series by
``femurscreen.dicom.series`` (the shipped DICOM sample has no femurs and blank UIDs), plus
variants: reversed file order, flipped and oblique orientations, gantry tilt and a gap.

Not covered: loading the SEG in Slicer's DICOM module. ``slicer-core`` (PyPI) has no DICOM
module logic and no DICOMSegmentationPlugin (it needs the Slicer application with DCMTK and
the QuantitativeReporting extension), so that check needs a full Slicer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from cli_runner import run_cli
from femurscreen.dicom.export import write_dicom_outputs
from femurscreen.dicom.seg import build_segmentation, check_series
from femurscreen.dicom.series import SeriesOptions, read_series_headers, write_ct_series
from femurscreen.errors import InputError
from femurscreen.io.ctio import read_ct
from femurscreen.labels import LEFT, RIGHT

PATIENT = {
    "PatientName": "DOE^JANE",
    "PatientID": "PID-0042",
    "PatientBirthDate": "19480229",
    "PatientSex": "F",
}
SEGIMAGE2ITKIMAGE = Path(sys.executable).with_name("segimage2itkimage")
DCIODVFY = shutil.which("dciodvfy") or "/usr/bin/dciodvfy"
SIDE_VALUE = {"Left proximal femur": LEFT, "Right proximal femur": RIGHT}


@pytest.fixture(scope="module")
def real_ct(real_ct_path: Path) -> sitk.Image:
    return sitk.ReadImage(str(real_ct_path))


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory: pytest.TempPathFactory, real_ct: sitk.Image) -> Path:
    """The real CT as a standard DICOM CT series with a (made-up) patient."""
    folder = tmp_path_factory.mktemp("dicom") / "ct"
    write_ct_series(real_ct, folder, SeriesOptions(patient=PATIENT))
    return folder


@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory, series_dir: Path) -> dict:
    """``femurscreen screen SERIES --out OUT --dicom``, once for the module."""
    out = tmp_path_factory.mktemp("screen-dicom") / "case"
    code, stdout, stderr = run_cli("screen", str(series_dir), "--out", str(out), "--dicom")
    assert code == 0, stderr
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    labels = sitk.ReadImage(str(out / "femur.nii.gz"))
    return {"out": out, "stdout": stdout, "stderr": stderr, "result": result, "labels": labels}


def _dcmqi_labels(seg_path: Path, work: Path) -> tuple[sitk.Image, dict]:
    """dcmqi's reading of a SEG: one merged label image (values mapped to ours) and meta.json."""
    if not SEGIMAGE2ITKIMAGE.exists():
        pytest.fail("dcmqi (segimage2itkimage) is missing: make venv installs it (pip dcmqi)")
    work.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [str(SEGIMAGE2ITKIMAGE), "--inputDICOM", str(seg_path), "--outputDirectory", str(work)]
        + ["-t", "nifti", "--mergeSegments"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    meta = json.loads((work / "meta.json").read_text(encoding="utf-8"))
    images = sorted(work.glob("*.nii.gz"))
    assert len(images) == 1, images  # non-overlapping segments: one merged file
    image = sitk.ReadImage(str(images[0]))
    array = sitk.GetArrayFromImage(image)
    ours = np.zeros(array.shape, np.uint8)
    for segment in meta["segmentAttributes"][0]:
        ours[array == segment["labelID"]] = SIDE_VALUE[segment["SegmentLabel"]]
    out = sitk.GetImageFromArray(ours)
    out.CopyInformation(image)
    return out, meta


def _on_grid(image: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """``image`` on ``reference``'s grid, after checking that their voxel lattices coincide
    (so nearest-neighbour sampling moves no voxel: the comparison stays voxel by voxel)."""
    for corner in [(0, 0, 0), tuple(s - 1 for s in image.GetSize())]:
        point = image.TransformIndexToPhysicalPoint(corner)
        index = np.asarray(reference.TransformPhysicalPointToContinuousIndex(point))
        assert np.abs(index - np.round(index)).max() < 0.05, (corner, index)
    array = sitk.GetArrayViewFromImage(image)
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    back = sitk.GetArrayFromImage(resampled)
    assert np.count_nonzero(back) == np.count_nonzero(array), "SEG voxels outside the CT grid"
    return back


def _assert_same_voxels(seg_path: Path, labels: sitk.Image, work: Path) -> None:
    image, _ = _dcmqi_labels(seg_path, work)
    got = _on_grid(image, labels)
    want = sitk.GetArrayViewFromImage(labels)
    for value in (LEFT, RIGHT):
        assert np.count_nonzero(want == value) > 1000  # both femurs are really there
    mismatch = int(np.count_nonzero(got != want))
    assert mismatch == 0, f"{mismatch} voxels differ between dcmqi's SEG and femur.nii.gz"


def _content_items(ds: pydicom.Dataset):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _content_items(item)


def _name(item: pydicom.Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning)


# --------------------------------------------------------------------------------------------
# screen --dicom on the real CT series


def test_screen_dicom_writes_the_three_objects(screened: dict) -> None:
    out: Path = screened["out"]
    assert sorted(p.name for p in (out / "dicom").iterdir()) == ["report.dcm", "seg.dcm", "sr.dcm"]
    assert screened["result"]["dicom"] == {
        "seg": "dicom/seg.dcm",
        "sr": "dicom/sr.dcm",
        "report": "dicom/report.dcm",
    }  # no study UID without --include-identifiers
    assert screened["result"]["right"]["status"] == "ok"
    assert screened["result"]["left"]["status"] == "implant"
    # Privacy: the HTML report, result.json and the console name no patient by default ...
    for text in (
        (out / "report.html").read_text(encoding="utf-8"),
        (out / "result.json").read_text(encoding="utf-8"),
        screened["stdout"] + screened["stderr"],
    ):
        assert "PID-0042" not in text and "DOE^JANE" not in text and "19480229" not in text
    # ... while the DICOM objects carry the source's patient module (PACS files them by it).
    for name in ("seg.dcm", "sr.dcm", "report.dcm"):
        ds = pydicom.dcmread(out / "dicom" / name, stop_before_pixels=True)
        assert ds.PatientID == "PID-0042" and str(ds.PatientName) == "DOE^JANE"
        assert ds.PatientBirthDate == "19480229"


def test_seg_read_back_by_dcmqi_equals_femur_nii(screened: dict, tmp_path: Path) -> None:
    _assert_same_voxels(screened["out"] / "dicom" / "seg.dcm", screened["labels"], tmp_path)
    _, meta = _dcmqi_labels(screened["out"] / "dicom" / "seg.dcm", tmp_path / "again")
    segments = {s["SegmentLabel"]: s for s in meta["segmentAttributes"][0]}
    assert set(segments) == set(SIDE_VALUE)
    for label, laterality in (
        ("Left proximal femur", "7771000"),
        ("Right proximal femur", "24028007"),
    ):
        segment = segments[label]
        assert segment["SegmentedPropertyTypeCodeSequence"]["CodeValue"] == "71341001"
        assert segment["SegmentedPropertyCategoryCodeSequence"]["CodeValue"] == "123037004"
        assert segment["SegmentedPropertyTypeModifierCodeSequence"]["CodeValue"] == laterality


def test_seg_references_the_source_frames(screened: dict, series_dir: Path) -> None:
    seg = pydicom.dcmread(screened["out"] / "dicom" / "seg.dcm", stop_before_pixels=True)
    source = read_series_headers(series_dir)
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    referenced = {
        item.ReferencedSOPInstanceUID
        for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in source}
    assert int(seg.NumberOfFrames) == 2 * len(source)  # every slice, both segments


@pytest.mark.parametrize("name", ["seg.dcm", "sr.dcm", "report.dcm"])
def test_dciodvfy_finds_no_errors(screened: dict, name: str) -> None:
    if not Path(DCIODVFY).exists():
        pytest.fail("dicom3tools' dciodvfy is missing: run make system-deps")
    run = subprocess.run(
        [DCIODVFY, str(screened["out"] / "dicom" / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = (run.stdout + run.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, "\n".join(lines)


def test_sr_content(screened: dict, series_dir: Path) -> None:
    result = screened["result"]
    sr = pydicom.dcmread(screened["out"] / "dicom" / "sr.dcm")
    seg = pydicom.dcmread(screened["out"] / "dicom" / "seg.dcm", stop_before_pixels=True)
    source = read_series_headers(series_dir)[0]
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == source.PatientID
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    items = list(_content_items(sr))
    texts = [str(i.TextValue) for i in items if i.ValueType == "TEXT"]
    assert any("DEMO MODEL" in t and "not for clinical use" in t for t in texts)
    segment_labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    groups = [i for i in items if i.ValueType == "CONTAINER" and _name(i) == "Measurement Group"]
    assert len(groups) == 2
    by_side = {}
    for group in groups:
        inner = list(_content_items(group))
        refs = [i for i in inner if i.ValueType == "IMAGE" and _name(i) == "Referenced Segment"]
        assert len(refs) == 1
        ref = refs[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID
        number = int(ref.ReferencedSegmentNumber)
        side = segment_labels[number].split()[0].lower()
        by_side[side] = (number, inner)
    assert {s: n for s, (n, _) in by_side.items()} == {"left": LEFT, "right": RIGHT}
    bmd = result["bmd"]
    for side, (_, inner) in by_side.items():
        info = result[side]
        nums = {}
        for item in inner:
            if item.ValueType == "NUM" and "MeasuredValueSequence" in item:
                value = float(item.MeasuredValueSequence[0].NumericValue)
                nums.setdefault(_name(item), []).append(value)
        codes = {
            _name(i): str(i.ConceptCodeSequence[0].CodeValue)
            for i in inner
            if i.ValueType == "CODE"
        }
        words = [str(i.TextValue) for i in inner if i.ValueType == "TEXT"]
        assert nums["Volume"] == [pytest.approx(info["volume_ml"], rel=1e-6)]
        assert codes["Segmentation status"] == info["status"]
        assert all(any(w.startswith(flag) for w in words) for flag in info["flags"])
        probabilities = info["probabilities"] or {}
        for cls in ("normal", "osteopenia", "osteoporosis"):
            key = f"Probability of {cls} (demo classifier)"
            if probabilities:
                assert nums[key] == [pytest.approx(100 * probabilities[cls], abs=1e-3)]
            else:
                assert key not in nums
        fn_t = bmd[side].get("fn_t_score")
        if fn_t is None:
            assert "CT-derived femoral neck T-score" not in nums
        else:
            assert nums["CT-derived femoral neck T-score"] == [pytest.approx(fn_t)]
        if info.get("density"):
            assert (
                pytest.approx(info["density"]["head_mean_hu"], abs=1e-3)
                in nums["Attenuation Coefficient"]
            )
    assert by_side["right"][1] and result["right"]["predicted"]
    right_codes = {
        _name(i): str(i.ConceptCodeSequence[0].CodeMeaning)
        for i in by_side["right"][1]
        if i.ValueType == "CODE"
    }
    assert (
        right_codes["Predicted bone status (demo classifier)"].lower()
        == (result["right"]["predicted"])
    )


def test_sr_read_by_dcmqi_tid1500reader(screened: dict, tmp_path: Path) -> None:
    """dcmqi's TID 1500 reader (what Slicer's QuantitativeReporting uses) sees both groups,
    their segments and the measurements."""
    reader = SEGIMAGE2ITKIMAGE.with_name("tid1500reader")
    if not reader.exists():
        pytest.fail("dcmqi (tid1500reader) is missing: make venv installs it (pip dcmqi)")
    out = tmp_path / "sr.json"
    run = subprocess.run(
        [str(reader), "--inputDICOM", str(screened["out"] / "dicom" / "sr.dcm")]
        + ["--outputMetadata", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    seg = pydicom.dcmread(screened["out"] / "dicom" / "seg.dcm", stop_before_pixels=True)
    groups = {g["TrackingIdentifier"]: g for g in json.loads(out.read_text())["Measurements"]}
    assert set(groups) == {"Left proximal femur", "Right proximal femur"}
    for side, value in (("left", LEFT), ("right", RIGHT)):
        group = groups[f"{side.capitalize()} proximal femur"]
        assert group["ReferencedSegment"] == value
        assert group["segmentationSOPInstanceUID"] == seg.SOPInstanceUID
        assert group["Finding"]["CodeValue"] == "71341001"
        assert group["Laterality"]["CodeMeaning"] == side.capitalize()
        items = {i["quantity"]["CodeMeaning"]: float(i["value"]) for i in group["measurementItems"]}
        assert items["Volume"] == pytest.approx(screened["result"][side]["volume_ml"], rel=1e-6)


def test_report_capture_carries_the_demo_banner(screened: dict) -> None:
    capture = pydicom.dcmread(screened["out"] / "dicom" / "report.dcm")
    seg = pydicom.dcmread(screened["out"] / "dicom" / "seg.dcm", stop_before_pixels=True)
    assert capture.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert capture.StudyInstanceUID == seg.StudyInstanceUID
    assert capture.BurnedInAnnotation == "NO"
    pixels = capture.pixel_array
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    band = pixels[: pixels.shape[0] // 10].reshape(-1, 3).astype(int)
    red = (band[:, 0] > 150) & (band[:, 1] < 90) & (band[:, 2] < 90)
    assert red.mean() > 0.3  # the red DEMO banner across the top of the page
    assert "DEMO MODEL" in capture.ImageComments


def test_side_not_found_is_an_empty_segment_and_no_group(
    screened: dict, series_dir: Path, tmp_path: Path
) -> None:
    """Segment numbers never change meaning: without a right femur, segment 2 stays (empty),
    the SR has the left group only and says why the right has none."""
    array = sitk.GetArrayFromImage(screened["labels"])
    array[array == RIGHT] = 0
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(screened["labels"])
    result = json.loads(json.dumps(screened["result"]))
    result["right"] = {
        "status": "not_found",
        "graded": False,
        "volume_ml": None,
        "flags": ["not_femur"],
        "reason": "no proximal femur on this side",
    }
    seg_path, sr_path, _ = write_dicom_outputs(result, labels, series_dir, tmp_path / "dicom")
    image, meta = _dcmqi_labels(seg_path, tmp_path / "dcmqi")
    assert {s["SegmentLabel"] for s in meta["segmentAttributes"][0]} <= set(SIDE_VALUE)
    assert np.array_equal(_on_grid(image, labels), array)
    sr = pydicom.dcmread(sr_path)
    items = list(_content_items(sr))
    refs = [i for i in items if i.ValueType == "IMAGE" and _name(i) == "Referenced Segment"]
    assert [int(r.ReferencedSOPSequence[0].ReferencedSegmentNumber) for r in refs] == [LEFT]
    texts = [str(i.TextValue) for i in items if i.ValueType == "TEXT"]
    assert "right: no proximal femur on this side" in texts


# --------------------------------------------------------------------------------------------
# Slice order and orientation: the SEG follows the geometry, not the file order


def _variant_seg(ct: sitk.Image, labels: sitk.Image, folder: Path, **options) -> Path:
    write_ct_series(ct, folder / "ct", SeriesOptions(**options))
    seg = build_segmentation(labels, read_series_headers(folder / "ct"))
    path = folder / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    return path


def test_reversed_slice_order_gives_the_same_seg_voxels(
    screened: dict, real_ct: sitk.Image, tmp_path: Path
) -> None:
    labels = screened["labels"]
    path = _variant_seg(real_ct, labels, tmp_path, reverse_files=True)
    first = pydicom.dcmread(tmp_path / "ct" / "CT00001.dcm", stop_before_pixels=True)
    assert float(first.ImagePositionPatient[2]) > float(real_ct.GetOrigin()[2])  # top first
    _assert_same_voxels(path, labels, tmp_path / "dcmqi")


def test_flipped_series_maps_the_label_map_by_geometry(
    screened: dict, real_ct: sitk.Image, tmp_path: Path
) -> None:
    """The CT stored with rows and columns running the other way (x and z flipped, same
    world): the label map on the *original* grid still lands on the right pixels."""
    labels = screened["labels"]
    flipped = sitk.Flip(real_ct, [True, False, True])  # same voxel centres in the world
    assert flipped.GetDirection() != real_ct.GetDirection()
    path = _variant_seg(flipped, labels, tmp_path)
    _assert_same_voxels(path, labels, tmp_path / "dcmqi")


def test_oblique_series_gives_the_same_seg_voxels(
    screened: dict, real_ct: sitk.Image, tmp_path: Path
) -> None:
    rotation = sitk.VersorTransform((0.3, 0.1, 1.0), np.radians(12.0))
    matrix = np.asarray(rotation.GetMatrix()).reshape(3, 3)
    direction = (matrix @ np.asarray(real_ct.GetDirection()).reshape(3, 3)).ravel().tolist()
    oblique_ct, oblique_labels = sitk.Image(real_ct), sitk.Image(screened["labels"])
    for image in (oblique_ct, oblique_labels):
        image.SetDirection(direction)
    path = _variant_seg(oblique_ct, oblique_labels, tmp_path)
    seg = pydicom.dcmread(path, stop_before_pixels=True)
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    assert abs(float(orientation.ImageOrientationPatient[1])) > 0.1  # really oblique
    _assert_same_voxels(path, oblique_labels, tmp_path / "dcmqi")
    # and the oblique series reads back as the same grid (the label map fits the CT read)
    read = read_ct(tmp_path / "ct")
    assert np.allclose(read.GetDirection(), direction, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Series that cannot carry a SEG, and inputs that cannot have DICOM outputs


@pytest.mark.parametrize(
    ("options", "words"),
    [({"tilt_mm_per_slice": 0.8}, "gantry tilt"), ({"drop_slices": (50,)}, "gap")],
)
def test_tilted_or_gapped_series_is_refused(
    screened: dict, real_ct: sitk.Image, tmp_path: Path, options: dict, words: str
) -> None:
    folder = tmp_path / "ct"
    write_ct_series(real_ct, folder, SeriesOptions(**options))
    with pytest.raises(InputError, match=words):
        build_segmentation(screened["labels"], read_series_headers(folder))
    out = tmp_path / "out"
    code, _, stderr = run_cli("screen", str(folder), "--out", str(out), "--dicom")
    assert code == 1
    assert ("tilt" if "tilt" in words else "spacing") in stderr
    assert not out.exists()


def test_series_without_uids_or_on_another_grid_is_refused(
    screened: dict, real_ct: sitk.Image, real_dicom_dir: Path, tmp_path: Path
) -> None:
    # The shipped DICOM sample has blank SOP Instance UIDs (an anonymising export).
    with pytest.raises(InputError, match="no SOPInstanceUID"):
        check_series(read_series_headers(real_dicom_dir))
    out = tmp_path / "screened"
    code, _, stderr = run_cli("screen", str(real_dicom_dir), "--out", str(out), "--dicom")
    assert code == 1 and "have no SOPInstanceUID" in stderr  # before segmenting, not after
    assert not out.exists()
    # A label map that is not on the series' voxel grid (here: shifted half a voxel).
    write_ct_series(real_ct, tmp_path / "ct")
    shifted = sitk.Image(screened["labels"])
    shifted.SetOrigin([o + 1.5 for o in shifted.GetOrigin()])
    with pytest.raises(InputError, match="not on the voxel grid"):
        write_dicom_outputs(screened["result"], shifted, tmp_path / "ct", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dicom_flag_on_a_nifti_is_refused_writing_nothing(
    real_ct_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, _, stderr = run_cli("screen", str(real_ct_path), "--out", str(out), "--dicom")
    assert code == 1
    assert "is not a DICOM series" in stderr and "leave out --dicom" in stderr
    assert not out.exists()


def test_rerun_with_identifiers_names_the_study_and_replaces_old_objects(
    screened: dict, series_dir: Path, tmp_path: Path
) -> None:
    """With identifiers the dicom block names the study; a rerun leaves no stale object."""
    from femurscreen.screening import screen

    out = tmp_path / "case"
    shutil.copytree(screened["out"], out)
    (out / "dicom" / "stale.dcm").write_bytes(b"an object of an earlier run")
    result = screen(series_dir, out, include_identifiers=True, dicom=True, report=False)
    source = read_series_headers(series_dir)[0]
    assert result["dicom"]["study_instance_uid"] == source.StudyInstanceUID
    assert sorted(p.name for p in (out / "dicom").iterdir()) == ["report.dcm", "seg.dcm", "sr.dcm"]
    assert (out / "dicom").stat().st_mode & 0o100  # a folder one can enter
    saved = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert saved["dicom"] == result["dicom"]
