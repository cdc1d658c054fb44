"""CT-derived hip aBMD (femurscreen.bmd): calibration, projection, T-scores, refusals, CLI.

Phantoms are rendered at 3 mm (fast) with density truth from their own analytic anatomy
(femurscreen.phantom.truth); the real sample CT checks the calibration on a real scan.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cli_runner import run_cli
from femurscreen.bmd import measure
from femurscreen.bmd.attenuation import mineral_hu_per_mg_cm3, tissue_hu
from femurscreen.bmd.calibration import TISSUE_SD_HU, calibrate
from femurscreen.bmd.tscore import REFERENCE, grade, t_score
from femurscreen.phantom import PhantomOptions, make_case, prepare
from femurscreen.phantom.anatomy import SIDE_SIGN
from femurscreen.phantom.scanner import MG_K2HPO4_PER_HU, Scanner

SPACING = (3.0, 3.0, 3.0)
SHIFTED = Scanner(scale=1.02, offset=12.0, kvp=120.0)  # miscalibrated, same kVp


@pytest.fixture(scope="module")
def pair():
    """One phantom case rendered by the identity scanner and by a miscalibrated one."""
    out = {}
    for name, scanner in (("identity", Scanner()), ("shifted", SHIFTED)):
        out[name] = make_case(21, -1.8, PhantomOptions(spacing=SPACING, scanner=scanner))
    return out


def test_scanner_changes_hu_but_not_the_truth(pair):
    ct0, mask0, info0 = pair["identity"]
    ct1, mask1, info1 = pair["shifted"]
    truth = [k for k in info0 if k.startswith("true_")]
    assert len(truth) == 4
    assert all(info0[k] == info1[k] and info0[k] > 0.2 for k in truth)
    a0 = sitk.GetArrayViewFromImage(ct0).astype(float)
    a1 = sitk.GetArrayViewFromImage(ct1).astype(float)
    bone = sitk.GetArrayViewFromImage(mask0) > 0
    assert np.array_equal(bone, sitk.GetArrayViewFromImage(mask1) > 0)
    assert a1[bone].mean() - a0[bone].mean() > 12.0  # raw bone HU moved


def test_attenuation_table_gives_known_ct_numbers():
    """NIST tables: fat about -100 HU and K2HPO4 0.80 mg/cm3 per HU at 120 kVp (66 keV); bone
    mineral reads more per mg at lower energy, fat lower (what a kVp change does)."""
    assert -110 < tissue_hu("adipose", 66.0) < -95 and 35 < tissue_hu("muscle", 66.0) < 55
    assert 1.0 / mineral_hu_per_mg_cm3(66.0) == pytest.approx(MG_K2HPO4_PER_HU, abs=0.01)
    assert mineral_hu_per_mg_cm3(59.0) > 1.15 * mineral_hu_per_mg_cm3(66.0)
    assert tissue_hu("adipose", 59.0) < tissue_hu("adipose", 72.0)


def test_calibration_recovers_the_scanner(pair):
    for name, (ct, _mask, _info) in pair.items():
        scanner = Scanner() if name == "identity" else SHIFTED
        cal = calibrate(sitk.GetArrayViewFromImage(ct), ct.GetSpacing(), kvp=120.0)
        assert cal.ok, (name, cal.reason)
        assert [p.name for p in cal.points] == ["air", "fat", "muscle"]
        assert all(abs(p.residual_hu) < 3 * TISSUE_SD_HU[p.name] for p in cal.points)
        assert abs(cal.energy_kev - scanner.kev) < 3.0 and cal.energy_sd_kev < 3.0
        assert abs(cal.hu_scale - scanner.scale) < 0.02 and abs(cal.hu_offset - scanner.offset) < 8
        # bone of known density written by this scanner comes back as that density
        for h in (300.0, 800.0):
            got = float(cal.density(np.array([scanner.hu(h)]))[0])
            assert got == pytest.approx(MG_K2HPO4_PER_HU * h, rel=0.06), (name, h)
        d = cal.as_dict()
        assert d["material"] == "K2HPO4" and d["status"] == "ok" and d["kvp"] == 120.0
        assert d["density_slope_mg_cm3_per_hu"] == pytest.approx(
            cal.slope * cal.mg_per_hu, abs=1e-4
        )
        assert {"energy_kev", "energy_sd_kev", "hu_scale", "hu_offset"} <= set(d)


@pytest.fixture(scope="module")
def kvp_pair():
    """One case at 100 and at 140 kVp (bone mineral reads about 35 % higher at 100)."""
    return {
        kvp: make_case(23, -2.0, PhantomOptions(spacing=SPACING, scanner=Scanner(kvp=kvp)))
        for kvp in (100.0, 140.0)
    }


def test_kvp_changes_bone_hu_but_not_the_t_score(kvp_pair):
    (ct_lo, mask, info), (ct_hi, _m, _i) = kvp_pair[100.0], kvp_pair[140.0]
    bone = sitk.GetArrayViewFromImage(mask) > 0
    raw = [float(sitk.GetArrayViewFromImage(c)[bone].mean()) for c in (ct_lo, ct_hi)]
    assert raw[0] - raw[1] > 80.0  # raw HU of the same femurs far apart
    res = {kvp: measure(ct, m, kvp=kvp) for kvp, (ct, m, _) in kvp_pair.items()}
    for side in ("left", "right"):
        lo, hi = res[100.0][side], res[140.0][side]
        assert lo["status"] == hi["status"] == "ok"
        assert abs(lo["fn_t_score"] - hi["fn_t_score"]) < 0.3, (lo, hi)
        assert abs(lo["fn_abmd_g_cm2"] - info[f"true_fn_abmd_{side}_g_cm2"]) < 0.08
    assert res[100.0]["calibration"]["energy_kev"] < res[140.0]["calibration"]["energy_kev"]
    # the kVp from a DICOM header on the image is used the same way
    ct_lo.SetMetaData("0018|0060", "100")
    assert measure(ct_lo, mask)["calibration"]["kvp"] == 100.0


def test_abmd_is_close_to_the_truth_and_stable_across_scanners(pair):
    """With the kVp known (a DICOM header) a miscalibrated scanner gives the same T-score;
    without it (NIfTI) the energy is mostly the prior's and the error is larger."""
    results = {}
    for name, (ct, mask, info) in pair.items():
        res = measure(ct, mask, kvp=120.0)
        bare = measure(ct, mask)
        for side in ("left", "right"):
            s = res[side]
            assert s["status"] == "ok", s
            assert abs(s["fn_abmd_g_cm2"] - info[f"true_fn_abmd_{side}_g_cm2"]) < 0.06
            assert abs(s["th_abmd_g_cm2"] - info[f"true_th_abmd_{side}_g_cm2"]) < 0.06
            assert s["who_class"] in ("normal", "osteopenia", "osteoporosis")
            assert abs(bare[side]["fn_abmd_g_cm2"] - info[f"true_fn_abmd_{side}_g_cm2"]) < 0.12
        results[name] = res
    for side in ("left", "right"):
        a, b = results["identity"][side], results["shifted"][side]
        assert abs(a["fn_t_score"] - b["fn_t_score"]) < 0.3


def test_t_scores_use_the_nhanes_reference():
    assert REFERENCE == {"fn": {"mean": 0.858, "sd": 0.120}, "th": {"mean": 0.942, "sd": 0.122}}
    assert t_score(0.858, "fn") == pytest.approx(0.0)
    assert t_score(0.942 - 0.122, "th") == pytest.approx(-1.0)
    g = grade(0.858 - 2.6 * 0.120, 0.942)
    assert g["who_class"] == "osteoporosis"  # the lower of the two sites decides
    assert grade(None, None)["who_class"] is None
    assert "class_uncertain" in grade(0.858 - 0.120, None)["flags"]


def test_no_air_in_view_is_refused(pair):
    ct, mask, _ = pair["identity"]
    a = sitk.GetArrayFromImage(ct)
    a[a < -500] = -80  # the body fills the field of view: no air outside it
    img = sitk.GetImageFromArray(a)
    img.CopyInformation(ct)
    res = measure(img, mask)
    assert res["calibration"]["status"] == "tissue_missing"
    assert "air" in res["calibration"]["reason"]
    for side in ("left", "right"):
        assert res[side]["fn_abmd_g_cm2"] is None and res[side]["fn_t_score"] is None
        assert res[side]["status"].startswith("calibration_")


def contrast_case(pair) -> sitk.Image:
    """The phantom with iodine in its own iliac/femoral arteries and veins (+250 / +180 HU,
    as in a portal-venous phase), placed from the case's anatomy (seed 21, T -1.8)."""
    ct, _mask, _ = pair["identity"]
    anatomy, _grid = prepare(21, -1.8, PhantomOptions(spacing=SPACING))
    a = sitk.GetArrayFromImage(ct).astype(np.float32)
    k, j, i = np.indices(a.shape)
    ijk = np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(np.float64)
    matrix = np.asarray(ct.GetDirection()).reshape(3, 3) @ np.diag(ct.GetSpacing())
    world = ijk @ matrix.T + np.asarray(ct.GetOrigin())
    s = anatomy.scale
    add = np.zeros(world.shape[0], dtype=np.float32)
    for side, path in anatomy.vessels.items():
        sign = SIDE_SIGN[side]
        for offset, r, iodine in ((0.0, 3.8 * s, 250.0), (-sign * 10.0 * s, 5.5 * s, 180.0)):
            for pa, pb in zip(path[:-1], path[1:], strict=True):
                qa = anatomy.to_world(pa + np.array([offset, 2.0, 0.0]))
                qb = anatomy.to_world(pb + np.array([offset, 2.0, 0.0]))
                ab = qb - qa
                t = np.clip((world - qa) @ ab / (ab @ ab), 0.0, 1.0)
                d = np.linalg.norm(world - (qa + t[:, None] * ab), axis=1)
                add = np.maximum(add, np.where(d <= r + 1.0, iodine, 0.0))
    a += add.reshape(a.shape)
    img = sitk.GetImageFromArray(a.astype(np.int16))
    img.CopyInformation(ct)
    return img


def test_contrast_is_flagged_and_not_graded(pair, tmp_path):
    img = contrast_case(pair)
    res = measure(img, pair["identity"][1])
    cal = res["calibration"]
    assert cal["status"] == "contrast" and "contrast" in cal["flags"] and cal["contrast_ml"] > 5
    assert res["right"]["fn_t_score"] is None and res["left"]["who_class"] is None
    ct_path = tmp_path / "contrast.nii.gz"
    sitk.WriteImage(img, str(ct_path))
    mask_path = tmp_path / "femur.nii.gz"
    sitk.WriteImage(pair["identity"][1], str(mask_path))
    code, out, err = run_cli(
        "bmd", str(ct_path), "--mask", str(mask_path), "--json", str(tmp_path / "b.json")
    )
    assert code == 1 and "contrast" in err
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["right"]["fn_abmd_g_cm2"] is None


def test_implant_side_is_not_graded():
    ct, mask, _ = make_case(22, -1.0, PhantomOptions(spacing=SPACING, implant="left"))
    res = measure(ct, mask)
    assert res["left"]["status"] == "implant" and res["left"]["fn_abmd_g_cm2"] is None
    assert res["right"]["status"] == "ok" and res["right"]["fn_abmd_g_cm2"] > 0.2


def test_cli_writes_the_contract(pair, tmp_path):
    ct, mask, info = pair["identity"]
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(mask, str(tmp_path / "femur.nii.gz"))
    out_json, out_png = tmp_path / "bmd.json", tmp_path / "bmd.png"
    code, out, err = run_cli(
        "bmd",
        str(tmp_path / "ct.nii.gz"),
        "--mask",
        str(tmp_path / "femur.nii.gz"),
        "--json",
        str(out_json),
        "--png",
        str(out_png),
    )
    assert code == 0, err
    assert "CT-derived estimate" in out
    data = json.loads(out_json.read_text())
    assert set(data) >= {"calibration", "left", "right"}
    for side in ("left", "right"):
        assert set(data[side]) >= {
            "status",
            "fn_abmd_g_cm2",
            "th_abmd_g_cm2",
            "fn_t_score",
            "th_t_score",
            "who_class",
            "flags",
        }
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli("bmd", str(tmp_path / "ct.nii.gz"), "--json", str(tmp_path))
    assert code == 1 and "--json" in err


def test_real_ct_calibration_is_plausible(real_ct_path: Path):
    ct = sitk.ReadImage(str(real_ct_path))
    cal = calibrate(sitk.GetArrayViewFromImage(ct), ct.GetSpacing())
    assert cal.ok, cal.reason
    assert cal.contrast_ml < 3.0 and "contrast" not in cal.flags  # an unenhanced scan
    obs = {p.name: p.observed_hu for p in cal.points}
    assert -1010 < obs["air"] < -980 and -115 < obs["fat"] < -85 and 0 < obs["muscle"] < 60
    # no kVp in a NIfTI: the energy stays near 120 kVp's, the HU scale near a calibrated CT's
    assert "kvp_unknown" in cal.flags and 60.0 < cal.energy_kev < 74.0
    assert 0.95 < cal.hu_scale < 1.05 and abs(cal.hu_offset) < 20.0
    assert 0.6 < cal.slope * cal.mg_per_hu < 1.0


def test_real_ct_without_air_in_view_is_refused(real_ct_path: Path, tmp_path: Path):
    """The real CT cropped to inside the body (no air around it): a clear reason, no T-score,
    exit 1 from the CLI."""
    ct = sitk.ReadImage(str(real_ct_path))
    a = sitk.GetArrayViewFromImage(ct)
    body = np.argwhere(a[a.shape[0] // 2] > -500)
    (j0, i0), (j1, i1) = body.min(0), body.max(0)
    dj, di = (j1 - j0) // 4, (i1 - i0) // 4
    crop = ct[int(i0 + di) : int(i1 - di), int(j0 + dj) : int(j1 - dj), :]
    cal = calibrate(sitk.GetArrayViewFromImage(crop), crop.GetSpacing())
    assert cal.status == "tissue_missing" and "air" in cal.reason and cal.slope is None
    with pytest.raises(ValueError, match="refused calibration"):
        cal.density(np.zeros(3))
    sitk.WriteImage(crop, str(tmp_path / "crop.nii.gz"))
    labels = sitk.Image(crop.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(crop)
    sitk.WriteImage(labels, str(tmp_path / "femur.nii.gz"))
    code, _out, err = run_cli(
        "bmd",
        str(tmp_path / "crop.nii.gz"),
        "--mask",
        str(tmp_path / "femur.nii.gz"),
        "--json",
        str(tmp_path / "b.json"),
    )
    assert code == 1 and "air" in err
    assert (
        not (tmp_path / "b.json").exists()
        or json.loads((tmp_path / "b.json").read_text())["right"]["fn_t_score"] is None
    )


def test_real_ct_right_side_is_graded_left_implant(real_ct, real_ct_classical):
    res = measure(
        real_ct,
        real_ct_classical.labels,
        side_status={s: r.status for s, r in real_ct_classical.sides.items()},
    )
    assert res["calibration"]["status"] == "ok"
    right, left = res["right"], res["left"]
    assert right["status"] == "ok" and 0.4 < right["fn_abmd_g_cm2"] < 1.1
    assert -4.0 < right["fn_t_score"] < 1.0 and right["who_class"] is not None
    assert left["status"] == "implant" and left["fn_t_score"] is None


def test_cli_kvp_option(pair, tmp_path):
    """--kvp narrows the energy (it reaches the calibration block); a value that is no tube
    voltage is refused before anything is computed, with what to do."""
    ct, mask, _info = pair["identity"]
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(mask, str(tmp_path / "femur.nii.gz"))
    args = ["bmd", str(tmp_path / "ct.nii.gz"), "--mask", str(tmp_path / "femur.nii.gz")]
    code, _out, err = run_cli(*args, "--kvp", "20", "--json", str(tmp_path / "bad.json"))
    assert code == 1 and "--kvp" in err and not (tmp_path / "bad.json").exists()
    code, out, err = run_cli(*args, "--kvp", "120", "--json", str(tmp_path / "b.json"))
    assert code == 0, err
    cal = json.loads((tmp_path / "b.json").read_text())["calibration"]
    assert cal["kvp"] == 120.0 and "kvp_unknown" not in cal["flags"] and "kVp 120" in out
