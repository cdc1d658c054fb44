"""The shipped DEMO VB-Net weights: verified, labelled DEMO, world-correct on real files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from femurscreen.errors import ModelError
from femurscreen.evaluation.seg_metrics import dice
from femurscreen.labels import LEFT, RIGHT
from femurscreen.manifest import sha256_file
from femurscreen.resources import resource_dir
from femurscreen.segmentation.vbnet import VBNetEngine, default_weights_dir

PHANTOM = resource_dir() / "SampleData" / "femurscreen_phantom_ct.nii.gz"


@pytest.fixture(scope="module")
def engine() -> VBNetEngine:
    return VBNetEngine(device="cpu")


def _world_centroid(labels: sitk.Image, value: int) -> np.ndarray:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labels)
    return np.asarray(stats.GetCentroid(value))


def test_shipped_weights_match_manifest_and_say_demo(engine):
    folder = default_weights_dir()
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["demo"] is True and "not for clinical use" in manifest["demo_notice"]
    assert manifest["training_data"]["synthetic"] is True
    total = 0
    for name in ("coarse", "fine"):
        entry = manifest["models"][name]
        path = folder / entry["file"]
        assert sha256_file(path) == entry["sha256"]
        total += path.stat().st_size
        assert entry["training"]["history"], name  # how it was trained is recorded
    assert total < 8_000_000  # a few MB in the extension
    info = engine.describe()
    assert info["demo"] is True and info["name"] == "vbnet-demo"


def test_a_changed_shipped_file_is_refused(tmp_path):
    copy = tmp_path / "vbnet-demo"
    shutil.copytree(default_weights_dir(), copy)
    fine = copy / "fine.safetensors"
    data = bytearray(fine.read_bytes())
    data[len(data) // 2] ^= 0x01
    fine.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its manifest"):
        VBNetEngine(copy, device="cpu")


def test_sides_are_world_correct_whatever_the_voxel_order(engine):
    """The same phantom stored LPS and with x and y flipped (RAS): same world labels."""
    ct = sitk.ReadImage(str(PHANTOM))
    lps = engine.predict(ct)
    flipped_ct = sitk.Flip(ct, [True, True, False])  # keeps world positions, reverses voxels
    assert flipped_ct.GetDirection() != ct.GetDirection()
    ras = engine.predict(flipped_ct)
    back = sitk.Resample(ras, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    a, b = sitk.GetArrayViewFromImage(lps), sitk.GetArrayViewFromImage(back)
    for side in (LEFT, RIGHT):
        assert (a == side).sum() > 1000, side
        assert dice(a == side, b == side) > 0.97, side
    # the patient's left femur (1) lies at world +x (LPS), the right one (2) at -x
    assert _world_centroid(lps, LEFT)[0] > 30 > -30 > _world_centroid(lps, RIGHT)[0]


def test_real_ct_both_hips_on_their_own_sides(engine, real_ct_path):
    from femurscreen.segmentation import segment

    result = segment(sitk.ReadImage(str(real_ct_path)), engine="vbnet")
    assert result.engine == "vbnet" and result.demo
    assert result.to_dict()["model"]["demo_notice"].startswith("DEMO")
    assert result.sides["left"].status == "implant"  # the metal in the left femur
    assert _world_centroid(result.labels, LEFT)[0] > 50
    # The demo network's right label climbs from the head into the acetabulum and ilium
    # (README: 175 ml against ~95 ml); the wrong-bone guard refuses it instead of grading it.
    right = result.sides["right"]
    assert right.status == "not_found" and "pelvis_in_mask" in right.flags, right
    assert "pelvis" in (right.reason or "")
    assert not (sitk.GetArrayViewFromImage(result.labels) == RIGHT).any()


def test_segment_cli_labels_demo_weights(tmp_path, capsys):
    from femurscreen.cli import main

    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(PHANTOM), "--out", str(out), "--engine", "vbnet"]) == 0
    assert "DEMO WEIGHTS" in capsys.readouterr().out
    assert main(["segment", str(PHANTOM), "--out", str(out), "--engine", "vbnet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["demo"] is True and report["model"]["name"] == "vbnet-demo"
