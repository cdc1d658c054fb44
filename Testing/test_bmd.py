"""CT-derived hip aBMD (femurscreen.bmd): calibration, projection, T-scores, refusals, CLI.

Phantoms are rendered at 3 mm (fast) with density truth from their own analytic anatomy
(femurscreen.phantom.truth); the real sample CT checks the calibration on a real scan.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from femurscreen.bmd import measure
from femurscreen.bmd.calibration import REFERENCE_HU, calibrate
from femurscreen.bmd.tscore import REFERENCE, grade, t_score
from femurscreen.cli import main as cli_main
from femurscreen.phantom import PhantomOptions, make_case
from femurscreen.phantom.scanner import Scanner

SPACING = (3.0, 3.0, 3.0)
SHIFTED = Scanner(scale=1.02, offset=12.0, kvp=120.0)  # miscalibrated, same kVp


@pytest.fixture(scope="module")
def pair():
    """One phantom case rendered by the identity scanner and by a miscalibrated one."""
    out = {}
    for name, scanner in (("identity", Scanner()), ("shifted", SHIFTED)):
        out[name] = make_case(21, -1.8, PhantomOptions(spacing=SPACING, scanner=scanner))
    return out


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli_main(list(argv))
    return code, out.getvalue(), err.getvalue()


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


def test_calibration_recovers_the_scanner(pair):
    for name, (ct, _mask, _info) in pair.items():
        cal = calibrate(sitk.GetArrayViewFromImage(ct), ct.GetSpacing())
        assert cal.ok, (name, cal.reason)
        assert [p.name for p in cal.points] == ["air", "fat", "muscle"]
        assert all(abs(p.residual_hu) < 25 for p in cal.points)
        # the calibrated scale maps the scanner's water (its offset) back near 0 HU
        scanner = Scanner() if name == "identity" else SHIFTED
        water = scanner.hu(0.0)
        assert abs(cal.slope * water + cal.intercept) < 12.0
        assert abs(cal.slope * scanner.hu(-1000.0) + cal.intercept + 1000.0) < 15.0
        d = cal.as_dict()
        assert d["material"] == "K2HPO4" and d["status"] == "ok"
        assert d["density_slope_mg_cm3_per_hu"] == pytest.approx(0.8 * cal.slope, abs=1e-4)


def test_abmd_is_close_to_the_truth_and_stable_across_scanners(pair):
    results = {}
    for name, (ct, mask, info) in pair.items():
        res = measure(ct, mask)
        for side in ("left", "right"):
            s = res[side]
            assert s["status"] == "ok", s
            assert abs(s["fn_abmd_g_cm2"] - info[f"true_fn_abmd_{side}_g_cm2"]) < 0.12
            assert abs(s["th_abmd_g_cm2"] - info[f"true_th_abmd_{side}_g_cm2"]) < 0.15
            assert s["who_class"] in ("normal", "osteopenia", "osteoporosis")
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
    """The phantom with an enhanced aorta-like vessel (250 HU, 20 mm) through the pelvis."""
    ct, _mask, _ = pair["identity"]
    a = sitk.GetArrayFromImage(ct)
    k, j, i = np.indices(a.shape)
    world_x = ct.GetOrigin()[0] + i * ct.GetSpacing()[0]
    world_y = ct.GetOrigin()[1] + j * ct.GetSpacing()[1]
    body_y = (
        np.mean(np.nonzero(a[a.shape[0] // 2] > -500)[0]) * ct.GetSpacing()[1] + ct.GetOrigin()[1]
    )
    tube = (world_x**2 + (world_y - (body_y - 45.0)) ** 2 <= 10.0**2) & (k > a.shape[0] // 3)
    a[tube] = 250
    img = sitk.GetImageFromArray(a)
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
    assert cal.contrast_ml == 0.0  # an unenhanced scan
    obs = {p.name: p.observed_hu for p in cal.points}
    assert -1010 < obs["air"] < -980 and -115 < obs["fat"] < -85 and 0 < obs["muscle"] < 60
    assert 0.95 < cal.slope < 1.05 and REFERENCE_HU["air"] == -1000.0
