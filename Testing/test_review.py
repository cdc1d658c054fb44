"""Cohort review (FemurScreenLib.review) on Slicer's real MRML core, end to end.

Phantom cohorts are made by ``femurscreen phantom`` at 1.6 x 1.6 x 2 mm (a few seconds per case),
reviewed through the same Qt-free session the review panel uses (real volume and segmentation
nodes; edits through ``slicer.util.updateSegmentBinaryLabelmapFromArray``), and the reviewed
``cohort.csv`` is handed, as it is, to ``femurscreen train-seg --init-from`` and
``femurscreen train-classifier`` in child processes.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "FemurScreen"
sys.path.insert(0, str(MODULE))  # FemurScreenLib, as Slicer puts it on the path
sys.path.insert(0, str(Path(__file__).resolve().parent))

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from femurscreen.cli import main as femurscreen_main  # noqa: E402
from femurscreen.errors import InputError  # noqa: E402
from femurscreen.io.labelio import same_grid  # noqa: E402
from femurscreen.labels import CLASSES, LEFT, RIGHT, bone_status  # noqa: E402
from femurscreen.phantom.cohort_writer import case_seed, sample_t_score  # noqa: E402
from FemurScreenLib import review  # noqa: E402
from FemurScreenLib.review import ReferenceExistsError, ReviewCohort, ReviewSession  # noqa: E402

SPACING = ("1.6", "1.6", "2.0")
# 4 per class: with --folds 2 2, 3 per class pass train-classifier's count check but leave an
# outer training fold with fewer than the 10 rows its applicability model needs.
N_CLASSIFIER_CASES = 12
# Cheap features (first order + volume) keep extraction within seconds per case on 2 cores;
# the full default set takes minutes per case here.
FEATURES = (
    "original_firstorder_Mean,original_firstorder_10Percentile,original_firstorder_90Percentile,"
    "original_firstorder_Skewness,original_firstorder_Kurtosis,original_shape_VoxelVolume"
)
VBNET_DEMO = MODULE / "Resources" / "Models" / "vbnet-demo"


def _balanced_seed(n: int) -> int:
    """The first phantom seed whose cases 0..n-1 hold the three classes equally often."""
    for seed in range(1000):
        counts = Counter(bone_status(sample_t_score(case_seed(seed, i))) for i in range(n))
        if all(counts[c] == n // 3 for c in CLASSES):
            return seed
    raise AssertionError("no class-balanced phantom seed below 1000")


SEED = _balanced_seed(N_CLASSIFIER_CASES)


def _run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """A femurscreen verb in a child process, as a user would run it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(MODULE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "femurscreen", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=timeout,
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


# ---------------------------------------------------------------------------- fixtures


def _phantom_cohort(out: Path, cases: int) -> Path:
    code = femurscreen_main(
        ["phantom", str(out), "--cases", str(cases), "--seed", str(SEED),
         "--spacing", *SPACING, "--workers", "2"]
    )  # fmt: skip
    assert code == 0
    return out / "cohort.csv"


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Path:
    """``femurscreen phantom OUT --cases 3 --seed S``: the cohort.csv of three phantoms."""
    return _phantom_cohort(tmp_path_factory.mktemp("three"), 3)


@pytest.fixture(scope="module")
def twelve(tmp_path_factory) -> Path:
    """``femurscreen phantom OUT --cases 12 --seed S``: four phantoms of each class."""
    return _phantom_cohort(tmp_path_factory.mktemp("twelve"), N_CLASSIFIER_CASES)


def _erase_top_slices(session: ReviewSession, side: str, slices: int) -> int:
    """Erase the top ``slices`` axial slices of one femur with Slicer's own array update;
    returns the number of voxels removed."""
    current = session.current
    segment_id = current.segmentation.GetSegmentation().GetSegmentIdBySegmentName(
        f"{side.capitalize()} proximal femur"
    )
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(
        current.segmentation, segment_id, current.volume
    )
    rows = np.nonzero(mask.any(axis=(1, 2)))[0]
    # the phantoms are LPS files: array index k grows toward superior
    top = rows[-slices:]
    removed = int(mask[top].sum())
    mask[top] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        mask, current.segmentation, segment_id, current.volume
    )
    return removed


@pytest.fixture(scope="module")
def reviewed_three(core, three) -> dict:
    """Review the three phantoms: accept, correct (an edit), close and reopen, reject."""
    core.activate()
    session = ReviewSession.open(three, reviewer="Annotator A")
    assert session.current.index == 0 and session.current.source == "cohort mask"
    assert session.progress_text() == "0 of 3 reviewed"
    nodes_per_case = core.scene.GetNumberOfNodes()
    accepted = session.mark("accepted")

    session.next()
    assert session.current.case.case_id == "case_0001" and not session.is_edited()
    assert core.scene.GetNumberOfNodes() == nodes_per_case  # the previous case's nodes left
    removed = _erase_top_slices(session, "left", 4)
    assert removed > 0 and session.is_edited()
    corrected = session.mark("corrected", "left head, top 4 slices, were acetabulum")
    assert not session.is_edited()  # what is on screen is now the reference

    session.unload()  # close Slicer...
    core.close()
    core.activate()
    reopened = ReviewSession.open(three, reviewer="Annotator B")  # ...and open it again
    resumed_at = reopened.current.case.case_id
    progress_after_reopen = reopened.progress_text()
    rejected = reopened.mark("rejected", "metal streaks, unusable")
    reopened.unload()
    core.close()
    return {
        "cohort": three,
        "review_dir": three.parent / "review",
        "entries": [accepted, corrected, rejected],
        "removed": removed,
        "resumed_at": resumed_at,
        "progress_after_reopen": progress_after_reopen,
    }


def test_review_panel_has_its_own_segment_editor_node(scene):
    """The review panel's editor node is one per scene, hidden, and not the FemurScreen panel's."""
    from FemurScreenLib.logic import FemurScreenLogic

    editor = review.segment_editor_node(scene)
    assert editor.IsA("vtkMRMLSegmentEditorNode") and editor.GetHideFromEditors()
    assert review.segment_editor_node(scene) is editor
    assert FemurScreenLogic(scene).segment_editor_node() is not editor
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentEditorNode") == 2


# ---------------------------------------------------------------------------- the review


def test_reference_masks_are_the_reviewed_segments_on_the_ct_grid(reviewed_three):
    folder = reviewed_three["cohort"].parent
    review_dir = reviewed_three["review_dir"]
    # accepted: exactly the cohort's mask, written on the CT's own grid as uint8
    ref0 = sitk.ReadImage(str(review_dir / "case_0000" / "femur.nii.gz"))
    ct0 = sitk.ReadImage(str(folder / "case_0000" / "ct.nii.gz"))
    assert ref0.GetPixelID() == sitk.sitkUInt8
    assert same_grid(ref0, ct0, tol=1e-4)
    assert np.array_equal(
        sitk.GetArrayViewFromImage(ref0), _array(folder / "case_0000" / "femur.nii.gz")
    )
    # corrected: the cohort's mask minus exactly the erased voxels of the left femur
    source = _array(folder / "case_0001" / "femur.nii.gz")
    ref1 = _array(review_dir / "case_0001" / "femur.nii.gz")
    changed = source != ref1
    assert int(changed.sum()) == reviewed_three["removed"]
    assert set(np.unique(source[changed]).tolist()) == {LEFT} and not ref1[changed].any()
    assert np.array_equal(source == RIGHT, ref1 == RIGHT)
    # rejected: no reference
    assert not (review_dir / "case_0002").exists()
    # the source cohort is untouched
    assert np.array_equal(source, _array(folder / "case_0001" / "femur.nii.gz"))


def test_review_log_records_each_decision_with_the_mask_hash(reviewed_three):
    review_dir = reviewed_three["review_dir"]
    log = _rows(review_dir / "review_log.csv")
    assert [(r["case_id"], r["status"], r["reviewer"]) for r in log] == [
        ("case_0000", "accepted", "Annotator A"),
        ("case_0001", "corrected", "Annotator A"),
        ("case_0002", "rejected", "Annotator B"),
    ]
    for row in log[:2]:
        assert row["mask_sha256"] == review.sha256_file(review_dir / row["mask"])
        assert row["time"].endswith("+00:00") and "T" in row["time"]
    assert [r["edited"] for r in log] == ["false", "true", "false"]
    assert log[1]["comment"] == "left head, top 4 slices, were acetabulum"
    assert log[2]["mask"] == "" and log[2]["mask_sha256"] == ""
    assert log[0]["source"] == "cohort mask"


def test_reopening_resumes_at_the_first_unreviewed_case(reviewed_three, scene):
    assert reviewed_three["resumed_at"] == "case_0002"
    assert reviewed_three["progress_after_reopen"] == "2 of 3 reviewed"
    session = ReviewSession.open(reviewed_three["cohort"], reviewer="Annotator C")
    assert session.progress_text() == "3 of 3 reviewed"
    # everything reviewed: back to the first case, shown with its saved reference
    assert session.current.index == 0 and session.current.source == "reference"
    assert session.current.decision.status == "accepted"
    assert session.next_unreviewed() is None
    session.unload()


def test_reviewed_cohort_csv_keeps_the_source_columns_without_rejected_cases(reviewed_three):
    cohort = reviewed_three["cohort"]
    source = {r["case_id"]: r for r in _rows(cohort)}
    reviewed_csv = reviewed_three["review_dir"] / "cohort.csv"
    rows = _rows(reviewed_csv)
    assert [r["case_id"] for r in rows] == ["case_0000", "case_0001"]
    for row in rows:
        assert (reviewed_csv.parent / row["ct"]).resolve() == (
            cohort.parent / source[row["case_id"]]["ct"]
        ).resolve()
        assert row["mask"] == f"{row['case_id']}/femur.nii.gz"
        for column in ("t_score", "bone_status", "synthetic", "seed"):
            assert row[column] == source[row["case_id"]][column]
    assert [r["review_status"] for r in rows] == ["accepted", "corrected"]


def test_an_earlier_reference_is_replaced_only_with_overwrite(reviewed_three, scene, tmp_path):
    cohort = reviewed_three["cohort"]
    review_dir = reviewed_three["review_dir"]
    copy = tmp_path / "review"
    shutil.copytree(review_dir, copy)  # leave the shared review as it was
    session = ReviewSession(ReviewCohort.open(cohort, copy), reviewer="Annotator C")
    session.load(1)
    assert session.current.source == "reference"
    before = review.sha256_file(copy / "case_0001" / "femur.nii.gz")
    log_before = (copy / "review_log.csv").read_text(encoding="utf-8")
    _erase_top_slices(session, "right", 2)
    with pytest.raises(ReferenceExistsError, match="already reviewed.*corrected by Annotator A"):
        session.mark("corrected")
    assert review.sha256_file(copy / "case_0001" / "femur.nii.gz") == before
    assert (copy / "review_log.csv").read_text(encoding="utf-8") == log_before
    entry = session.mark("corrected", "right head too", overwrite=True)
    assert entry.mask_sha256 == review.sha256_file(copy / "case_0001" / "femur.nii.gz") != before
    assert len(_rows(copy / "review_log.csv")) == 4
    # a rejected case becomes part of the cohort only by an explicit new decision
    session.load(2)
    with pytest.raises(ReferenceExistsError):
        session.mark("accepted")
    session.mark("accepted", overwrite=True)
    assert [r["case_id"] for r in _rows(copy / "cohort.csv")] == [
        "case_0000",
        "case_0001",
        "case_0002",
    ]
    session.unload()


# ---------------------------------------------------------------------------- training on it


@pytest.mark.slow
def test_train_seg_init_from_runs_one_epoch_on_the_reviewed_cohort(reviewed_three, tmp_path):
    out = tmp_path / "vbnet"
    result = _run_cli(
        "train-seg", str(reviewed_three["review_dir"] / "cohort.csv"), "--out", str(out),
        "--init-from", str(VBNET_DEMO), "--epochs", "1", "--iters-per-epoch", "1",
        "--batch-size", "1", "--val-fraction", "0", "--crop", "64", "64", "64",
        "--device", "cpu", "--threads", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 training, 0 validation cases" in result.stderr
    assert "starting from vbnet-demo" in result.stderr
    for name in ("coarse.safetensors", "fine.safetensors", "manifest.json"):
        assert (out / name).is_file()


def _features(cohort_csv: Path, out: Path) -> Path:
    """The features of the reviewed masks (``extract-features`` reads the cohort as it is)."""
    result = _run_cli(
        "extract-features", str(cohort_csv), "--out", str(out), "--no-cache",
        "--workers", "2", "--only-features", FEATURES,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_train_classifier_reads_the_reviewed_cohort(reviewed_three, tmp_path):
    """Two kept cases are too few for grouped CV: the refusal comes after the cohort was read
    and labelled and its features matched, and says what is missing."""
    cohort_csv = reviewed_three["review_dir"] / "cohort.csv"
    features = _features(cohort_csv, tmp_path / "features.csv")
    assert sorted({r["case_id"] for r in _rows(features)}) == ["case_0000", "case_0001"]
    result = _run_cli(
        "train-classifier", str(cohort_csv), "--features", str(features),
        "--out", str(tmp_path / "model"), "--folds", "2", "2",
    )  # fmt: skip
    assert result.returncode == 1
    assert "too few cases per class for grouped cross-validation" in result.stderr
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_train_classifier_runs_on_a_reviewed_cohort_of_twelve(core, twelve, tmp_path):
    core.activate()
    review_dir = tmp_path / "review"
    session = ReviewSession.open(twelve, review_dir=review_dir, reviewer="Annotator A")
    assert session.current.index == 0
    while True:
        if session.current.index == 4:
            _erase_top_slices(session, "right", 2)
            session.mark("corrected")
        else:
            session.mark("accepted")
        if session.next() is None:
            break
    session.unload()
    core.close()
    cohort_csv = review_dir / "cohort.csv"
    rows = _rows(cohort_csv)
    assert len(rows) == N_CLASSIFIER_CASES
    assert Counter(r["bone_status"] for r in rows) == {c: N_CLASSIFIER_CASES // 3 for c in CLASSES}
    features = _features(cohort_csv, tmp_path / "features.csv")
    out = tmp_path / "model"
    result = _run_cli(
        "train-classifier", str(cohort_csv), "--features", str(features), "--out", str(out),
        "--folds", "2", "2", "--workers", "2",
        "--grid", '{"mrmr__k": [3], "forest__n_estimators": [50]}',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nested CV" in result.stdout
    for name in ("model.skops", "manifest.json", "applicability.json"):
        assert (out / name).is_file()


# ---------------------------------------------------------------------------- other cohorts


def test_folder_of_cts_gets_a_fresh_classical_segmentation(three, scene, tmp_path):
    phantoms = three.parent
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(phantoms / "case_0002" / "ct.nii.gz", folder / "patient_a.nii.gz")
    session = ReviewSession.open(folder, reviewer="Annotator A")
    assert [c.case_id for c in session.cohort.cases] == ["patient_a"]
    assert session.current.source == "classical segmentation"
    labels, overlap = session.current_labels()
    truth = _array(phantoms / "case_0002" / "femur.nii.gz")
    got = sitk.GetArrayViewFromImage(labels)
    for value in (LEFT, RIGHT):
        a, b = got == value, truth == value
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > 0.85, (value, dice)
    session.mark("accepted")
    session.unload()
    rows = _rows(folder / "review" / "cohort.csv")
    assert [(r["case_id"], r["ct"], r["mask"]) for r in rows] == [
        ("patient_a", "../patient_a.nii.gz", "patient_a/femur.nii.gz")
    ]
    # the review folder inside the cohort folder is not taken for a case on reopening
    again = ReviewCohort.open(folder)
    assert len(again) == 1 and again.progress_text() == "1 of 1 reviewed"


def test_a_cohort_csv_without_case_ids_names_cases_after_their_cts(tmp_path):
    """``case_id`` is optional in a review cohort: the core reader reads the CSV, the review
    names each case as ``femurscreen batch`` would (a phantom's ``ct.nii.gz`` by its folder)."""
    cohort_csv = tmp_path / "cohorts" / "c.csv"
    cohort_csv.parent.mkdir()
    cohort_csv.write_text(
        "\ufeffct , mask,t_score\n"
        " case_7/ct.nii.gz ,case_7/femur.nii.gz,-1.5\n"
        "\n"
        "scans/patient_b.nrrd,,007\n"
        ",,\n",
        encoding="utf-8",
    )
    cases, columns = review.read_cohort_csv(cohort_csv)
    assert columns == ["ct", "mask", "t_score"]
    base = cohort_csv.resolve().parent
    assert [(c.case_id, c.ct, c.mask) for c in cases] == [
        ("case_7", base / "case_7/ct.nii.gz", base / "case_7/femur.nii.gz"),
        ("patient_b", base / "scans/patient_b.nrrd", None),
    ]
    assert cases[1].row == {"ct": "scans/patient_b.nrrd", "mask": "", "t_score": "007"}


def test_bad_inputs_are_refused_with_what_to_do(three, scene, tmp_path):
    phantoms = three.parent
    with pytest.raises(InputError, match="cohort not found"):
        ReviewCohort.open(tmp_path / "nothing")
    no_ct = tmp_path / "no_ct.csv"
    no_ct.write_text("case_id,mask\na,a.nii.gz\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"lacks column\(s\) ct"):
        ReviewCohort.open(no_ct)
    twice = tmp_path / "twice.csv"
    twice.write_text("case_id,ct\na,x.nii.gz\na,y.nii.gz\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"repeated case_id\(s\) in the cohort CSV: a"):
        ReviewCohort.open(twice)
    # the review's own rule on top of the core reader's: ids unique regardless of case
    cased = tmp_path / "cased.csv"
    cased.write_text("case_id,ct\na,x.nii.gz\nA,y.nii.gz\n", encoding="utf-8")
    with pytest.raises(InputError, match="case_id 'A' appears on lines 2 and 3"):
        ReviewCohort.open(cased)
    no_ct_cell = tmp_path / "no_ct_cell.csv"
    no_ct_cell.write_text("case_id,ct\na,x.nii.gz\nb,\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 3 has an empty 'ct' value"):
        ReviewCohort.open(no_ct_cell)

    # a mask that is not 0/1/2 names its file; the scene keeps nothing of the failed case
    ct = phantoms / "case_0000" / "ct.nii.gz"
    bad_mask = sitk.ReadImage(str(phantoms / "case_0000" / "femur.nii.gz")) * 3
    sitk.WriteImage(bad_mask, str(tmp_path / "bad.nii.gz"))
    cohort_csv = tmp_path / "bad.csv"
    cohort_csv.write_text(f"case_id,ct,mask\nb,{ct},bad.nii.gz\n", encoding="utf-8")
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=r"bad\.nii\.gz.*not 0/1/2"):
        ReviewSession.open(cohort_csv, reviewer="A")
    assert scene.GetNumberOfNodes() == nodes

    # nothing is written for a refused decision
    good = tmp_path / "good.csv"
    good.write_text(f"case_id,ct\nc,{ct}\n", encoding="utf-8")
    cohort = ReviewCohort.open(good)
    truth = sitk.ReadImage(str(phantoms / "case_0000" / "femur.nii.gz"))
    empty = truth * 0
    with pytest.raises(InputError, match="no reviewer name"):
        cohort.save("c", "accepted", truth, reviewer=" ")
    with pytest.raises(InputError, match="no femur voxels.*mark the case rejected"):
        cohort.save("c", "accepted", empty, reviewer="A")
    with pytest.raises(InputError, match="unknown review status"):
        cohort.save("c", "maybe", truth, reviewer="A")
    shifted = sitk.Image(truth)
    shifted.SetOrigin([o + 1.0 for o in truth.GetOrigin()])
    with pytest.raises(InputError, match="not on the grid of its CT"):
        cohort.save("c", "accepted", shifted, reviewer="A")
    assert not (tmp_path / "review").exists()


def test_a_log_line_cut_by_a_crash_is_ignored(three, tmp_path):
    cohort = ReviewCohort.open(three, tmp_path / "review")
    (tmp_path / "review").mkdir()
    header = ",".join(review.LOG_COLUMNS)
    cohort.log_path.write_text(
        f"{header}\ncase_0000,rejected,A,2026-12-02T17:00:00+00:00,,,false,cohort mask,x\n"
        "case_0001,accep",
        encoding="utf-8",
    )
    assert list(cohort.decisions()) == ["case_0000"]
    assert cohort.first_unreviewed() == 1
    assert cohort.progress_text() == "1 of 3 reviewed"
