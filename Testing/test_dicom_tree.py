"""``femurscreen batch`` on a DICOM tree: one case per axial CT series, the rest skipped with why.

The tree holds the real (upper-abdomen, anonymised: empty UIDs) sample series, the real
sample CT written as a DICOM series split over two folders, and what a PACS export also
holds: a localiser, a coronal reformat, an MR image, a two-slice fragment, a text file and an
earlier FemurScreen result folder (whose DICOM files are outputs, not inputs).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from femurscreen.batch import SKIPPED, discover
from femurscreen.cli import main
from femurscreen.dicom.tree import MIN_SLICES, index_tree, tilt_degrees
from femurscreen.io.ctio import read_ct
from pydicom.uid import generate_uid
from test_ctio import UID_ROOT, write_dicom_series

CT_SERIES_UID = UID_ROOT + ".4401"


def _restamped(source: Path, target: Path, **values: object) -> Path:
    """A copy of one DICOM file with new UIDs and the given header values."""
    dataset = pydicom.dcmread(source)
    dataset.StudyInstanceUID = values.pop("StudyInstanceUID", generate_uid())
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    for name, value in values.items():
        setattr(dataset, name, value)
    target.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(target)
    return target


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, real_dicom_dir: Path, real_ct_path: Path):
    root = tmp_path_factory.mktemp("dicom-tree") / "export"
    shutil.copytree(real_dicom_dir, root / "patient1" / "abdomen")  # the real series
    first = sorted(real_dicom_dir.iterdir())[0]
    scout_uid, mr_uid = generate_uid(), generate_uid()
    _restamped(
        first,
        root / "patient1" / "other" / "scout.dcm",
        SeriesInstanceUID=scout_uid,
        ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
    )
    _restamped(
        first, root / "patient1" / "other" / "mr.dcm", SeriesInstanceUID=mr_uid, Modality="MR"
    )
    fragment_uid, fragment_study = generate_uid(), generate_uid()
    for number, path in enumerate(sorted(real_dicom_dir.iterdir())[:2]):
        target = root / "fragment" / f"{number}.dcm"
        _restamped(path, target, SeriesInstanceUID=fragment_uid, StudyInstanceUID=fragment_study)
    # A coronal reformat of the real series: slices along y (every 16th row, kept small).
    real = read_ct(real_dicom_dir)
    coronal = sitk.PermuteAxes(real[:, ::16, :], [0, 2, 1])
    write_dicom_series(coronal, root / "patient1" / "coronal", series_uid=UID_ROOT + ".4402")
    # The real sample CT (hips) as one DICOM series whose files lie in two folders.
    written = write_dicom_series(
        read_ct(real_ct_path), root / "patient2" / "part1", series_uid=CT_SERIES_UID
    )
    for path in written[len(written) // 2 :]:
        (root / "patient2" / "part2").mkdir(exist_ok=True)
        path.rename(root / "patient2" / "part2" / path.name)
    (root / "patient2" / "notes.txt").write_text("not DICOM")
    done = root / "old-result"  # an earlier FemurScreen result inside the tree
    done.mkdir()
    (done / "result.json").write_text("{}")
    shutil.copy(first, done / "seg.dcm")
    uids = [scout_uid, mr_uid, fragment_uid, CT_SERIES_UID]
    return {"root": root, "uids": uids, "hip_slices": len(written)}


def test_tree_index_chooses_the_axial_ct_series_and_says_why_not_the_others(tree: dict) -> None:
    series = index_tree(tree["root"])
    by_folder = {"+".join(p.name for p in s.folders): s for s in series}
    assert set(by_folder) == {"abdomen", "other", "coronal", "part1+part2", "fragment"}
    assert by_folder["abdomen"].chosen and by_folder["abdomen"].slices == 20
    split = by_folder["part1+part2"]
    assert split.chosen and split.slices == tree["hip_slices"] and len(split.files) == split.slices
    reasons = {s.reason for s in series if not s.chosen}
    assert any(r.startswith("localiser / scout (ImageType LOCALIZER)") for r in reasons), reasons
    assert "modality MR, not CT" in reasons
    assert "not axial (slice normal 90 degrees from the head-foot axis)" in reasons
    assert f"only 2 slice(s), fewer than {MIN_SLICES}" in reasons
    # the scout and the MR share a folder: two series there, each judged on its own
    assert len([s for s in series if s.folders == by_folder["other"].folders]) == 2


def test_tilt_degrees() -> None:
    assert tilt_degrees((1, 0, 0, 0, 1, 0)) == pytest.approx(0.0)
    assert tilt_degrees((-1, 0, 0, 0, -1, 0)) == pytest.approx(0.0)  # flipped is still axial
    assert tilt_degrees((1, 0, 0, 0, 0, -1)) == pytest.approx(90.0)  # coronal
    cos, sin = 0.9962, 0.0872  # 5 degrees about x
    assert tilt_degrees((1, 0, 0, 0, cos, -sin)) == pytest.approx(5.0, abs=0.05)


def test_batch_on_a_dicom_tree(tree: dict, tmp_path: Path) -> None:
    """Through the CLI: the split hip series is graded, the real abdomen series fails (no
    femur) without stopping it, the other series are skipped rows; no UID or folder name is
    written anywhere by default."""
    out = tmp_path / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["batch", str(tree["root"]), "--out", str(out), "--engine", "classical"])
    assert code == 3, stderr.getvalue()  # the abdomen series failed
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    screened = summary[summary["status"] != SKIPPED]
    assert screened["case_id"].nunique() == 2
    graded = screened[screened["graded"].astype(str) == "True"]
    assert len(graded) == 1 and graded["case_id"].iloc[0].startswith("CT-")  # right hip
    failed = screened[screened["status"] == "error"]
    assert failed["error"].str.contains("no proximal femur").all() and len(failed) == 2
    skipped = summary[summary["status"] == SKIPPED]
    assert len(skipped) == 4 and skipped["case_id"].str.match(r"series-[0-9a-f]{10}$").all()
    assert set(skipped["side"]) == {""} and (skipped["reason"] != "").all()
    index = json.loads((out / "batch-index.json").read_text())
    assert sorted(s["reason"][:10] for s in index["series_not_screened"]) == sorted(
        skipped["reason"].str[:10]
    )
    assert "4 DICOM series not screened" in stdout.getvalue()
    written = (
        stdout.getvalue()
        + stderr.getvalue()
        + "".join(
            p.read_text(errors="replace") for p in out.rglob("*") if p.suffix in {".csv", ".json"}
        )
    )
    for identifier in [*tree["uids"], "patient1", "patient2", "abdomen", "Phantom^Test"]:
        assert identifier not in written
    assert not any(p.name.startswith(".") for p in out.iterdir())  # staging folder removed


def test_discovery_names_tree_series_by_folder_with_identifiers(tree: dict) -> None:
    cases, skipped = discover(tree["root"], include_identifiers=True)
    assert sorted(c.case_id for c in cases) == ["abdomen", "patient2-series7"]
    split = next(c for c in cases if c.files)  # its files are staged into one folder to read
    assert len(split.files) == tree["hip_slices"]
    assert {s.info["series_uid"] for s in skipped} >= set(tree["uids"][:3])
    assert all(s.name == s.name.strip() and s.reason for s in skipped)
