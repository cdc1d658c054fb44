"""CT input: every format keeps its true geometry and HU values; bad input is refused clearly.

All test files are written into tmp_path by the tests themselves (real SimpleITK/GDCM writers),
except the two real samples shipped in FemurScreen/Resources/SampleData.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from femurscreen.cli import main
from femurscreen.errors import InputError
from femurscreen.io.ct_checks import (
    MIN_AIR_FRACTION,
    describe_ct,
    hounsfield_stats,
    orientation_code,
    validate_ct,
)
from femurscreen.io.ctio import as_ct_pixel_type, ct_info, dicom_series, read_ct

SAMPLES = Path(__file__).resolve().parents[1] / "FemurScreen" / "Resources" / "SampleData"
SAMPLE_CT = SAMPLES / "totalseg_example_ct.nii.gz"
SAMPLE_DICOM = SAMPLES / "totalseg_example_ct_dicom"
UID_ROOT = "1.2.826.0.1.3680043.2.1125.77"
STUDY_UID = UID_ROOT + ".1"


# --------------------------------------------------------------------------- test data


def rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    """Right-handed rotation matrix (Rodrigues), det +1."""
    k = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = math.radians(degrees)
    return np.eye(3) + math.sin(t) * kx + (1 - math.cos(t)) * kx @ kx


OBLIQUE = rotation((1.0, 2.0, 3.0), 25.0)


def phantom_array(shape_zyx: tuple[int, int, int] = (16, 40, 48), seed: int = 0) -> np.ndarray:
    """CT-like HU values: air, a body of fat and muscle, a bone with cortex; int16 with noise."""
    nz, ny, nx = shape_zyx
    z, y, x = np.meshgrid(
        np.linspace(-1, 1, nz), np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij"
    )
    hu = np.full(shape_zyx, -1000.0)
    hu[(x / 0.9) ** 2 + (y / 0.8) ** 2 < 1] = -100.0  # subcutaneous fat
    hu[(x / 0.7) ** 2 + (y / 0.6) ** 2 < 1] = 45.0  # muscle
    bone = (x - 0.3) ** 2 + y**2
    hu[bone < 0.25**2] = 900.0  # cortex
    hu[bone < 0.18**2] = 180.0 + 40.0 * z[bone < 0.18**2]  # cancellous
    noise = np.random.default_rng(seed).normal(0.0, 8.0, shape_zyx)
    return np.clip(np.rint(hu + noise), -1024, 3071).astype(np.int16)


def make_image(
    array: np.ndarray,
    spacing: tuple[float, float, float] = (0.7, 0.85, 2.5),
    origin: tuple[float, float, float] = (-123.4, 56.7, -890.1),
    direction: np.ndarray = OBLIQUE,
) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(np.asarray(direction, dtype=float).ravel().tolist())
    return image


def write_dicom_series(
    image: sitk.Image,
    folder: Path,
    *,
    series_uid: str,
    description: str = "synthetic CT",
    modality: str = "CT",
    slope: float = 1.0,
    intercept: float = -1024.0,
    positions: list[tuple[float, float, float]] | None = None,
    prefix: str = "slice",
    extra_tags: tuple[tuple[str, str], ...] = (),
) -> list[Path]:
    """The standard SimpleITK "write a DICOM series" recipe, one file per slice.

    The writer stores (value - intercept) / slope, so a reader must apply the rescale to get
    the HU back. ``positions`` overrides ImagePositionPatient (to fake gaps or gantry tilt).
    """
    folder.mkdir(parents=True, exist_ok=True)
    d = image.GetDirection()
    orientation = (d[0], d[3], d[6], d[1], d[4], d[7])  # row and column cosines
    tags = [
        ("0008|0060", modality),
        ("0008|0008", "DERIVED\\SECONDARY\\AXIAL"),
        ("0008|103e", description),
        ("0010|0010", "Phantom^Test"),
        ("0010|0020", "PHANTOM01"),
        ("0020|000d", STUDY_UID),
        ("0020|000e", series_uid),
        ("0020|0011", "7"),
        ("0020|0037", "\\".join(f"{v:.10g}" for v in orientation)),
        ("0018|0050", f"{image.GetSpacing()[2]:.10g}"),  # SliceThickness
        ("0028|1052", f"{intercept:g}"),  # RescaleIntercept
        ("0028|1053", f"{slope:g}"),  # RescaleSlope
        ("0028|1054", "HU"),
        *extra_tags,
    ]
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):  # stored as int16
        tags += [("0028|0100", "16"), ("0028|0101", "16"), ("0028|0102", "15"), ("0028|0103", "1")]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        for key, value in tags:
            slice_.SetMetaData(key, value)
        position = positions[k] if positions else image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in position))
        slice_.SetMetaData("0020|0013", str(k + 1))  # InstanceNumber
        slice_.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")  # SOPInstanceUID
        path = folder / f"{prefix}{k:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(slice_)
        files.append(path)
    return files


def write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path), useCompression=path.name.endswith((".gz", ".mha")))
    return path


def write_metaimage(path: Path, matrix: str = "1 0 0 0 1 0 0 0 1", spacing: str = "1 1 1") -> Path:
    """A hand-written MetaImage with the header fields a writer would never produce."""
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        f"CompressedData = False\nTransformMatrix = {matrix}\nOffset = 0 0 0\n"
        f"ElementSpacing = {spacing}\nDimSize = 48 40 16\nElementType = MET_SHORT\n"
        "ElementDataFile = LOCAL\n"
    )
    path.write_bytes(header.encode() + phantom_array().astype("<i2").tobytes())
    return path


def assert_same_geometry(actual: sitk.Image, expected: sitk.Image, atol: float) -> None:
    assert actual.GetSize() == expected.GetSize()
    np.testing.assert_allclose(actual.GetSpacing(), expected.GetSpacing(), rtol=0, atol=atol)
    np.testing.assert_allclose(actual.GetOrigin(), expected.GetOrigin(), rtol=0, atol=atol)
    np.testing.assert_allclose(actual.GetDirection(), expected.GetDirection(), rtol=0, atol=atol)


def refused(path: Path | str, *words: str, **kwargs) -> InputError:
    """read_ct must raise InputError naming the input and containing every word."""
    with pytest.raises(InputError) as caught:
        read_ct(path, **kwargs)
    message = caught.value.message
    assert Path(path).name in message, message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in: {message}"
    return caught.value


@pytest.fixture(scope="module")
def sample_ct() -> sitk.Image:
    return read_ct(SAMPLE_CT)


@pytest.fixture
def phantom() -> sitk.Image:
    return make_image(phantom_array())


# --------------------------------------------------------------------------- good input


def test_sample_nifti_keeps_the_file_geometry_and_values(sample_ct):
    raw = sitk.ReadImage(str(SAMPLE_CT))
    assert raw.GetPixelID() == sitk.sitkInt32  # stored as int32; we hand out int16
    assert sample_ct.GetPixelID() == sitk.sitkInt16
    assert sample_ct.GetSize() == (122, 101, 112)
    assert sample_ct.GetSpacing() == raw.GetSpacing() == (3.0, 3.0, 3.0)
    assert sample_ct.GetOrigin() == raw.GetOrigin()
    assert sample_ct.GetDirection() == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    assert np.array_equal(sitk.GetArrayViewFromImage(sample_ct), sitk.GetArrayViewFromImage(raw))


FORMATS = [".nii.gz", ".nrrd", ".mha", "dicom"]
ROUND_TRIPS = [("sample", f) for f in FORMATS] + [("oblique", f) for f in FORMATS]
# det -1 is representable in NIfTI/NRRD/MHA, not in DICOM (slice normal = row x column)
ROUND_TRIPS += [("left-handed", f) for f in FORMATS if f != "dicom"]


@pytest.mark.parametrize(("source", "fmt"), ROUND_TRIPS)
def test_every_format_round_trips_geometry_and_values(tmp_path, sample_ct, source, fmt):
    if source == "sample":
        original = sample_ct
    elif source == "oblique":
        original = make_image(phantom_array())
    else:
        original = make_image(phantom_array(), direction=OBLIQUE @ np.diag([1.0, 1.0, -1.0]))
    if fmt == "dicom":
        write_dicom_series(original, tmp_path / "series", series_uid=UID_ROOT + ".2")
        path = tmp_path / "series"
    else:
        path = write(original, tmp_path / f"ct{fmt}")
    image = read_ct(path)
    # NIfTI stores geometry as float32 and DICOM as decimal strings; NRRD/MHA keep doubles
    assert_same_geometry(image, original, atol=1e-4 if fmt in (".nii.gz", "dicom") else 1e-9)
    assert image.GetPixelID() == sitk.sitkInt16
    assert np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(original))


def test_dicom_rescale_is_applied(tmp_path, phantom):
    files = write_dicom_series(phantom, tmp_path / "s", series_uid=UID_ROOT + ".3")
    hu = sitk.GetArrayViewFromImage(phantom)
    nx, ny = phantom.GetSize()[:2]
    stored = np.frombuffer(files[0].read_bytes()[-nx * ny * 2 :], "<i2").reshape(ny, nx)
    assert np.array_equal(stored, hu[0] + 1024)  # the file holds stored values, not HU
    assert np.array_equal(sitk.GetArrayViewFromImage(read_ct(tmp_path / "s")), hu)


def test_dicom_scanner_tags_reach_the_image(tmp_path, phantom):
    """What the calibrated density keys a site calibration by (and the kVp its energy prior)
    travels from the series' header onto the image; a NIfTI file has none of it."""
    tags = (
        ("0018|0060", "100 "),  # KVP, padded as DICOM strings are
        ("0008|0070", "ACME Medical"),
        ("0008|1090", "Scan 64"),
        ("0018|1210", "B30f"),
    )
    write_dicom_series(phantom, tmp_path / "s", series_uid=UID_ROOT + ".8", extra_tags=tags)
    image = read_ct(tmp_path / "s")
    from femurscreen.bmd.site import scan_tags

    assert scan_tags(image) == {
        "manufacturer": "ACME Medical",
        "model": "Scan 64",
        "kvp": 100.0,
        "kernel": "B30f",
    }
    nifti = read_ct(write(image, tmp_path / "ct.nii.gz"))
    assert set(scan_tags(nifti).values()) == {None}


def test_dicom_with_fractional_rescale_gives_exact_float32(tmp_path, phantom):
    hu = sitk.GetArrayFromImage(phantom).astype(np.float64) + 0.5  # half-HU steps
    image = make_image(hu)
    write_dicom_series(image, tmp_path / "s", series_uid=UID_ROOT + ".4", slope=0.5, intercept=0)
    result = read_ct(tmp_path / "s")
    assert result.GetPixelID() == sitk.sitkFloat32
    assert np.array_equal(sitk.GetArrayViewFromImage(result), hu)
    assert_same_geometry(result, image, atol=1e-4)


def test_real_dicom_series_with_empty_series_uid():
    assert sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(SAMPLE_DICOM)) == ("",)
    image = read_ct(SAMPLE_DICOM)
    assert image.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(image.GetSpacing(), (0.9765625, 0.9765625, 2.0), atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), (-249.51171875, -437.51171875, -804.5))
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel())
    array = sitk.GetArrayViewFromImage(image)
    assert array.min() == -1024  # stored 0 with intercept -1024: the rescale was applied
    assert ((array >= -1100) & (array <= -900)).mean() > 0.3  # air
    assert 30 < np.median(array[array > -200]) < 200  # soft tissue lies near 0..100 HU
    assert image.GetPixelID() == sitk.sitkInt16
    # the empty UID is a real, selectable UID; one file of the series reads the whole series
    same = read_ct(SAMPLE_DICOM, series_uid="")
    one_file = read_ct(sorted(SAMPLE_DICOM.iterdir())[7])
    for other in (same, one_file):
        assert_same_geometry(other, image, atol=0)
        assert np.array_equal(sitk.GetArrayViewFromImage(other), array)
    info = ct_info(SAMPLE_DICOM)
    assert info["series_uid"] == ""
    assert info["dicom_files"] == 20
    assert info["series_description"] == "CT Body 3.0"


def test_two_dicom_series_must_be_chosen(tmp_path, phantom):
    folder = tmp_path / "study"
    first, second = UID_ROOT + ".10", UID_ROOT + ".11"
    write_dicom_series(phantom, folder, series_uid=first, description="Abdomen 1.0", prefix="a")
    small = make_image(phantom_array((9, 40, 48), seed=1), origin=(10.0, 20.0, 30.0))
    write_dicom_series(small, folder, series_uid=second, description="Bone 2.0", prefix="b")
    error = refused(folder, "several DICOM series", first, second, "Abdomen 1.0", "Bone 2.0")
    assert "16 slices" in error.message and "9 slices" in error.message
    assert "--series" in error.message
    assert {(s.uid, s.slices) for s in dicom_series(folder)} == {(first, 16), (second, 9)}
    chosen = read_ct(folder, series_uid=second)
    assert_same_geometry(chosen, small, atol=1e-4)
    assert np.array_equal(sitk.GetArrayViewFromImage(chosen), sitk.GetArrayViewFromImage(small))
    assert read_ct(folder, series_uid=first).GetSize() == phantom.GetSize()
    refused(folder, "no DICOM series with UID", first, second, series_uid="1.2.3")


def test_tight_crops_without_air_still_pass(sample_ct):
    """The air rule must not refuse a CT cropped inside the skin (see ct_checks rule 2b)."""
    array = sitk.GetArrayFromImage(sample_ct)
    checked = 0
    for z in range(0, 92, 10):
        for y in range(0, 81, 10):
            for x in range(0, 102, 10):
                crop = sitk.GetImageFromArray(array[z : z + 20, y : y + 20, x : x + 20])
                if hounsfield_stats(crop).air_fraction < MIN_AIR_FRACTION:
                    validate_ct(crop, f"crop at {(x, y, z)}")
                    checked += 1
    assert checked > 100  # many air-free boxes, bone-rich and fat-only ones among them
    phantom_inside = phantom_array((16, 80, 96))[:, 24:56, 20:76]  # inside the body outline
    assert (phantom_inside < -900).mean() == 0
    validate_ct(make_image(phantom_inside))


def test_four_d_with_one_time_point_is_a_volume(tmp_path, phantom):
    path = write(sitk.JoinSeries([phantom]), tmp_path / "one_phase.nrrd")
    assert sitk.ReadImage(str(path)).GetDimension() == 4
    image = read_ct(path)
    assert image.GetDimension() == 3
    assert_same_geometry(image, phantom, atol=1e-9)


def test_pixel_type_policy_never_rounds():
    base = phantom_array()
    fractional = as_ct_pixel_type(sitk.GetImageFromArray(base.astype(np.float64) + 0.25))
    assert fractional.GetPixelID() == sitk.sitkFloat32
    assert np.array_equal(sitk.GetArrayViewFromImage(fractional), base + 0.25)
    integral = as_ct_pixel_type(sitk.GetImageFromArray(base.astype(np.float32)))
    assert integral.GetPixelID() == sitk.sitkInt16
    wide = base.astype(np.int32)
    wide[0, 0, 0] = 40000  # extended-range value that int16 cannot hold
    kept = as_ct_pixel_type(sitk.GetImageFromArray(wide))
    assert kept.GetPixelID() == sitk.sitkFloat32
    assert np.array_equal(sitk.GetArrayViewFromImage(kept), wide)


def test_orientation_codes():
    assert orientation_code(np.eye(3)) == "LPS"
    assert orientation_code(np.diag([-1.0, -1.0, 1.0])) == "RAS"
    assert orientation_code(np.diag([1.0, 1.0, -1.0])) == "LPI"
    sagittal = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)  # columns: P, I, L
    assert orientation_code(sagittal) == "PIL"
    rng = np.random.default_rng(3)
    for _ in range(20):  # mildly oblique: agree with ITK's own closest-orientation code
        d = np.diag(rng.choice([-1.0, 1.0], 3)) @ rotation(rng.normal(size=3), rng.uniform(0, 30))
        itk = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(d.ravel().tolist())
        assert orientation_code(d) == itk


def test_describe_ct(sample_ct, phantom):
    info = describe_ct(sample_ct)
    assert info["orientation"] == "RAS"
    assert info["size"] == [122, 101, 112]
    assert info["extent_mm"] == [366.0, 303.0, 336.0]
    assert (info["hu_min"], info["hu_max"]) == (-1207.0, 3382.0)
    assert 0.2 < info["hu_fractions"]["air_fraction"] < 0.5
    json.dumps(info)  # serialisable as it is
    oblique = describe_ct(phantom)
    assert oblique["oblique_degrees"] > 10
    assert oblique["orientation"] == orientation_code(OBLIQUE)


# --------------------------------------------------------------------------- bad input


def test_missing_path(tmp_path):
    refused(tmp_path / "nowhere.nii.gz", "not found")


def test_truncated_and_corrupted_files(tmp_path, phantom):
    data = SAMPLE_CT.read_bytes()
    half = tmp_path / "half.nii.gz"
    half.write_bytes(data[: len(data) // 2])
    assert sitk.ReadImage(str(half)).GetSize() == (122, 101, 112)  # SimpleITK alone says "fine"
    refused(half, "truncated")
    plain = tmp_path / "half.nii"
    plain.write_bytes(gzip.decompress(data)[: len(gzip.decompress(data)) // 2])
    refused(plain, "truncated", "bytes")
    damaged = bytearray(data)
    damaged[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(bytes(damaged))
    refused(corrupt, "corrupted")
    for suffix in (".nrrd", ".mha"):
        full = write(phantom, tmp_path / f"full{suffix}").read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(full[: len(full) * 2 // 3])
        refused(cut, "cannot be read", "truncated")


def test_not_an_image(tmp_path):
    text = tmp_path / "notes.nrrd"
    text.write_text("this is a text file, not an image\n")
    refused(text, "cannot be read", "renamed")
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    refused(empty, "empty")


def test_wrong_dimensions(tmp_path, phantom):
    refused(write(phantom[:, :, 3], tmp_path / "slice.nrrd"), "2D")
    refused(write(phantom[:, :, 3:4], tmp_path / "one_slice.mha"), "single slice")
    refused(write(sitk.JoinSeries([phantom] * 3), tmp_path / "phases.nii.gz"), "4D")
    refused(write(sitk.Compose(phantom, phantom, phantom), tmp_path / "rgb.mha"), "multicomponent")


def test_mr_like_intensities(tmp_path):
    rng = np.random.default_rng(5)
    mr = np.where(phantom_array() > -500, rng.uniform(200, 900, (16, 40, 48)), 0.0)
    path = write(make_image(mr.astype(np.uint16)), tmp_path / "t1.nii.gz")
    refused(path, "not CT", "MR", "no voxel is below 0")


def test_raw_stored_values_without_rescale(tmp_path):
    stored = phantom_array().astype(np.int32) + 1024
    refused(
        write(make_image(stored.astype(np.uint16)), tmp_path / "raw.nrrd"),
        "raw stored values",
        "rescale",
    )
    padded = stored.astype(np.int16)
    padded[:, :6, :6] = -2000  # GE-style padding outside the scan circle: negative, yet not HU
    refused(write(make_image(padded), tmp_path / "raw_padded.mha"), "raw stored values")


def test_no_air(tmp_path):
    rng = np.random.default_rng(6)
    uniform = rng.integers(-50, 3000, (16, 40, 48)).astype(np.int16)
    refused(write(make_image(uniform), tmp_path / "noair.nrrd"), "not CT", "air")
    hu = phantom_array().astype(np.float32)
    zscores = (hu - hu.mean()) / hu.std()
    refused(write(make_image(zscores), tmp_path / "normalised.nii.gz"), "not CT", "air")


def test_non_finite_voxels(tmp_path):
    hu = phantom_array().astype(np.float32)
    hu[3, 4, 5] = np.nan
    refused(write(make_image(hu), tmp_path / "nan.nrrd"), "NaN", "1 NaN")
    hu[3, 4, 5] = np.inf
    refused(write(make_image(hu), tmp_path / "inf.mha"), "non-finite", "1 Inf")


def test_bad_spacing_and_direction(tmp_path, phantom):
    refused(write_metaimage(tmp_path / "zero_spacing.mha", spacing="0 1 1"), "spacing")
    refused(
        write_metaimage(tmp_path / "sheared.mha", matrix="1 0.5 0 0 1 0 0 0 1"),
        "direction",
        "orthonormal",
    )
    refused(write_metaimage(tmp_path / "singular.mha", matrix="1 0 0 1 0 0 0 0 1"), "direction")
    phantom.SetSpacing((float("nan"), 1.0, 1.0))  # possible in memory, e.g. from another tool
    with pytest.raises(InputError, match="spacing") as caught:
        validate_ct(phantom, "Slicer volume 'CT'")
    assert caught.value.message.startswith("Slicer volume 'CT': ")


def test_validate_ct_accepts_in_memory_ct_and_names_it(phantom):
    validate_ct(phantom)
    with pytest.raises(InputError, match="^the image: is a 2D image"):
        validate_ct(phantom[:, :, 0])


def test_dicom_folder_problems(tmp_path, phantom):
    empty = tmp_path / "nodicom"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    refused(empty, "no DICOM files")
    write(phantom, empty / "ct.nii.gz")
    refused(empty, "no DICOM files", "ct.nii.gz")

    gap = tmp_path / "gap"
    files = write_dicom_series(phantom, gap, series_uid=UID_ROOT + ".20")
    files[6].unlink()
    refused(gap, "non-uniform slice spacing", "missing")

    tilt = tmp_path / "tilt"
    row = np.asarray(phantom.GetDirection()).reshape(3, 3)[:, 0]
    positions = [
        tuple(np.asarray(phantom.TransformIndexToPhysicalPoint((0, 0, k))) + 1.0 * k * row)
        for k in range(phantom.GetDepth())
    ]
    write_dicom_series(phantom, tilt, series_uid=UID_ROOT + ".21", positions=positions)
    refused(tilt, "gantry tilt")

    twice = tmp_path / "twice"
    positions = [phantom.TransformIndexToPhysicalPoint((0, 0, min(k, 14))) for k in range(16)]
    write_dicom_series(phantom, twice, series_uid=UID_ROOT + ".22", positions=positions)
    refused(twice, "same position")

    mr = tmp_path / "mr"
    write_dicom_series(phantom, mr, series_uid=UID_ROOT + ".23", modality="MR")
    refused(mr, "modality MR", "not CT")

    lonely = tmp_path / "lonely"
    write_dicom_series(phantom[:, :, 2:3], lonely, series_uid=UID_ROOT + ".24")
    refused(next(lonely.iterdir()), "single DICOM slice", "folder")
    refused(lonely, "single slice")


def test_series_uid_only_for_dicom(tmp_path, phantom):
    refused(write(phantom, tmp_path / "ct.nrrd"), "not a DICOM series", series_uid="1.2.3")


# --------------------------------------------------------------------------- command line


def test_cli_info_on_good_input(capsys):
    assert main(["info", str(SAMPLE_CT), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["orientation"] == "RAS"
    assert info["size"] == [122, 101, 112]
    assert info["spacing_mm"] == [3.0, 3.0, 3.0]
    assert info["format"] == "NIfTI"
    assert main(["info", str(SAMPLE_DICOM)]) == 0
    out = capsys.readouterr().out
    assert "512 x 512 x 20" in out and "LPS" in out and "-1024 .. 1839" in out


def test_cli_info_refuses_bad_input(tmp_path, capsys, phantom):
    missing = tmp_path / "missing.nii.gz"
    assert main(["info", str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "femurscreen info: error:" in captured.err
    assert "missing.nii.gz" in captured.err and "not found" in captured.err

    folder = tmp_path / "two"
    write_dicom_series(phantom, folder, series_uid=UID_ROOT + ".30", prefix="a")
    write_dicom_series(phantom[:, :, :5], folder, series_uid=UID_ROOT + ".31", prefix="b")
    assert main(["info", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "several DICOM series" in err and UID_ROOT + ".30" in err and UID_ROOT + ".31" in err
    assert main(["info", str(folder), "--series", UID_ROOT + ".31", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == [48, 40, 5]


def femurscreen_command() -> list[str]:
    """The installed console script of the running venv (CI's venv too), else the module."""
    script = shutil.which("femurscreen", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "femurscreen"]


def test_installed_script_exit_codes(tmp_path):
    bad = tmp_path / "scan.nrrd"
    bad.write_text("not a scan\n")
    result = subprocess.run(
        [*femurscreen_command(), "info", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "scan.nrrd" in result.stderr and "cannot be read" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # the good path is covered in-process (start-up is slow)
