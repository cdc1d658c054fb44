"""Site scanner calibration (femurscreen.bmd.site, ``femurscreen calibrate-scanner``): a K2HPO4
rods phantom scanned once per scanner fixes that scanner's effective energy for later scans.

Real files and the real CLI throughout: rods phantoms rendered through phantom scanners
(femurscreen.phantom.rods, noise and a day's drift), patient phantoms at 3 mm with density
truth, written as NIfTI and as a DICOM series (femurscreen.dicom.series).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk
from cli_runner import run_cli
from femurscreen.bmd import (
    SiteCalibration,
    check_site_calibration,
    load_site_calibration,
    measure,
    set_site_calibration,
)
from femurscreen.bmd.site import ROD_FILE_FORMAT, SITE_FORMAT, fit_rods_image
from femurscreen.dicom.series import write_ct_series
from femurscreen.errors import InputError
from femurscreen.phantom import PhantomOptions, make_case
from femurscreen.phantom import rods as rods_phantom
from femurscreen.phantom.scanner import Scanner

SPACING = (3.0, 3.0, 3.0)
# one kVp, two beams: the phantomless fit cannot tell them apart (filtration differs)
HARD = Scanner(scale=0.99, offset=-6.0, kvp=120.0, energy_kev=68.4)
SOFT = Scanner(scale=1.01, offset=5.0, kvp=120.0, energy_kev=63.4)


def _fit(scanner: Scanner, seed: int):
    ct, lab, rods, info = rods_phantom.make_rods_phantom(scanner, seed=seed)
    entry = fit_rods_image(
        ct,
        lab,
        rods,
        {"kvp": scanner.kvp},
    )
    return entry, info


@pytest.mark.parametrize(
    "scanner",
    [
        Scanner(kvp=100.0, energy_kev=57.5),
        HARD,
        SOFT,
        # air at -1008 HU: part of it clipped at -1024 (the median still reads it)
        Scanner(scale=1.02, offset=12.0, kvp=140.0, energy_kev=73.6),
    ],
)
def test_rods_fit_recovers_the_scanners_energy(scanner):
    """The energy comes back within 3 of its stated SDs (and within 0.6 keV) on three scans
    of the phantom each (own noise, own day's drift); the HU scale is the scanner's times that
    day's drift; the rods lie on their line."""
    for seed in range(3):
        entry, info = _fit(scanner, seed)
        err = entry.energy_kev - scanner.kev
        assert 0.02 < entry.energy_sd_kev < 0.6, entry
        assert abs(err) <= 3.0 * entry.energy_sd_kev and abs(err) < 0.6, (seed, err, entry)
        assert entry.hu_scale == pytest.approx(scanner.scale * info["drift_scale"], abs=0.006)
        assert entry.rms_residual_hu < 2.0 and len(entry.rods) == 5
        assert entry.kvp == scanner.kvp and entry.material == "K2HPO4"


def test_clipped_air_is_refused():
    """Air below the -1024 floor (a miscalibrated scanner): no HU scale, refused with why."""
    ct, lab, rods, _info = rods_phantom.make_rods_phantom(
        Scanner(scale=1.03, offset=-12.0, kvp=140.0), seed=0
    )
    with pytest.raises(InputError, match="clipped"):
        fit_rods_image(
            ct,
            lab,
            rods,
            {"kvp": 140.0},
        )


def test_the_rods_file_formats_agree():
    """The phantom writes what the estimator reads (two copies: the world is not the model)."""
    assert rods_phantom.ROD_FILE_FORMAT == ROD_FILE_FORMAT


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    """A rods phantom scanned by HARD, written the way a user gets one (NIfTI: no kVp)."""
    folder = tmp_path_factory.mktemp("rods") / "hard"
    return rods_phantom.write_rods_phantom(folder, HARD, seed=5)


def _calibrate(demo: dict[str, Path], out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        "calibrate-scanner",
        str(demo["ct"]),
        "--rods-mask",
        str(demo["mask"]),
        "--rods-json",
        str(demo["rods"]),
        "--out",
        str(out),
        *extra,
    )


def test_cli_demo_phantom_calibrate_and_update(tmp_path):
    """The demo phantom a user can write, calibrated by the CLI; a second scanner is added to
    the same file, re-calibrating the first replaces only its entry."""
    code, out, err = run_cli(
        "calibrate-scanner", "--write-demo-phantom", str(tmp_path / "demo"), "--kvp", "120",
        "--demo-energy", "68.4",
    )  # fmt: skip
    assert code == 0, err
    files = {p.name for p in (tmp_path / "demo").iterdir()}
    assert files == {"rods_ct.nii.gz", "rods_mask.nii.gz", "rods.json", "scanner_truth.json"}
    assert "--kvp 120" in out  # the next command, complete
    demo = {
        "ct": tmp_path / "demo" / "rods_ct.nii.gz",
        "mask": tmp_path / "demo" / "rods_mask.nii.gz",
        "rods": tmp_path / "demo" / "rods.json",
    }
    site = tmp_path / "site.json"
    code, out, err = _calibrate(demo, site, "--kvp", "120", "--manufacturer", "ACME")
    assert code == 0, err
    assert "effective energy" in out and "added" in out
    data = json.loads(site.read_text())
    assert data["format"] == SITE_FORMAT and len(data["entries"]) == 1
    first = data["entries"][0]
    truth = json.loads((tmp_path / "demo" / "scanner_truth.json").read_text())
    assert truth["energy_kev"] == pytest.approx(68.4)
    assert abs(first["energy_kev"] - 68.4) <= 3 * first["energy_sd_kev"]
    assert first["manufacturer"] == "ACME" and first["kvp"] == 120.0
    assert first["phantom"] == "rods_ct.nii.gz"  # the file's name, no folders
    # a second scanner (100 kVp) goes into the same file
    other = rods_phantom.write_rods_phantom(tmp_path / "p100", Scanner(kvp=100.0), seed=1)
    code, out, err = _calibrate(other, site, "--kvp", "100", "--manufacturer", "ACME")
    assert code == 0 and "added" in out, err
    entries = json.loads(site.read_text())["entries"]
    assert [e["kvp"] for e in entries] == [120.0, 100.0] and entries[0] == first
    # the first scanner again (another day): its entry replaced, the other kept
    again = rods_phantom.write_rods_phantom(tmp_path / "again", HARD, seed=9)
    code, out, err = _calibrate(again, site, "--kvp", "120", "--manufacturer", "ACME")
    assert code == 0 and "updated" in out, err
    entries = json.loads(site.read_text())["entries"]
    assert sorted(e["kvp"] for e in entries) == [100.0, 120.0]
    new = next(e for e in entries if e["kvp"] == 120.0)
    assert new["energy_kev"] != first["energy_kev"] and abs(new["energy_kev"] - 68.4) < 0.6
    assert len(load_site_calibration(site).entries) == 2


def _rods_json(path: Path, rods: dict[int, float], material: str = "K2HPO4") -> Path:
    doc = {
        "format": ROD_FILE_FORMAT,
        "material": material,
        "rods": [{"label": k, "mg_cm3": v} for k, v in rods.items()],
    }
    path.write_text(json.dumps(doc))
    return path


def test_cli_refuses_bad_phantom_input(demo, tmp_path):
    """Each bad input: exit 1, the reason and what to do, the site file untouched (a new one
    not made)."""
    site = tmp_path / "site.json"
    code, _out, err = _calibrate(demo, site, "--kvp", "120")
    assert code == 0, err
    before = site.read_bytes()
    good = {1: 0.0, 2: 50.0, 3: 100.0, 4: 150.0, 5: 200.0}
    shifted = sitk.ReadImage(str(demo["mask"]))
    shifted.SetOrigin(tuple(o + 1.5 for o in shifted.GetOrigin()))
    off_grid = tmp_path / "off_grid.nii.gz"
    sitk.WriteImage(shifted, str(off_grid))
    fractional = sitk.Cast(sitk.ReadImage(str(demo["mask"])), sitk.sitkFloat32) * 0.5
    half = tmp_path / "half.nii.gz"
    sitk.WriteImage(fractional, str(half))
    cases = {
        "no kVp (NIfTI)": ({}, [], "tube voltage"),
        "a rod missing from the mask": ({"rods": {**good, 6: 250.0}}, ["--kvp", "120"], "[6]"),
        "swapped labels": (
            {"rods": {**good, 1: 50.0, 2: 0.0}},
            ["--kvp", "120"],
            "do not lie on a line",
        ),
        "two rods": ({"rods": {1: 0.0, 2: 200.0}}, ["--kvp", "120"], "at least 3 rods"),
        "densities in g/cm3": (
            {"rods": {k: v / 1000 for k, v in good.items()}},
            ["--kvp", "120"],
            "spanning 0 mg/cm3",
        ),
        "hydroxyapatite": ({"rods": good, "material": "HA"}, ["--kvp", "120"], "K2HPO4"),
        "mask off the grid": ({"mask": off_grid}, ["--kvp", "120"], "grid"),
        "mask not labels": ({"mask": half}, ["--kvp", "120"], "not a label map"),
        "wrong kVp for this beam": ({}, ["--kvp", "80"], "keV from what 80 kVp gives"),
    }
    for name, (change, extra, words) in cases.items():
        files = dict(demo)
        if "rods" in change:
            files["rods"] = _rods_json(
                tmp_path / "rods_bad.json", change["rods"], change.get("material", "K2HPO4")
            )
        if "mask" in change:
            files["mask"] = change["mask"]
        for out in (site, tmp_path / "new.json"):
            code, _out, err = _calibrate(files, out, *extra)
            assert code == 1, (name, err)
            assert words in err, (name, err)
            assert ". " in err  # what to do follows what is wrong
        assert site.read_bytes() == before, name
        assert not (tmp_path / "new.json").exists(), name
    # an --out that is no site file is refused before any work, and left as it was
    (tmp_path / "notes.json").write_text('{"my": "notes"}')
    code, _out, err = _calibrate(demo, tmp_path / "notes.json", "--kvp", "120")
    assert code == 1 and "not a FemurScreen site calibration" in err
    assert json.loads((tmp_path / "notes.json").read_text()) == {"my": "notes"}
    # nothing but stray temporary files must be left beside the outputs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_site_files_are_checked(tmp_path, demo):
    """load/check refuse what cannot be used, saying what and what to do."""
    site = tmp_path / "site.json"
    assert _calibrate(demo, site, "--kvp", "120")[0] == 0
    loaded = check_site_calibration(site)
    assert isinstance(loaded, SiteCalibration) and loaded.file == "site.json"
    data = json.loads(site.read_text())
    bad = {
        "missing": None,
        "not json": "{",
        "wrong format": json.dumps({"format": "x", "entries": []}),
        "no entries": json.dumps({"format": SITE_FORMAT, "entries": []}),
        "energy outside": json.dumps(
            {"format": SITE_FORMAT, "entries": [{**data["entries"][0], "energy_kev": 120.0}]}
        ),
        "no energy": json.dumps(
            {"format": SITE_FORMAT, "entries": [{**data["entries"][0], "energy_kev": None}]}
        ),
        "duplicate": json.dumps({"format": SITE_FORMAT, "entries": data["entries"] * 2}),
    }
    words = {
        "missing": "not found",
        "not json": "not valid JSON",
        "wrong format": "not a FemurScreen site calibration",
        "no entries": "no scanner entries",
        "energy outside": "energy 120.0 keV outside",
        "no energy": "'energy_kev' is None",
        "duplicate": "duplicate",
    }
    for name, text in bad.items():
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        if text is not None:
            path.write_text(text)
        with pytest.raises(InputError, match=words[name]):
            load_site_calibration(path)
    # the bmd CLI refuses such a file before reading the CT, writing nothing
    out = tmp_path / "bmd.json"
    code, _o, err = run_cli(
        "bmd", str(demo["ct"]), "--scanner-calibration", str(tmp_path / "duplicate.json"),
        "--json", str(out),
    )  # fmt: skip
    assert code == 1 and "duplicate" in err and not out.exists()


@pytest.fixture(scope="module")
def patients(tmp_path_factory) -> dict[str, tuple[Path, Path, dict, Path]]:
    """One case (its femurs, density truth) rendered by HARD and SOFT, as NIfTI, each with a
    site file made by the CLI from its own scanner's rods phantom."""
    root = tmp_path_factory.mktemp("patients")
    out = {}
    for name, scanner in (("hard", HARD), ("soft", SOFT)):
        ct, mask, info = make_case(21, -1.8, PhantomOptions(spacing=SPACING, scanner=scanner))
        sitk.WriteImage(ct, str(root / f"{name}_ct.nii.gz"))
        sitk.WriteImage(mask, str(root / f"{name}_femur.nii.gz"))
        demo = rods_phantom.write_rods_phantom(root / f"{name}_rods", scanner, seed=2)
        site = root / f"{name}_site.json"
        code, _out, err = _calibrate(demo, site, "--kvp", "120")
        assert code == 0, err
        out[name] = (root / f"{name}_ct.nii.gz", root / f"{name}_femur.nii.gz", info, site)
    return out


def _bmd(ct: Path, mask: Path, out: Path, *extra: str) -> dict:
    code, text, err = run_cli("bmd", str(ct), "--mask", str(mask), "--json", str(out), *extra)
    assert code == 0, err
    data = json.loads(out.read_text())
    data["_text"] = text
    return data


def test_two_scanners_agree_with_site_calibration(patients, tmp_path):
    """The same femurs under two beams of one kVp: raw HU far apart and the phantomless T-scores
    too (the fit cannot see filtration); with each scanner's site file they agree within 0.3.
    The calibration block says which entry and energy were used."""
    res: dict[str, dict] = {}
    raw = {}
    for name, (ct, mask, _info, site) in patients.items():
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(ct))).astype(float)
        bone = sitk.GetArrayFromImage(sitk.ReadImage(str(mask))) > 0
        raw[name] = float(a[bone].mean())
        res[f"{name}_kvp"] = _bmd(ct, mask, tmp_path / f"{name}_a.json", "--kvp", "120")
        res[f"{name}_site"] = _bmd(
            ct, mask, tmp_path / f"{name}_b.json", "--kvp", "120", "--scanner-calibration",
            str(site),
        )  # fmt: skip
        cal = res[f"{name}_site"]["calibration"]
        entry = json.loads(site.read_text())["entries"][0]
        assert cal["source"] == "site" and cal["site"]["status"] == "used"
        assert cal["site"]["file"] == site.name and cal["site"]["entry"]["kvp"] == 120.0
        assert cal["energy_kev"] == pytest.approx(entry["energy_kev"], abs=0.01)
        assert cal["energy_sd_kev"] == pytest.approx(entry["energy_sd_kev"], abs=0.01)
        assert "site phantom calibration" in res[f"{name}_site"]["label"]
        assert "site calibration" in res[f"{name}_site"]["_text"]
        assert res[f"{name}_kvp"]["calibration"]["source"] == "phantomless"
        assert res[f"{name}_kvp"]["calibration"]["site"] is None
    assert raw["soft"] - raw["hard"] > 40.0  # raw HU of the same femurs far apart
    info = patients["hard"][2]
    for side in ("left", "right"):
        t = {k: v[side]["fn_t_score"] for k, v in res.items()}
        assert all(v[side]["status"] == "ok" for v in res.values())
        assert res["hard_site"][side]["calibration_source"] == "site"
        assert abs(t["hard_kvp"] - t["soft_kvp"]) > 0.5, t  # phantomless: a beam apart
        assert abs(t["hard_site"] - t["soft_site"]) < 0.3, t
        for name in ("hard_site", "soft_site"):
            est = res[name][side]["fn_abmd_g_cm2"]
            assert abs(est - info[f"true_fn_abmd_{side}_g_cm2"]) < 0.08, (name, side, est)


def test_site_file_on_a_nifti_without_kvp(patients, tmp_path):
    """A NIfTI CT without --kvp: the entry is used at its kVp, and that is flagged; with
    entries of two kVp for it, none is used."""
    ct, mask, _info, site = patients["soft"]
    data = _bmd(ct, mask, tmp_path / "b.json", "--scanner-calibration", str(site))
    cal = data["calibration"]
    assert cal["source"] == "site" and cal["kvp"] == 120.0
    assert "site_kvp_unverified" in cal["flags"] and "kvp_unknown" not in cal["flags"]
    assert "site_kvp_unverified" in data["right"]["flags"]
    assert data["right"]["status"] == "ok"
    # entries at two kVp for this scanner: which one the scan needs is unknown, none is used
    two = json.loads(site.read_text())
    two["entries"].append({**two["entries"][0], "kvp": 100.0})
    (tmp_path / "two.json").write_text(json.dumps(two))
    data = _bmd(ct, mask, tmp_path / "c.json", "--scanner-calibration", str(tmp_path / "two.json"))
    cal = data["calibration"]
    assert cal["source"] == "phantomless" and cal["site"]["status"] == "ambiguous"
    assert "site_kvp_ambiguous" in cal["flags"] and "kvp_unknown" in cal["flags"]
    assert "--kvp" in cal["site"]["note"]


def _site_with(site: Path, out: Path, **changes: object) -> Path:
    data = json.loads(site.read_text())
    data["entries"] = [{**data["entries"][0], **changes}]
    out.write_text(json.dumps(data))
    return out


def test_mismatching_entries_are_not_used_and_flagged(patients, tmp_path):
    """A DICOM series (Manufacturer/Model/KVP in its header, femurscreen.dicom.series): an entry
    of another scanner or kVp is not used (phantomless, flagged in the calibration and on each
    side); the entry of this scanner is, a differing kernel flagged; --kvp replaces the
    header's kVp for the match."""
    ct_path, mask, _info, site = patients["hard"]
    dicom = tmp_path / "dicom"
    write_ct_series(sitk.ReadImage(str(ct_path)), dicom)
    this = {"manufacturer": "FemurScreen", "model": "femurscreen.dicom.series"}
    files = {
        "no_scanner": site,  # made from a NIfTI: the entry knows its kVp only
        "other_scanner": _site_with(site, tmp_path / "a.json", manufacturer="ACME", model="X1"),
        "other_kvp": _site_with(site, tmp_path / "b.json", kvp=140.0, **this),
        "this": _site_with(site, tmp_path / "c.json", kernel="B30f", **this),
    }
    res = {
        name: _bmd(dicom, mask, tmp_path / f"{name}.json", "--scanner-calibration", str(path))
        for name, path in files.items()
    }
    scanner = res["other_scanner"]["calibration"]
    assert scanner["source"] == "phantomless" and scanner["site"]["status"] == "scanner_mismatch"
    assert "site_scanner_mismatch" in scanner["flags"] and scanner["site"]["entry"] is None
    assert "ACME" in scanner["site"]["note"] and "FemurScreen" in scanner["site"]["note"]
    kvp = res["other_kvp"]["calibration"]
    assert kvp["source"] == "phantomless" and "site_kvp_mismatch" in kvp["flags"]
    assert kvp["kvp"] == 120.0  # the header's, read from the DICOM series
    for name in ("other_scanner", "other_kvp"):
        side = res[name]["right"]
        assert side["status"] == "ok" and side["calibration_source"] == "phantomless"
        assert f"site_{res[name]['calibration']['site']['status']}" in side["flags"]
    loose = res["no_scanner"]["calibration"]
    assert loose["source"] == "site" and "site_scanner_unverified" in loose["flags"]
    used = res["this"]["calibration"]
    assert used["source"] == "site" and used["site"]["status"] == "used"
    assert not [f for f in used["flags"] if f.startswith("site_")]  # the scan has no kernel
    # --kvp on the command line replaces the header's: now the 140 kVp entry is the match
    over = _bmd(
        dicom, mask, tmp_path / "over.json", "--scanner-calibration", str(files["other_kvp"]),
        "--kvp", "140",
    )  # fmt: skip
    assert over["calibration"]["source"] == "site" and over["calibration"]["kvp"] == 140.0


def test_set_site_calibration_on_an_image(patients):
    """The public API screen/batch use: a loaded file recorded on the image, read by measure;
    the same numbers as the path form; an image without one stays phantomless."""
    ct_path, mask_path, _info, site = patients["soft"]
    ct, mask = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(mask_path))
    plain = measure(ct, mask, kvp=120.0)
    assert plain["calibration"]["source"] == "phantomless"
    set_site_calibration(ct, load_site_calibration(site))
    a = measure(ct, mask, kvp=120.0)
    ct2 = sitk.ReadImage(str(ct_path))
    set_site_calibration(ct2, site)
    b = measure(ct2, mask, kvp=120.0)
    assert a["calibration"]["source"] == b["calibration"]["source"] == "site"
    assert a["right"]["fn_abmd_g_cm2"] == b["right"]["fn_abmd_g_cm2"]
    assert a["right"]["fn_abmd_g_cm2"] != plain["right"]["fn_abmd_g_cm2"]
