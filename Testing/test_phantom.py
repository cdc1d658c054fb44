"""The synthetic CT phantom, checked on files it writes and SimpleITK reads back.

Small cases (coarse spacing or a field of view around the hips) keep the file fast; the
checks are about geometry (sides, orientation, joint space, label cut), the density model,
determinism and the command line's contract.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from cli_runner import run_cli
from femurscreen.cli import phantom as phantom_cli
from femurscreen.labels import LEFT, RIGHT, bone_status
from femurscreen.phantom import (
    CSV_COLUMNS,
    PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM,
    SIGNED_PERMUTATIONS,
    PhantomOptions,
    make_case,
    make_cohort,
    phantom_grid,
    prepare,
    read_cohort,
)
from femurscreen.phantom.anatomy import sample_density
from femurscreen.phantom.bone_paint import pelvis_distance
from femurscreen.phantom.grid import DIRECTION_MODES, SIZES, direction_for
from femurscreen.phantom.voxelize import finish
from scipy import ndimage
from scipy.stats import spearmanr


def hips_fov(seed: int, t: float, margin: tuple[float, float, float] = (60, 70, 50)):
    """World box around both femoral heads (and the trochanters) of a case."""
    anatomy, _ = prepare(seed, t, PhantomOptions())
    heads = np.array([anatomy.to_world(f.head_center) for f in anatomy.femurs.values()])
    lo = heads.min(axis=0) - np.array(margin)
    hi = heads.max(axis=0) + np.array(margin)
    lo[2] -= 60.0  # down to the lesser trochanters
    return (tuple(lo), tuple(hi)), anatomy


def write_and_read(ct: sitk.Image, mask: sitk.Image, folder: Path) -> tuple[sitk.Image, sitk.Image]:
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(ct, str(folder / "ct.nii.gz"), True)
    sitk.WriteImage(mask, str(folder / "femur.nii.gz"), True)
    return sitk.ReadImage(str(folder / "ct.nii.gz")), sitk.ReadImage(str(folder / "femur.nii.gz"))


def label_centroid_world(mask: sitk.Image, value: int) -> np.ndarray:
    idx = np.argwhere(sitk.GetArrayFromImage(mask) == value)  # (k, j, i)
    assert len(idx), f"label {value} is empty"
    c = idx.mean(axis=0)[::-1]  # (i, j, k)
    return np.array(mask.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in c)))


# --------------------------------------------------------------------------------------
# orientation and sides


@pytest.mark.parametrize("index", range(len(SIGNED_PERMUTATIONS)))
def test_left_label_is_world_plus_x_for_every_axis_aligned_direction(index, tmp_path):
    direction = SIGNED_PERMUTATIONS[index]
    fov, anatomy = hips_fov(11, -1.5)
    opts = PhantomOptions(spacing=(4.0, 4.0, 4.0), direction=direction, fov=fov, noise=False)
    ct, mask, info = make_case(11, -1.5, opts)
    ct, mask = write_and_read(ct, mask, tmp_path)
    assert mask.GetDirection() == pytest.approx(direction)
    left = label_centroid_world(mask, LEFT)
    right = label_centroid_world(mask, RIGHT)
    assert left[0] > right[0] + 100.0
    # and each label sits on its own femoral head (world coordinates from the model)
    assert left[0] == pytest.approx(info["left_head_center"][0], abs=40.0)
    assert right[0] == pytest.approx(info["right_head_center"][0], abs=40.0)


def test_every_orientation_shows_the_same_patient(tmp_path):
    """Axis-aligned grids share voxel centres, so reorienting to LPS gives the same labels."""
    fov, _ = hips_fov(12, 0.0)
    ref = None
    for direction in SIGNED_PERMUTATIONS[::5]:
        opts = PhantomOptions(spacing=(4.0, 4.0, 4.0), direction=direction, fov=fov)
        _, mask, _ = make_case(12, 0.0, opts)
        _, mask = write_and_read(mask, mask, tmp_path / "x")
        lps = sitk.GetArrayFromImage(sitk.DICOMOrient(mask, "LPS"))
        if ref is None:
            ref = lps
            continue
        assert lps.shape == ref.shape
        assert np.mean(lps == ref) > 0.999


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_left_label_is_world_plus_x_for_oblique_and_random(seed, tmp_path):
    rng = np.random.default_rng(seed)
    assert direction_for("random", rng) in SIGNED_PERMUTATIONS
    fov, _ = hips_fov(seed, 0.5)
    for mode in ("oblique", "ras", "random"):
        opts = PhantomOptions(spacing=(4.0, 4.0, 4.0), direction=mode, fov=fov, noise=False)
        ct, mask, _ = make_case(seed, 0.5, opts)
        ct, mask = write_and_read(ct, mask, tmp_path / mode)
        d = np.asarray(mask.GetDirection()).reshape(3, 3)
        assert np.allclose(d @ d.T, np.eye(3), atol=1e-6)
        if mode == "oblique":
            assert not np.allclose(np.abs(d), np.round(np.abs(d)))
        assert label_centroid_world(mask, LEFT)[0] > label_centroid_world(mask, RIGHT)[0] + 100


# --------------------------------------------------------------------------------------
# anatomy: joint space, label cut


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_analytic_joint_space_between_head_and_acetabulum(seed):
    anatomy, _ = prepare(seed, -1.0, PhantomOptions())
    pelvis = pelvis_distance(anatomy)
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(4000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for side, f in anatomy.femurs.items():
        surface = f.head_center + f.head_radius * dirs
        gap = float(pelvis(*surface.T).min())
        assert 1.5 <= gap <= 4.0, (side, gap)
        assert gap == pytest.approx(anatomy.pelvis.acetabula[side].gap, abs=0.05)
        # the socket is there: bone lies within gap + wall of most of the upper head surface
        top = surface[dirs[:, 2] > 0.5]
        assert np.mean(pelvis(*top.T) < gap + 2.0) > 0.8


def world_to_anat(anatomy, points: np.ndarray) -> np.ndarray:
    return (points - anatomy.shift) @ anatomy.skeleton_rotation


@pytest.mark.parametrize("seed", [7, 8])
def test_femur_label_and_acetabulum_are_separated_by_the_joint_space(seed, tmp_path):
    """At 1 mm: the label dilated by one voxel never enters acetabular bone, and the image
    shows the joint space as a dip between the bright subchondral bone on both sides.

    (A one-voxel ring does contain some voxels above 600 HU: partial volume and the
    point-spread function spread the head's own subchondral plate, and the acetabular one
    across a 1.5-2 mm gap, as in real CT. So the image check is made mid-gap.)"""
    t = 0.0
    anatomy, _ = prepare(seed, t, PhantomOptions())
    pelvis = pelvis_distance(anatomy)
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(3000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for side, value in (("left", LEFT), ("right", RIGHT)):
        f = anatomy.femurs[side]
        gap = anatomy.pelvis.acetabula[side].gap
        c = anatomy.to_world(f.head_center)
        r = f.head_radius + 14.0
        opts = PhantomOptions(spacing=(1.0, 1.0, 1.0), fov=(tuple(c - r), tuple(c + r)))
        ct, mask, _ = make_case(seed, t, opts)
        ct, mask = write_and_read(ct, mask, tmp_path / side)
        hu = sitk.GetArrayFromImage(ct).astype(float)
        lab = sitk.GetArrayFromImage(mask) == value
        assert lab.sum() > 5000

        ring = ndimage.binary_dilation(lab) & ~lab
        idx = np.argwhere(ring)[:, ::-1].astype(float)
        world = np.array([mask.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in idx])
        assert pelvis(*world_to_anat(anatomy, world).T).min() > 0.0
        # control: the acetabulum is right there, a few voxels further out
        wide = ndimage.binary_dilation(lab, iterations=5) & ~lab
        idx = np.argwhere(wide)[:, ::-1].astype(float)
        world = np.array([mask.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in idx])
        assert (pelvis(*world_to_anat(anatomy, world).T) < 0).sum() > 200

        def sample(radius: float, f=f, ct=ct, hu=hu) -> tuple[np.ndarray, np.ndarray]:
            pa = f.head_center + radius * dirs
            pw = pa @ anatomy.skeleton_rotation.T + anatomy.shift
            ci = np.array([ct.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in pw])
            return ndimage.map_coordinates(hu, ci[:, ::-1].T, order=1), pa

        mid, pa = sample(f.head_radius + 0.5 * gap)
        cup = pelvis(*pa.T) < 0.5 * gap + 1.0  # directions where the socket covers the head
        assert cup.sum() > 1000
        head, _ = sample(f.head_radius - 1.0)
        acetabulum, _ = sample(f.head_radius + gap + 1.5)
        assert np.percentile(mid[cup], 90) < 600.0
        assert np.median(mid[cup]) < 0.5 * min(np.median(head[cup]), np.median(acetabulum[cup]))


def test_label_ends_at_the_cut_plane_below_the_lesser_trochanter(tmp_path):
    opts = PhantomOptions(spacing=(2.0, 2.0, 2.0))
    ct, mask, info = make_case(31, -2.0, opts)
    ct, mask = write_and_read(ct, mask, tmp_path)
    arr = sitk.GetArrayFromImage(mask)
    assert set(np.unique(arr)) == {0, LEFT, RIGHT}
    for side, value in (("left", LEFT), ("right", RIGHT)):
        idx = np.argwhere(arr == value)[:, ::-1].astype(float)
        z = np.array([mask.TransformContinuousIndexToPhysicalPoint(tuple(p))[2] for p in idx])
        cut = info[f"{side}_cut_z"]
        lt = info[f"{side}_lesser_trochanter_z"]
        assert cut == pytest.approx(lt - PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM)
        assert cut <= z.min() <= cut + 2.0
        assert z.max() == pytest.approx(
            info[f"{side}_head_center"][2] + info[f"{side}_head_radius"], abs=2.5
        )
    # the default field of view keeps the whole label: it touches no border
    for axis in range(3):
        assert not arr.take(0, axis=axis).any() and not arr.take(-1, axis=axis).any()


def test_default_geometry_is_a_hips_ct_reaching_below_the_cut():
    for seed in (1, 2, 3):
        anatomy, grid = prepare(seed, 0.0, PhantomOptions())
        assert grid.spacing == pytest.approx((0.8, 0.8, 1.0))
        assert grid.direction == pytest.approx(np.eye(3).ravel())
        lo = np.asarray(grid.origin)
        hi = lo + (np.asarray(grid.size) - 1) * np.asarray(grid.spacing)
        for side in ("left", "right"):
            assert lo[2] < anatomy.cut_z(side) - 10.0
            assert hi[2] > anatomy.head_top_z(side) + 60.0
        width = hi - lo
        assert 300 < width[0] < 460 and 200 < width[1] < 360 and 200 < width[2] < 320
    assert phantom_grid(1, 0.0, PhantomOptions(size="abdomen")).size == (512, 512, 300)
    coarse = PhantomOptions(size="abdomen", spacing=(1.6, 1.6, 2.0))
    assert phantom_grid(1, 0.0, coarse).size == (256, 256, 150)  # same field of view


# --------------------------------------------------------------------------------------
# density


def test_trabecular_density_follows_t_score(tmp_path):
    ts = np.linspace(-4.0, 1.0, 10)
    means = []
    for i, t in enumerate(ts):
        seed = 100 + i
        anatomy, _ = prepare(seed, float(t), PhantomOptions())
        heads = {
            s: (anatomy.to_world(f.head_center), f.head_radius) for s, f in anatomy.femurs.items()
        }
        c, r = heads["left"]
        opts = PhantomOptions(spacing=(1.5, 1.5, 1.5), fov=(tuple(c - r - 3), tuple(c + r + 3)))
        ct, mask, _ = make_case(seed, float(t), opts)
        ct, mask = write_and_read(ct, mask, tmp_path / str(i))
        hu = sitk.GetArrayFromImage(ct).astype(float)
        lab = ndimage.binary_erosion(sitk.GetArrayFromImage(mask) == LEFT, iterations=3)
        assert lab.sum() > 500
        means.append(hu[lab].mean())
    rho = spearmanr(ts, means).statistic
    assert rho > 0.8, (rho, means)


def test_classes_overlap_in_density():
    """No single threshold on the trabecular HU separates neighbouring WHO classes."""
    rng = np.random.default_rng(5)
    ts = rng.uniform(-4.0, 1.0, 600)
    hu = np.array([sample_density(rng, float(t), 0.0).trabecular_hu for t in ts])
    status = np.array([bone_status(float(t)) for t in ts])
    for low, high in (("osteoporosis", "osteopenia"), ("osteopenia", "normal")):
        assert hu[status == low].max() > hu[status == high].min()
    # but density still carries the signal
    assert spearmanr(ts, hu).statistic > 0.8


@pytest.mark.parametrize(
    ("sd", "psf", "spacing"), [(40.0, 0.6, (0.8, 0.8, 1.0)), (25.0, 0.9, (2.0, 2.0, 2.0))]
)
def test_noise_after_blur_has_the_case_standard_deviation(sd, psf, spacing):
    painter = SimpleNamespace(
        hu=np.zeros((50, 60, 70), dtype=np.float32),
        grid=SimpleNamespace(spacing=spacing),
        anatomy=SimpleNamespace(
            imaging=SimpleNamespace(noise_sd=sd, psf_sigma_mm=psf, hu_scale=1.0, hu_offset=0.0)
        ),
    )
    out = finish(painter, np.random.default_rng(1)).astype(float)[5:-5, 5:-5, 5:-5]
    assert out.std() == pytest.approx(sd, rel=0.05)
    assert abs(out.mean()) < 1.0


# --------------------------------------------------------------------------------------
# determinism, options, command line


def test_same_seed_same_images_and_case_independent_of_cohort_size(tmp_path):
    opts = PhantomOptions(spacing=(4.0, 4.0, 4.0))
    a = make_case(9, -2.7, opts)
    b = make_case(9, -2.7, opts)
    assert np.array_equal(sitk.GetArrayFromImage(a[0]), sitk.GetArrayFromImage(b[0]))
    assert np.array_equal(sitk.GetArrayFromImage(a[1]), sitk.GetArrayFromImage(b[1]))
    c = make_case(10, -2.7, opts)
    assert not np.array_equal(sitk.GetArrayFromImage(a[0]), sitk.GetArrayFromImage(c[0]))

    quiet = []
    one = make_cohort(tmp_path / "one", 1, 4, options=opts, workers=1, progress=quiet.append)
    three = make_cohort(tmp_path / "three", 3, 4, options=opts, workers=2, progress=quiet.append)
    assert len(quiet) == 4
    rows1, rows3 = read_cohort(one), read_cohort(three)
    assert rows1[0] == rows3[0]
    for name in ("ct", "mask"):
        x = sitk.GetArrayFromImage(sitk.ReadImage(str(one.parent / rows1[0][name])))
        y = sitk.GetArrayFromImage(sitk.ReadImage(str(three.parent / rows3[0][name])))
        assert np.array_equal(x, y)


def test_implant_is_metal_inside_one_femur_label(tmp_path):
    fov, anatomy = hips_fov(41, -3.0)
    opts = PhantomOptions(spacing=(1.5, 1.5, 1.5), fov=fov, implant="right")
    ct, mask, info = make_case(41, -3.0, opts)
    ct, mask = write_and_read(ct, mask, tmp_path)
    hu = sitk.GetArrayFromImage(ct)
    lab = sitk.GetArrayFromImage(mask)
    assert info["implant_side"] == "right"
    assert (hu[lab == RIGHT] > 2500).sum() > 20
    assert (hu[lab == LEFT] > 2500).sum() == 0
    plain, _, _ = make_case(41, -3.0, PhantomOptions(spacing=(1.5, 1.5, 1.5), fov=fov))
    assert (sitk.GetArrayFromImage(plain)[lab == RIGHT] > 2500).sum() == 0


def test_truncated_field_of_view_cuts_one_femur(tmp_path):
    opts = PhantomOptions(spacing=(3.0, 3.0, 3.0), truncate="left")
    ct, mask, info = make_case(51, 0.0, opts)
    ct, mask = write_and_read(ct, mask, tmp_path)
    lab = sitk.GetArrayFromImage(mask)

    def touches_border(value: int) -> bool:
        m = lab == value
        return any(m.take(0, axis=a).any() or m.take(-1, axis=a).any() for a in range(3))

    assert info["truncated_side"] == "left"
    assert touches_border(LEFT)
    assert not touches_border(RIGHT)


def test_cli_help_and_choices_match_the_library():
    code, out, _ = run_cli("phantom", "--help")
    assert code == 0
    for flag in (
        "--cases",
        "--seed",
        "--size",
        "--spacing",
        "--implant-fraction",
        "--truncate-fraction",
        "--direction",
        "--workers",
        "--t-range",
    ):
        assert flag in out
    assert "femurscreen phantom" in out  # the example
    assert set(phantom_cli.SIZES) == set(SIZES)
    assert tuple(phantom_cli.DIRECTION_MODES) == tuple(DIRECTION_MODES)


def test_cli_writes_cases_and_cohort_csv(tmp_path):
    out_dir = tmp_path / "cohort"
    code, out, err = run_cli(
        "phantom",
        str(out_dir),
        "--cases",
        "3",
        "--seed",
        "2",
        "--spacing",
        "4",
        "4",
        "4",
        "--workers",
        "1",
        "--direction",
        "random",
    )
    assert code == 0, err
    assert str(out_dir / "cohort.csv") in out
    assert err.count("case_") == 3  # one progress line per case
    with (out_dir / "cohort.csv").open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    assert (
        tuple(header[: len(CSV_COLUMNS)])
        == CSV_COLUMNS
        == ("case_id", "ct", "mask", "t_score", "bone_status")
    )
    assert len(rows) == 3
    for row in read_cohort(out_dir / "cohort.csv"):
        assert row["bone_status"] == bone_status(float(row["t_score"]))
        ct = sitk.ReadImage(str(out_dir / row["ct"]))
        mask = sitk.ReadImage(str(out_dir / row["mask"]))
        assert ct.GetPixelID() == sitk.sitkInt16
        assert mask.GetPixelID() == sitk.sitkUInt8
        assert ct.GetSize() == mask.GetSize()
        assert ct.GetSpacing() == pytest.approx(mask.GetSpacing())
        assert ct.GetOrigin() == pytest.approx(mask.GetOrigin())
        assert ct.GetDirection() == pytest.approx(mask.GetDirection())
        arr = sitk.GetArrayFromImage(ct)
        assert arr.min() >= -1024 and arr.max() <= 3071
        assert np.percentile(arr[sitk.GetArrayFromImage(mask) > 0], 95) > 500  # cortex
    assert not list(out_dir.rglob(".tmp-*"))  # no temporary files left behind
    manifest = json.loads((out_dir / "phantoms.json").read_text(encoding="utf-8"))
    assert manifest["synthetic"] is True and manifest["cases"] == 3
    assert (
        manifest["cut_below_lesser_trochanter_mm"] == PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM
    )


def test_cli_refuses_bad_options_with_a_message(tmp_path):
    code, _, err = run_cli("phantom", str(tmp_path / "x"), "--cases", "0")
    assert code == 1 and "--cases" in err
    code, _, err = run_cli("phantom", str(tmp_path / "x"), "--implant-fraction", "1.5")
    assert code == 1 and "--implant-fraction" in err
    (tmp_path / "file").write_text("not a folder")
    code, _, err = run_cli("phantom", str(tmp_path / "file"), "--cases", "1")
    assert code == 1 and "not a folder" in err


# --------------------------------------------------------------------------------------
# scanners and density truth (femurscreen.phantom.scanner / truth)


def test_default_scanner_keeps_phantoms_byte_identical():
    """The scanner option must not change a default phantom (the shipped demo models' data):
    the identity scanner leaves the field bit for bit, and a default case draws the identity.
    (A pinned digest of a whole phantom is not used: it moves with numpy/scipy releases.)"""
    from femurscreen.phantom.scanner import IDENTITY, random_scanner, resolve

    field = np.random.default_rng(0).normal(0.0, 400.0, (6, 9, 11)).astype(np.float32)
    kept = field.copy()
    IDENTITY.apply(field)
    assert field.tobytes() == kept.tobytes()
    random_scanner(7).apply(field)
    assert field.tobytes() != kept.tobytes()  # the check above can fail
    assert resolve(PhantomOptions().scanner, 7) is IDENTITY
    ct, mask, info = make_case(7, -1.7, PhantomOptions(spacing=(3.0, 3.0, 3.0)))
    again, _, _ = make_case(7, -1.7, PhantomOptions(spacing=(3.0, 3.0, 3.0), scanner=IDENTITY))
    assert sitk.GetArrayViewFromImage(ct).tobytes() == sitk.GetArrayViewFromImage(again).tobytes()
    assert info["scanner"]["kvp"] == 120.0 and info["scanner"]["scale"] == 1.0


def test_scanner_model_and_random_scanners():
    from femurscreen.phantom.scanner import IDENTITY, Scanner, random_scanner

    assert np.allclose(
        IDENTITY.hu([-1000.0, -100.0, 0.0, 60.0, 1000.0]), [-1000, -100, 0, 60, 1000]
    )
    low = Scanner(kvp=80.0)
    assert low.hu(-1000.0) == pytest.approx(-1000.0) and low.hu(0.0) == pytest.approx(0.0)
    assert low.hu(-100.0) < -110.0 and low.hu(1060.0) > 1300.0  # fat and bone further out
    a, b = random_scanner(5), random_scanner(5)
    assert a == b and a != random_scanner(6)
    assert -1010 <= a.hu(-1000.0) <= -990 and -15 <= a.hu(0.0) <= 15
    with pytest.raises(ValueError):
        PhantomOptions(scanner="bogus")


def test_true_abmd_follows_bone_density_and_cohort_has_the_columns(tmp_path):
    lo = make_case(8, -3.5, PhantomOptions(spacing=(3.0, 3.0, 3.0)))[2]
    hi = make_case(8, 0.5, PhantomOptions(spacing=(3.0, 3.0, 3.0)))[2]
    for side in ("left", "right"):
        for site in ("fn", "th"):
            key = f"true_{site}_abmd_{side}_g_cm2"
            assert 0.2 < lo[key] < hi[key] < 2.5
    path = make_cohort(
        tmp_path,
        1,
        3,
        options=PhantomOptions(spacing=(3.0, 3.0, 3.0)),
        implant_fraction=1.0,
        workers=1,
        progress=lambda line: None,
    )
    row = read_cohort(path)[0]
    implant = row["implant_side"]
    other = "right" if implant == "left" else "left"
    assert row[f"true_fn_abmd_{implant}_g_cm2"] == ""  # metal in the label: no truth
    assert float(row["true_fn_abmd_g_cm2"]) == pytest.approx(
        float(row[f"true_fn_abmd_{other}_g_cm2"]), abs=1e-4
    )
    assert float(row["true_th_abmd_g_cm2"]) > 0.2


def test_cli_scanner_option_draws_a_scanner_per_case(tmp_path: Path) -> None:
    """--scanner random gives the case another HU scale than the default identity scanner."""
    results = {}
    for scanner in ("identity", "random"):
        out = tmp_path / scanner
        args = ["phantom", str(out), "--cases", "1", "--seed", "5", "--spacing", "3", "3", "3"]
        code, _, err = run_cli(*args, "--scanner", scanner)
        assert code == 0, err
        with open(out / "cohort.csv", encoding="utf-8") as handle:
            row = next(csv.DictReader(handle))
        results[scanner] = (row["scanner"], sitk.GetArrayFromImage(sitk.ReadImage(out / row["ct"])))
    assert (
        results["random"][0].startswith("scale=") and results["random"][0] != results["identity"][0]
    )
    assert not np.array_equal(results["identity"][1], results["random"][1])


# --------------------------------------------------------------------------------------
# training-only options: hard hip joints and tissue maps (VB-Net appearance randomisation)


def test_training_options_leave_default_phantoms_unchanged(tmp_path):
    """--tissues adds a file and changes no voxel; joint="normal" is the default. (Checked
    once more by hand against the committed renderer: same bytes, see the VB-Net notes.)"""
    from femurscreen.phantom.case import make_case_tissues

    opts = PhantomOptions(spacing=(3.0, 3.0, 3.0))
    ct, mask, info = make_case(7, -1.7, opts)
    ct2, mask2, tissue, info2 = make_case_tissues(
        7, -1.7, PhantomOptions(spacing=(3.0,) * 3, tissues=True)
    )
    ct3, _, none, _ = make_case_tissues(7, -1.7, PhantomOptions(spacing=(3.0,) * 3, joint="normal"))
    for a, b in ((ct, ct2), (mask, mask2), (ct, ct3)):
        assert sitk.GetArrayViewFromImage(a).tobytes() == sitk.GetArrayViewFromImage(b).tobytes()
    assert none is None and tissue is not None and "joint" not in info
    info.pop("render_seconds"), info2.pop("render_seconds")
    assert info == info2
    # a default cohort's record says nothing about the training-only options
    path = make_cohort(tmp_path, 1, 7, options=opts, workers=1, progress=lambda line: None)
    record = json.loads((path.parent / "phantoms.json").read_text(encoding="utf-8"))
    assert "joint" not in record["options"] and "tissues" not in record["options"]
    with path.open(newline="") as handle:
        assert "tissue" not in next(csv.reader(handle))
    with pytest.raises(ValueError, match="joint"):
        PhantomOptions(joint="soft")


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_hard_joint_gap_is_0_to_4_mm_and_the_femur_is_the_same(seed):
    """Hard joints redraw only the joint space (0-4 mm, the cup may touch the head): the patient
    and the femur stay those of the default case of the seed."""
    normal, _ = prepare(seed, -1.0, PhantomOptions())
    hard, _ = prepare(seed, -1.0, PhantomOptions(joint="hard"))
    assert hard.hard_joint and not normal.hard_joint
    pelvis = pelvis_distance(hard)
    dirs = np.random.default_rng(0).normal(size=(4000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for side, f in hard.femurs.items():
        assert np.allclose(f.head_center, normal.femurs[side].head_center)
        gap = hard.pelvis.acetabula[side].gap
        assert 0.0 <= gap <= 4.0
        surface = f.head_center + f.head_radius * dirs
        assert float(pelvis(*surface.T).min()) == pytest.approx(gap, abs=0.05), side


def test_hard_joint_gaps_reach_below_the_default_clearance():
    gaps = [
        prepare(seed, -1.0, PhantomOptions(joint="hard"))[0].pelvis.acetabula[side].gap
        for seed in range(20)
        for side in ("left", "right")
    ]
    assert min(gaps) < 0.5 and max(gaps) > 3.0  # the default draws 1.6-3.9 mm


def test_hard_joint_renders_a_dense_roof_and_a_thin_head_cortex(tmp_path):
    """At 1 mm around one head, noise-free: the acetabular roof right above the head is denser
    than in the default case of the seed, and the head's subchondral shell, where no cup covers
    it, is dimmer (what makes real joints hard to cut)."""
    seed, t = 4, -1.0
    anatomy, _ = prepare(seed, t, PhantomOptions())
    f = anatomy.femurs["right"]
    c = anatomy.to_world(f.head_center)
    r = f.head_radius + 14.0
    fov = (tuple(c - r), tuple(c + r))
    dirs = np.random.default_rng(1).normal(size=(3000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    values = {}
    for joint in ("normal", "hard"):
        opts = PhantomOptions(spacing=(1.0, 1.0, 1.0), fov=fov, joint=joint, noise=False)
        a, _ = prepare(seed, t, opts)
        ct, _, _ = make_case(seed, t, opts)
        hu = sitk.GetArrayFromImage(ct).astype(float)
        fa = a.femurs["right"]
        gap = a.pelvis.acetabula["right"].gap
        free = pelvis_distance(a)(*(fa.head_center + fa.head_radius * dirs).T) > 6.0
        assert free.sum() > 300  # the uncovered part of the head

        def median_at(radius: float, sel: np.ndarray, fa=fa, a=a, ct=ct, hu=hu) -> float:
            pw = (fa.head_center + radius * sel) @ a.skeleton_rotation.T + a.shift
            ci = np.array([ct.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in pw])
            return float(np.median(ndimage.map_coordinates(hu, ci[:, ::-1].T, order=1)))

        values[joint] = (
            median_at(fa.head_radius + gap + 2.0, dirs[dirs[:, 2] > 0.8]),  # roof above the head
            median_at(fa.head_radius - 1.0, dirs[free]),  # subchondral shell of the head
        )
    assert values["hard"][0] > values["normal"][0] + 100.0, values  # sourcil: dense roof
    assert values["hard"][1] < values["normal"][1] - 40.0, values  # thinner head cortex


def test_tissue_map_labels_each_structure(tmp_path):
    """The tissue map (what train-seg's appearance randomisation redraws) agrees with the CT
    and the femur label: femur voxels are femur tissue, pelvis and spine have their own."""
    from femurscreen.phantom.case import make_case_tissues
    from femurscreen.phantom.voxelize import TISSUES

    out = tmp_path / "c"
    args = ["phantom", str(out), "--cases", "1", "--seed", "5", "--spacing", "3", "3", "3"]
    code, _, err = run_cli(*args, "--joint", "hard", "--tissues", "--implant-fraction", "1")
    assert code == 0, err
    row = read_cohort(out / "cohort.csv")[0]
    with (out / "cohort.csv").open(newline="") as handle:
        assert next(csv.DictReader(handle))["tissue"] == f"{row['case_id']}/tissue.nii.gz"
    assert json.loads((out / "phantoms.json").read_text())["options"]["joint"] == "hard"
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(out / row["ct"])))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / row["mask"])))
    tis = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case_0000" / "tissue.nii.gz")))
    assert tis.shape == ct.shape and set(np.unique(tis)) <= set(TISSUES.values())
    femur = np.isin(tis, [TISSUES["femur_cortex"], TISSUES["femur_trabecular"], TISSUES["metal"]])
    assert femur[lab > 0].mean() > 0.9
    for name in ("pelvis_cortex", "pelvis_trabecular", "spine_trabecular", "fat", "soft", "metal"):
        assert (tis == TISSUES[name]).sum() > 20, name
    assert np.median(ct[tis == TISSUES["air"]]) < -900
    assert np.median(ct[tis == TISSUES["fat"]]) < np.median(ct[tis == TISSUES["soft"]])
    assert np.median(ct[tis == TISSUES["metal"]]) > 2000
    assert make_case_tissues(5, -1.0, PhantomOptions(spacing=(4.0,) * 3))[2] is None
    code, _, err = run_cli("phantom", str(tmp_path / "x"), "--joint", "soft")
    assert code != 0 and "--joint" in err
