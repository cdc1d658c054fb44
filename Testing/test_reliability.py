"""Reliability defects found by a fault run (issue 10), each reproduced on real files.

Every test here failed before its fix: NaN voxels in NIfTI read as 0 HU, HU x 10 taken for
CT, upside-down and back-to-front headers graded, file names (patient names) in batch outputs,
output paths failing after the computation, a damaged model giving a zlib traceback, and the
weaker spots (damaged DICOM slice not named, batch "ok" for refused cases, stale temporary
folders, incomplete result folders skipped, two batches on one folder, user files deleted).
Inputs are the real sample CT and phantoms written by ``femurscreen.phantom``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from femurscreen.batch import batch
from femurscreen.classifier import default_model_dir, load_model
from femurscreen.cli import main
from femurscreen.errors import InputError, ModelError
from femurscreen.io.ct_checks import check_orientation, orientation_evidence, validate_ct
from femurscreen.io.ctio import read_ct
from femurscreen.phantom import PhantomOptions, make_case

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CT = ROOT / "FemurScreen" / "Resources" / "SampleData" / "totalseg_example_ct.nii.gz"
SPACING = (1.5, 1.5, 1.5)  # as in test_batch: fast, still segmentable
# Whole words of the file names below (numbers as whole dates: "1945" alone can be a digit run
# of a measurement).
IDENTIFIERS = ("DOE", "JOHN", "19450101", "ROE", "RICHARD", "19600303", "SMITH", "JANE", "19500202")


def cli(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in argv])
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def real() -> sitk.Image:
    return read_ct(SAMPLE_CT)


def with_array(reference: sitk.Image, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def flipped_header(image: sitk.Image, world_axis: int) -> sitk.Image:
    """The same voxels with the direction of the voxel axis nearest ``world_axis`` negated:
    what a converter that gets one axis wrong writes (the anatomy is mirrored in the world)."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    column = int(np.argmax(np.abs(direction[world_axis])))
    direction[:, column] *= -1
    out = sitk.Image(image)
    out.SetDirection(direction.ravel().tolist())
    return out


# --------------------------------------------------------------------------- 1: NaN / Inf


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha", ".nrrd"])
def test_non_finite_voxels_are_refused_in_every_format(tmp_path, real, suffix):
    array = sitk.GetArrayFromImage(real).astype(np.float32)
    array[40:60, 40:, :] = np.nan  # half the slices through the right hip, one half-plane
    array[5, 5, 5] = np.inf
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(with_array(real, array), str(path))
    with pytest.raises(InputError, match="non-finite") as info:
        read_ct(path)
    assert str(path) in str(info.value) and "1 Inf" in str(info.value)
    assert f"{int(np.isnan(array).sum())} NaN" in str(info.value)


def test_finite_float_nifti_still_reads_exactly(tmp_path, real):
    for pixel, suffix in ((sitk.sitkFloat32, ".nii.gz"), (sitk.sitkFloat64, ".nii")):
        path = tmp_path / f"float{suffix}"
        sitk.WriteImage(sitk.Cast(real, pixel), str(path))
        back = read_ct(path)
        assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(real))


def test_screen_refuses_nan_nifti_and_writes_nothing(tmp_path, real):
    array = sitk.GetArrayFromImage(real).astype(np.float32)
    array[40:60] = np.nan
    path = tmp_path / "nan.nii.gz"
    sitk.WriteImage(with_array(real, array), str(path))
    code, _, stderr = cli("screen", path, "--out", tmp_path / "out")
    assert code == 1 and "NaN" in stderr and str(path) in stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 2: HU x 10


def test_hu_times_ten_is_refused_with_the_reason(tmp_path, real):
    path = tmp_path / "x10.nrrd"
    scaled = sitk.GetArrayFromImage(real).astype(np.int32) * 10
    sitk.WriteImage(with_array(real, scaled), str(path))
    code, _, stderr = cli("segment", path, "--out", tmp_path / "mask.nii.gz")
    assert code == 1, stderr
    assert "multiplied by 10" in stderr and str(path) in stderr
    assert not (tmp_path / "mask.nii.gz").exists()


def test_padding_constant_far_below_air_is_not_taken_for_hu_times_ten(real):
    array = sitk.GetArrayFromImage(real)
    array[:, :12, :] = -10240  # a padding value some exports use outside the scan circle
    validate_ct(with_array(real, array))


# --------------------------------------------------------------------------- 3: orientation


def test_upside_down_real_ct_is_refused(tmp_path, real):
    with pytest.raises(InputError, match="upside down"):
        validate_ct(flipped_header(real, 2), "flipped")
    # the same defect as a MetaImage with a negative z spacing (ITK turns it into direction)
    sitk.WriteImage(real, str(tmp_path / "real.mha"))
    raw = (tmp_path / "real.mha").read_bytes()
    head, marker, data = raw.partition(b"ElementDataFile = LOCAL\n")
    assert b"ElementSpacing = 3 3 3" in head
    negative = tmp_path / "negative_z.mha"
    negative.write_bytes(head.replace(b"3 3 3", b"3 3 -3") + marker + data)
    code, _, stderr = cli("screen", negative, "--out", tmp_path / "out")
    assert code == 1 and "upside down" in stderr and str(negative) in stderr
    assert not (tmp_path / "out").exists()


def test_back_to_front_real_ct_is_refused(real):
    with pytest.raises(InputError, match="back to front"):
        validate_ct(flipped_header(real, 1), "flipped")
    both = flipped_header(flipped_header(real, 1), 2)  # turned 180 degrees about left-right
    with pytest.raises(InputError, match="upside down"):
        validate_ct(both, "flipped")


def test_left_right_flip_cannot_be_seen_and_is_not_refused(real):
    validate_ct(flipped_header(real, 0), "mirrored")  # documented in README


def _rotated(image: sitk.Image, axis: int, degrees: float) -> sitk.Image:
    centre = image.TransformContinuousIndexToPhysicalPoint([s / 2 for s in image.GetSize()])
    transform = sitk.Euler3DTransform()
    transform.SetCenter(centre)
    angles = [0.0, 0.0, 0.0]
    angles[axis] = np.radians(degrees)
    transform.SetRotation(*angles)
    return sitk.Resample(image, image, transform, sitk.sitkLinear, -1024.0)


def test_no_false_refusal_on_the_real_ct_and_its_variants(real):
    n = real.GetSize()
    fine = sitk.Resample(
        real,
        [int(n[0] * 2), int(n[1] * 2), int(n[2] * 2)],
        sitk.Transform(),
        sitk.sitkLinear,
        real.GetOrigin(),
        [1.5, 1.5, 1.5],
        real.GetDirection(),
        -1024.0,
    )
    variants = {
        "as is": real,
        "1.5 mm": fine,
        "left-right mirrored": flipped_header(real, 0),
        **{f"rotated {d} deg about {a}": _rotated(real, a, d) for a in range(3) for d in (-12, 10)},
        "lower half": real[:, :, : n[2] // 2],
        "upper half": real[:, :, n[2] // 2 :],
        "lower two thirds": real[:, :, : 2 * n[2] // 3],
        "upper two thirds": real[:, :, n[2] // 3 :],
        "centre box": real[n[0] // 6 : 5 * n[0] // 6, n[1] // 6 : 5 * n[1] // 6, n[2] // 4 :],
        "right half": real[: n[0] // 2],
        "left half": real[n[0] // 2 :],
        "posterior half": real[:, n[1] // 2 :],
        "anterior half": real[:, : n[1] // 2],
    }
    for orientation in ("LPS", "RAI", "SAL", "IRP", "PIR"):
        variants[f"stored {orientation}"] = sitk.DICOMOrient(real, orientation)
    for name, image in variants.items():
        validate_ct(image, name)  # raises on a false refusal
    assert orientation_evidence(real).air_vote == 1  # the lungs' bases are at the top


def _all_axis_orders() -> list[str]:
    import itertools

    codes = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((0, 1), repeat=3):
            codes.append(
                "".join(("LR", "PA", "SI")[w][s] for w, s in zip(perm, signs, strict=True))
            )
    return codes


@pytest.fixture(scope="module")
def coarse_phantoms() -> dict[str, sitk.Image]:
    """Phantoms stored with a plain, an oblique and two random axis orders (2.5 mm)."""
    out = {}
    for seed, direction in ((300, "lps"), (301, "oblique"), (302, "random"), (303, "random")):
        ct, _, _ = make_case(
            seed, -1.5, PhantomOptions(spacing=(2.5, 2.5, 2.5), direction=direction)
        )
        out[f"{direction}-{seed}"] = ct
    return out


def test_phantoms_of_all_48_axis_orders_pass_and_flips_are_refused(coarse_phantoms):
    codes = _all_axis_orders()
    assert len(set(codes)) == 48
    base = coarse_phantoms["lps-300"]
    reference = orientation_evidence(base)
    for code in codes:
        stored = sitk.DICOMOrient(base, code)
        evidence = check_orientation(stored, f"phantom stored {code}")  # raises if refused
        assert evidence.air_vote == reference.air_vote == 1, code
        assert evidence.spine_vote == reference.spine_vote == 1, code
    for name, ct in coarse_phantoms.items():
        validate_ct(ct, name)
        with pytest.raises(InputError, match="upside down"):
            validate_ct(flipped_header(ct, 2), name)
        with pytest.raises(InputError, match="back to front"):
            validate_ct(flipped_header(ct, 1), name)


# --------------------------------------------------------------------------- batch fixture


@pytest.fixture(scope="module")
def named_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CT files named like patients: one gradable, one with no gradable side, one truncated."""
    folder = tmp_path_factory.mktemp("identifiable")
    ct, _, _ = make_case(100, -2.8, PhantomOptions(spacing=SPACING))
    sitk.WriteImage(ct, str(folder / "DOE_JOHN_19450101.nii.gz"), True)
    options = PhantomOptions(spacing=SPACING, implant="left", truncate="right")
    ct, _, _ = make_case(11, -2.0, options)  # screen exits 1 for it: no side can be graded
    sitk.WriteImage(ct, str(folder / "ROE_RICHARD_19600303.nii.gz"), True)
    whole = gzip.compress(gzip.decompress((folder / "DOE_JOHN_19450101.nii.gz").read_bytes()))
    (folder / "SMITH_JANE_19500202.nii.gz").write_bytes(whole[: len(whole) // 3])
    return folder


@pytest.fixture(scope="module")
def batch_run(named_inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("batch") / "results"
    code, stdout, stderr = cli("batch", named_inputs, "--out", out)
    return {"out": out, "code": code, "stdout": stdout, "stderr": stderr}


def _every_output_text(out: Path) -> str:
    """Every path under ``out`` and the content of every text file there (embedded base64
    pictures left out: random letters there can spell anything)."""
    parts = []
    for path in sorted(out.rglob("*")):
        parts.append(str(path.relative_to(out)))
        if path.is_file() and path.suffix in (".html", ".json", ".csv", ".txt", ".lock"):
            text = path.read_text(encoding="utf-8", errors="replace")
            parts.append(re.sub(r"base64,[A-Za-z0-9+/=\s]+", "base64,", text))
    return "\n".join(parts)


def _identifiers_in(text: str) -> list[str]:
    return [w for w in IDENTIFIERS if re.search(rf"(?<![A-Za-z0-9]){w}(?![A-Za-z0-9])", text, re.I)]


# --------------------------------------------------------------------------- 4: identifiers


def test_batch_writes_no_file_name_anywhere(batch_run: dict) -> None:
    out = batch_run["out"]
    names = {p.name for p in out.iterdir()}
    assert any(n.startswith("CT-") for n in names), names
    assert (out / "summary.csv").exists()
    text = _every_output_text(out) + batch_run["stdout"] + batch_run["stderr"]
    assert _identifiers_in(text) == []
    assert "report.html" in text and "<html" in text.lower()  # the reports were searched
    assert _identifiers_in("x/DOE_JOHN_19450101.nii.gz") == ["DOE", "JOHN", "19450101"]
    result_files = list(out.glob("CT-*/result.json"))
    assert result_files  # DOE; ROE too when its segmentation gives a result (see below)
    for path in result_files:
        result = json.loads(path.read_text(encoding="utf-8"))
        assert result["case"] == path.parent.name and result["case_source"] == "fingerprint"


def test_file_names_only_with_include_identifiers(named_inputs: Path, tmp_path: Path) -> None:
    listing = tmp_path / "one.csv"
    listing.write_text(f"ct\n{named_inputs / 'SMITH_JANE_19500202.nii.gz'}\n")
    table = batch(listing, tmp_path / "named", include_identifiers=True, progress=None)
    assert list(table["case_id"].unique()) == ["SMITH_JANE_19500202"]
    assert (tmp_path / "named" / "SMITH_JANE_19500202.error.json").exists()
    assert "SMITH_JANE_19500202.nii.gz" in table["error"].iloc[0]  # then the path is shown


# --------------------------------------------------------------------------- 7: batch statuses


def test_batch_does_not_call_a_refused_case_ok(batch_run: dict) -> None:
    """ROE (implant left, right cut by the scan edge) is refused by ``screen``: either no side
    can be graded (exit 1 with a result folder) or no femur is found; never "ok"."""
    assert batch_run["code"] == 3, batch_run["stderr"]  # some cases failed
    summary = pd.read_csv(batch_run["out"] / "summary.csv")
    assert summary["graded"].sum() >= 1  # DOE
    assert "3 cases: 1 screened now, 0 done before, 2 failed" in batch_run["stdout"]
    assert summary["error"].str.contains("truncated or corrupted", na=False).sum() == 2  # SMITH
    refused = summary[~summary["graded"] & ~summary["error"].str.contains("truncated or", na=False)]
    assert len(refused) == 2 and refused["error"].str.len().gt(0).all()
    if (refused["status"] != "error").any():  # a result folder with the sides' statuses
        assert refused["error"].str.contains("no side could be graded").all()


def test_finished_case_without_graded_side_stays_failed(batch_run, named_inputs, tmp_path):
    """A result folder in which no side was graded (what ``screen`` exits 1 for) is not
    screened again, but it is counted as failed with the reason, also when skipped."""
    source = next(p.parent for p in batch_run["out"].glob("CT-*/result.json") if _graded(p))
    out = tmp_path / "out"
    shutil.copytree(source, out / "P-1")
    result = json.loads((out / "P-1" / "result.json").read_text(encoding="utf-8"))
    for side, status in (("left", "implant"), ("right", "truncated")):
        result[side].update(status=status, graded=False, probabilities=None, predicted=None)
        result[side]["reason"] = f"{status}: side not graded"
    result["graded_sides"] = []
    (out / "P-1" / "result.json").write_text(json.dumps(result), encoding="utf-8")
    listing = tmp_path / "cases.csv"
    listing.write_text(f"ct,case_id\n{named_inputs / 'DOE_JOHN_19450101.nii.gz'},P-1\n")
    code, stdout, stderr = cli("batch", listing, "--out", out)
    assert code == 3, stderr
    assert "1 done before, 1 failed" in stdout
    assert "failed: P-1: no side could be graded (right: truncated" in stderr
    rows = pd.read_csv(out / "summary.csv").set_index("side")
    assert list(rows.loc[["left", "right"], "status"]) == ["implant", "truncated"]
    assert rows["error"].str.contains("no side could be graded").all()


def test_result_without_report_is_screened_again(batch_run: dict, named_inputs: Path, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(batch_run["out"], out)
    graded = [p.parent for p in out.glob("CT-*/result.json") if _graded(p)]
    assert len(graded) == 1
    (graded[0] / "report.html").unlink()
    stamp = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("CT-*/result.json")}
    listing = tmp_path / "doe.csv"  # the same input path: the index knows its fingerprint
    listing.write_text(f"ct\n{named_inputs / 'DOE_JOHN_19450101.nii.gz'}\n")
    table = batch(listing, out, progress=None)
    assert (graded[0] / "report.html").is_file()
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("CT-*/result.json")}
    assert after[graded[0].name] != stamp[graded[0].name]  # screened again
    others = [name for name in stamp if name != graded[0].name]
    assert all(after[name] == stamp[name] for name in others)  # the other one skipped
    assert table.attrs["done"] == 1 and table.attrs["failed"] == 0


def _graded(result_json: Path) -> bool:
    return bool(json.loads(result_json.read_text(encoding="utf-8"))["graded_sides"])


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from femurscreen.batch import _BatchLock
with _BatchLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_batch_on_the_same_folder_is_refused(named_inputs: Path, tmp_path: Path):
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, stderr = cli("batch", named_inputs, "--out", out)
        assert code == 1
        assert "another batch is already writing into this folder" in stderr
        assert f"process {holder.pid}" in stderr
        assert not (out / "summary.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is stale and the next batch takes it over
    assert (out / ".femurscreen-batch.lock").exists()
    listing = tmp_path / "one.csv"
    listing.write_text(f"ct\n{named_inputs / 'SMITH_JANE_19500202.nii.gz'}\n")
    table = batch(listing, out, progress=None)
    assert table.attrs["failed"] == 1
    assert not (out / ".femurscreen-batch.lock").exists()


# --------------------------------------------------------------------------- 7: screen folders


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from femurscreen.atomic import atomic_dir
with atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "femur.nii.gz").write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_rerun_keeps_user_files_and_cleans_only_its_stale_temp_folders(batch_run, named_inputs):
    out_root = batch_run["out"].parent / "screen"
    out = out_root / "case"
    source = next(p.parent for p in batch_run["out"].glob("CT-*/result.json") if _graded(p))
    shutil.copytree(source, out)
    (out / "my notes.txt").write_text("reviewed by Dr X")  # the user's own file
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(out)], check=False)
    assert killed.returncode == -signal.SIGKILL
    stale = list(out_root.glob(".case.tmp-*"))
    assert len(stale) == 1  # what a killed screen leaves
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        busy = out_root / ".case.tmp-busy"
        busy.mkdir()
        (busy / ".femurscreen-owner").write_text(
            json.dumps({"pid": live.pid, "host": socket.gethostname(), "time": time.time()})
        )
        foreign = out_root / ".case.tmp-foreign"  # not ours: no owner file
        foreign.mkdir()
        code, _, stderr = cli("screen", named_inputs / "DOE_JOHN_19450101.nii.gz", "--out", out)
        assert code == 0, stderr
    finally:
        live.kill()
        live.wait()
    assert not stale[0].exists()
    assert busy.exists() and foreign.exists()  # a live writer's and a foreign folder stay
    assert (out / "my notes.txt").read_text() == "reviewed by Dr X"
    assert (out / "report.html").is_file() and (out / "result.json").is_file()
    assert not list(out_root.glob(".case.old-*"))


# --------------------------------------------------------------------------- 5: output paths


def _never(*args, **kwargs):
    raise AssertionError("the computation started although the destination is unusable")


@pytest.mark.parametrize("verb", ["screen", "segment", "batch"])
def test_unwritable_destination_fails_before_computing(verb, tmp_path, monkeypatch):
    import femurscreen.io.ctio

    monkeypatch.setattr(femurscreen.io.ctio, "read_ct", _never)
    out = Path("/proc/femurscreen-test") / ("mask.nii.gz" if verb == "segment" else "out")
    source = SAMPLE_CT.parent if verb == "batch" else SAMPLE_CT
    code, _, stderr = cli(verb, source, "--out", out)
    assert code == 1 and "Traceback" not in stderr
    assert "cannot write there" in stderr and str(out) in stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_parent_folder(tmp_path, monkeypatch):
    import femurscreen.io.ctio

    monkeypatch.setattr(femurscreen.io.ctio, "read_ct", _never)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, stderr = cli("screen", SAMPLE_CT, "--out", locked / "out")
        assert code == 1 and "cannot write there" in stderr
    finally:
        locked.chmod(0o755)


def test_segment_out_must_be_a_label_file(tmp_path, monkeypatch):
    import femurscreen.io.ctio

    monkeypatch.setattr(femurscreen.io.ctio, "read_ct", _never)
    code, _, stderr = cli("segment", SAMPLE_CT, "--out", tmp_path)
    assert code == 1 and "points to a folder" in stderr and ".nii.gz" in stderr
    code, _, stderr = cli("segment", SAMPLE_CT, "--out", tmp_path / "mask.txt")
    assert code == 1 and ".txt" in stderr and "not a label map format" in stderr
    assert not (tmp_path / "mask.txt").exists()


def test_batch_out_must_not_be_a_file(tmp_path, named_inputs, monkeypatch):
    import femurscreen.batch

    monkeypatch.setattr(femurscreen.batch, "run_case", _never)
    taken = tmp_path / "results"
    taken.write_text("a file")
    code, _, stderr = cli("batch", named_inputs, "--out", taken)
    assert code == 1 and "existing file, not a folder" in stderr and str(taken) in stderr
    assert taken.read_text() == "a file"


# --------------------------------------------------------------------------- 6: models


def _corrupt_with_updated_hash(tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(default_model_dir(), copy)
    data = bytearray((copy / "model.skops").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    (copy / "model.skops").write_bytes(bytes(data))
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["sha256"] = hashlib.sha256(bytes(data)).hexdigest()  # "repaired" by hand
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return copy


def test_corrupted_model_with_matching_hash_is_a_clear_error(tmp_path, real):
    model = _corrupt_with_updated_hash(tmp_path)
    with pytest.raises(ModelError, match="model cannot be read") as info:
        load_model(model)
    assert str(model / "model.skops") in str(info.value)
    code, _, stderr = cli("screen", SAMPLE_CT, "--out", tmp_path / "out", "--model", model)
    assert code == 1 and "model cannot be read" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def test_model_bytes_are_read_once_and_those_are_loaded(monkeypatch):
    """Hash and deserialisation see the same bytes: the file is opened exactly once."""
    import builtins
    import io as io_module

    opened: list[str] = []
    real_open = io_module.open

    def counting_open(file, *args, **kwargs):
        if str(file).endswith("model.skops"):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io_module, "open", counting_open)
    monkeypatch.setattr(builtins, "open", counting_open)
    loaded = load_model(default_model_dir())
    assert loaded.features and len(opened) == 1, opened


# --------------------------------------------------------------------------- 7: DICOM


def test_damaged_dicom_slice_is_named(tmp_path):
    from test_ctio import UID_ROOT, make_image, phantom_array, write_dicom_series

    folder = tmp_path / "series"
    files = write_dicom_series(make_image(phantom_array()), folder, series_uid=UID_ROOT + ".90")
    damaged = bytearray(files[6].read_bytes())
    damaged[140:400] = b"\xab" * 260  # the header after the preamble is garbage
    files[6].write_bytes(bytes(damaged))
    with pytest.raises(InputError, match="cannot be read") as info:
        read_ct(folder)
    assert str(files[6]) in str(info.value)
