"""``femurscreen batch``: many cases, one corrupt; resumable; process pool; Dask scheduler.

These runs name cases by file name (``include_identifiers``) to check each case by name; the
default naming by fingerprint is tested in test_reliability.py."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk
from femurscreen.batch import SUMMARY_COLUMNS, batch, discover, discover_cases
from femurscreen.cli import main
from femurscreen.errors import InputError
from femurscreen.phantom import PhantomOptions, make_case

N_PHANTOMS = 3
SPACING = (1.5, 1.5, 1.5)  # coarse: fast to make and to screen, still segmentable


@pytest.fixture(scope="module")
def cts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of small phantom CTs plus one corrupt (truncated) NIfTI."""
    folder = tmp_path_factory.mktemp("batch-input")
    for index in range(N_PHANTOMS):
        ct, _, _ = make_case(100 + index, -2.8 + 1.1 * index, PhantomOptions(spacing=SPACING))
        sitk.WriteImage(ct, str(folder / f"phantom{index}.nii.gz"), True)
    whole = gzip.compress(gzip.decompress((folder / "phantom0.nii.gz").read_bytes()))
    (folder / "corrupt.nii.gz").write_bytes(whole[: len(whole) // 3])
    (folder / "notes.txt").write_text("not a CT")  # ignored
    return folder


@pytest.fixture(scope="module")
def first_run(cts: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("batch-out") / "results"
    log = io.StringIO()
    table = batch(cts, out, workers=1, progress=log, include_identifiers=True)  # named cases
    return {"out": out, "table": table, "log": log.getvalue()}


def _summary(out: Path) -> pd.DataFrame:
    table = pd.read_csv(out / "summary.csv")
    return table.sort_values(["case_id", "side"]).reset_index(drop=True)


def test_batch_grades_phantoms_and_records_the_corrupt_file(first_run: dict) -> None:
    out, table = first_run["out"], first_run["table"]
    assert table.attrs["cases"] == N_PHANTOMS + 1
    assert table.attrs["failed"] == 1 and table.attrs["done"] == N_PHANTOMS
    summary = _summary(out)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert len(summary) == 2 * (N_PHANTOMS + 1)  # one row per case and side
    for index in range(N_PHANTOMS):
        case = summary[summary["case_id"] == f"phantom{index}"]
        assert (out / f"phantom{index}" / "result.json").exists()
        assert case["graded"].any(), case  # at least one femur graded per phantom
        graded = case[case["graded"]]
        total = graded[["p_normal", "p_osteopenia", "p_osteoporosis"]].sum(axis=1)
        assert ((total - 1).abs() < 1e-6).all()
        assert graded["predicted"].isin(["normal", "osteopenia", "osteoporosis"]).all()
        _check_quality_columns(case, out / f"phantom{index}" / "result.json")
    corrupt = summary[summary["case_id"] == "corrupt"]
    assert (corrupt["status"] == "error").all()
    assert corrupt["error"].str.contains("truncated|corrupt", case=False).all()
    record = json.loads((out / "corrupt.error.json").read_text(encoding="utf-8"))
    assert "truncated" in record["error"].lower() or "corrupt" in record["error"].lower()
    assert not (out / "corrupt").exists()
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no half-written folders
    assert f"{N_PHANTOMS + 1}/{N_PHANTOMS + 1} cases (1 failed" in first_run["log"]


def _check_quality_columns(case: pd.DataFrame, result_json: Path) -> None:
    """The summary's seg_quality / seg_quality_method are result.json's per side (the quality
    signal is on by default in batch, as in screen)."""
    import importlib.util

    result = json.loads(result_json.read_text(encoding="utf-8"))
    method = "dice_with_vbnet" + ("" if importlib.util.find_spec("torch") else "_unavailable")
    for _, row in case.iterrows():
        info = result[row["side"]]
        if info["status"] == "not_found":
            assert pd.isna(row["seg_quality"]) and pd.isna(row["seg_quality_method"])
            continue
        assert row["seg_quality_method"] == info["quality_method"] == method
        if info["quality"] is None:
            assert pd.isna(row["seg_quality"])
        else:
            assert 0.0 <= row["seg_quality"] <= 1.0
            assert row["seg_quality"] == pytest.approx(info["quality"], abs=1e-9)


def test_no_quality_and_options_checked_before_any_case(cts: Path, tmp_path: Path) -> None:
    """``batch --no-quality``: the summary's quality columns stay empty; a bad ``--kvp`` or
    ``--scanner-calibration`` file is refused before any case runs and nothing is written."""
    single = tmp_path / "in"
    single.mkdir()
    shutil.copy(cts / "phantom1.nii.gz", single / "phantom1.nii.gz")
    stdout, stderr = io.StringIO(), io.StringIO()
    bad = tmp_path / "bad"
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["batch", str(single), "--out", str(bad), "--kvp", "9"])
    assert code == 1 and "--kvp 9 is not a CT tube voltage" in stderr.getvalue()
    assert not bad.exists()
    site = tmp_path / "site.json"
    site.write_text("[]", encoding="utf-8")
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["batch", str(single), "--out", str(bad), "--scanner-calibration", str(site)])
    assert code == 1 and "not a FemurScreen site calibration" in stderr.getvalue()
    assert not bad.exists()
    out = tmp_path / "plain"
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["batch", str(single), "--out", str(out), "--no-quality", "--kvp", "120"])
    assert code == 0, stderr.getvalue()
    summary = _summary(out)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert summary["seg_quality"].isna().all() and summary["seg_quality_method"].isna().all()
    assert summary["graded"].any()
    result = json.loads(next(out.glob("*/result.json")).read_text(encoding="utf-8"))
    assert result["bmd"]["calibration"]["kvp"] == 120.0


def test_second_run_skips_finished_cases(first_run: dict, cts: Path) -> None:
    """Through the CLI with a process pool: the finished cases are not touched, the failed
    one is retried (and fails again), the summary is rewritten the same."""
    out = first_run["out"]
    before = _summary(out)
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(
            ["batch", str(cts), "--out", str(out), "--workers", "2", "--include-identifiers"]
        )
    assert code == 3, stderr.getvalue()  # finished, one case failed
    assert f"{N_PHANTOMS} of {N_PHANTOMS + 1} cases already done: skipped" in stderr.getvalue()
    assert "failed: corrupt:" in stderr.getvalue()
    assert f"{N_PHANTOMS} done" in stdout.getvalue() or "done before" in stdout.getvalue()
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/result.json")} == stamps
    pd.testing.assert_frame_equal(_summary(out), before)


def test_dask_scheduler_gives_the_same_summary(first_run: dict, cts: Path, tmp_path: Path):
    distributed = pytest.importorskip("dask.distributed")
    with (
        distributed.LocalCluster(
            n_workers=1, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
    ):
        table = batch(
            cts,
            tmp_path / "dask",
            scheduler=cluster.scheduler_address,
            progress=None,
            include_identifiers=True,
        )
    assert table.attrs["failed"] == 1 and table.attrs["done"] == N_PHANTOMS
    pd.testing.assert_frame_equal(_summary(tmp_path / "dask"), _summary(first_run["out"]))


def test_csv_input_relative_paths_and_missing_file(
    first_run: dict, cts: Path, tmp_path: Path
) -> None:
    """A CSV of relative paths with its own case_ids. P-001's result is already there (copied
    from the first run), so it is skipped, not screened again; the missing file is an error."""
    listing = cts / "cases.csv"
    listing.write_text("ct,case_id\nphantom1.nii.gz,P-001\nmissing.nii.gz,P-002\n")
    out = tmp_path / "csv"
    shutil.copytree(first_run["out"] / "phantom1", out / "P-001")
    try:
        cases = discover_cases(listing)
        assert [(c.case_id, c.path.name) for c in cases] == [
            ("P-001", "phantom1.nii.gz"),
            ("P-002", "missing.nii.gz"),
        ]
        table = batch(listing, out, progress=None)
    finally:
        listing.unlink()
    assert table.attrs["skipped"] == 1 and table.attrs["failed"] == 1
    rows = table.set_index(["case_id", "side"])
    assert rows.loc[("P-001", "right"), "status"] != "error"
    assert rows.loc[("P-002", "left"), "status"] == "error"
    assert "not found" in rows.loc[("P-002", "left"), "error"]
    assert (out / "P-002.error.json").exists()


def test_discovery_of_folders_and_refusals(tmp_path: Path, real_dicom_dir: Path) -> None:
    shutil.copytree(real_dicom_dir, tmp_path / "series1")
    (tmp_path / "two slices").mkdir()  # a fragment: listed as not screened, not a case
    for dicom in sorted(real_dicom_dir.iterdir())[:2]:
        (tmp_path / "two slices" / dicom.name).write_bytes(dicom.read_bytes())
    (tmp_path / "case two").mkdir()
    (tmp_path / "case two" / "ct.nrrd").write_bytes(b"x")
    (tmp_path / "case3").mkdir()
    (tmp_path / "case3" / "ct.nii.gz").write_bytes(b"x")
    (tmp_path / "case3" / "femur.nii.gz").write_bytes(b"x")  # its label map, not a second CT
    (tmp_path / "a b.mha").write_bytes(b"x")
    (tmp_path / "a_b.nii").write_bytes(b"x")  # same safe name as "a b.mha"
    (tmp_path / "seg.seg.nrrd").write_bytes(b"x")  # a segmentation, not a CT
    (tmp_path / ".hidden.nii.gz").write_bytes(b"x")
    cases = {c.case_id: c.path.name for c in discover_cases(tmp_path)}
    assert cases == {
        "a_b": "a b.mha",
        "a_b-2": "a_b.nii",
        "case_two": "ct.nrrd",
        "case3": "ct.nii.gz",
        "series1": "series1",
    }
    _, skipped = discover(tmp_path)
    assert [(s.name[:7], s.reason) for s in skipped] == [
        ("series-", "only 2 slice(s), fewer than 10")
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no CT files"):
        discover_cases(empty)
    bad = tmp_path / "bad.csv"
    bad.write_text("path\nx.nii\n")
    with pytest.raises(InputError, match="'ct' column"):
        discover_cases(bad)
