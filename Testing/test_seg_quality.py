"""Segmentation quality signal: per-side agreement (Dice) with the other engine. High on a
phantom where both engines are right; on the real sample CT a number in [0, 1] whose flag
``review_segmentation`` follows the limit and never blocks grading; low for a mask that is
plainly wrong; honest (None, "unavailable") when the second engine cannot run, here because its
weights are not installed, a real deployment state, and in ``.venv-312`` because torch is not.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cli_runner import run_cli
from femurscreen.segmentation import pipeline, segment
from femurscreen.segmentation.flags import FLAG_HELP, blocks_grading
from femurscreen.status import Status
from test_wrong_bone import _phantom

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="the VB-Net (second opinion) needs torch")


def _check_flag_follows_limit(side: pipeline.SideResult | dict) -> None:
    get = side.get if isinstance(side, dict) else (lambda k: getattr(side, k))
    quality = get("quality")
    assert quality is not None and 0.0 <= quality <= 1.0
    low = quality < pipeline.REVIEW_QUALITY
    assert ("review_segmentation" in get("flags")) == low, (quality, get("flags"))


@needs_torch
def test_phantom_engines_agree():
    ct, _ = _phantom("top", 20.0)
    result = segment(ct, engine="classical", quality=True)
    for name, side in result.sides.items():
        assert side.status == "ok", name
        assert side.quality_method == "dice_with_vbnet"
        assert side.quality is not None and side.quality >= 0.9, (name, side.quality)
        assert "review_segmentation" not in side.flags
        assert side.to_dict()["quality"] == round(side.quality, 3)
    assert result.timing_s["quality"] > 0


@needs_torch
def test_real_ct_segment_cli_quality_is_a_number_that_never_blocks_grading(
    real_ct_path, real_ct_classical, tmp_path
):
    """``femurscreen segment --quality`` on the real CT: per found side a Dice in [0, 1] with
    the VB-Net, its flag exactly below the limit, and otherwise the same sides, statuses, flags
    and labels as without the check (it only adds information)."""
    out = tmp_path / "femur.nii.gz"
    code, stdout, stderr = run_cli(
        "segment", str(real_ct_path), "--out", str(out), "--quality", "--json"
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    plain = real_ct_classical
    for name, side in report["sides"].items():
        before = plain.sides[name]
        assert side["status"] == before.status  # never changes what is graded
        assert [f for f in side["flags"] if f != "review_segmentation"] == before.flags
        if before.status == Status.NOT_FOUND:
            assert side["quality"] is None and side["quality_method"] is None
            continue
        assert side["quality_method"] == "dice_with_vbnet"
        _check_flag_follows_limit(side)
    assert report["timing_s"]["quality"] > 0
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert np.array_equal(written, sitk.GetArrayViewFromImage(plain.labels))
    assert not blocks_grading("review_segmentation")
    assert "check the mask" in FLAG_HELP["review_segmentation"]


@needs_torch
def test_a_plainly_wrong_mask_gets_low_quality_and_the_review_flag(real_ct, real_ct_classical):
    """The classical right femur cut down to the 5 % of its voxels in the lowest slices (a
    broken mask): whatever the VB-Net's right femur B is, the Dice is at most 2|A'| / (|A'| +
    |B|) for the 5 % left, A', far below the limit for any B of femur size, so the side is
    flagged for review; its status stays ok (the flag informs, it does not block)."""
    labels = sitk.GetArrayFromImage(real_ct_classical.labels)
    right = labels == 2
    k = np.nonzero(right)[0]
    keep_below = np.sort(k)[len(k) // 20]
    broken = labels.copy()
    broken[(labels == 2) & (np.arange(labels.shape[0])[:, None, None] > keep_below)] = 0
    broken_image = sitk.GetImageFromArray(broken)
    broken_image.CopyInformation(real_ct_classical.labels)
    sides = real_ct_classical.sides
    pipeline.add_quality(real_ct, broken_image, sides, "vbnet")
    side = sides["right"]
    assert side.quality_method == "dice_with_vbnet"
    assert side.quality is not None and side.quality < pipeline.REVIEW_QUALITY, side.quality
    assert "review_segmentation" in side.flags and side.status == Status.OK
    _check_flag_follows_limit(side)


def test_quality_is_opt_in_for_the_bare_segment_step(real_ct_classical):
    """``segment()`` (and ``femurscreen segment``) leave it off: no number, no method."""
    assert all(
        s.quality is None and s.quality_method is None for s in real_ct_classical.sides.values()
    )


def resources_without_vbnet(folder: Path) -> Path:
    """A resources folder as a deployment without the VB-Net weights has it: the classifier,
    radiomics parameters and sample data of this checkout, no ``Models/vbnet-demo``."""
    from femurscreen.resources import resource_dir

    shipped = resource_dir()
    (folder / "Models").mkdir(parents=True)
    for item in shipped.iterdir():
        if item.name != "Models":
            (folder / item.name).symlink_to(item)
    for model in (shipped / "Models").iterdir():
        if model.name != "vbnet-demo":
            (folder / "Models" / model.name).symlink_to(model)
    return folder


@pytest.fixture
def no_vbnet_weights(tmp_path, monkeypatch):
    """FEMURSCREEN_RESOURCES points at a deployment without the VB-Net weights; the cached
    VB-Net (loaded by earlier tests) is dropped before and after."""
    monkeypatch.setenv("FEMURSCREEN_RESOURCES", str(resources_without_vbnet(tmp_path / "res")))
    pipeline._vbnet_engine.cache_clear()
    yield
    pipeline._vbnet_engine.cache_clear()


def test_missing_second_engine_leaves_quality_unknown_and_screen_succeeds(
    real_ct_path, no_vbnet_weights, tmp_path
):
    """Without the VB-Net weights, ``screen`` (quality on by default) still grades the right
    femur; each found side says ``dice_with_vbnet_unavailable`` with quality None (unknown, not
    low: no review flag), in result.json, features.csv, the summary rows and the report."""
    import pandas as pd
    from femurscreen.grading import summary_rows

    out = tmp_path / "case"
    code, stdout, stderr = run_cli("screen", str(real_ct_path), "--out", str(out))
    assert code == 0, stderr
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert result["right"]["graded"] is True
    for name in ("left", "right"):
        side = result[name]
        assert side["quality"] is None
        assert side["quality_method"] == "dice_with_vbnet" + pipeline.UNAVAILABLE_SUFFIX
        assert "review_segmentation" not in side["flags"]
    features = pd.read_csv(out / "features.csv").set_index("side")
    assert math.isnan(features.loc["right", "seg_quality"])
    assert features.loc["right", "seg_quality_method"] == "dice_with_vbnet_unavailable"
    rows = {row["side"]: row for row in summary_rows(result["case"], result)}
    assert rows["right"]["seg_quality"] is None
    assert rows["right"]["seg_quality_method"] == "dice_with_vbnet_unavailable"
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "the vbnet engine is not available here" in report
    assert "not double-checked" in stdout
    # the bare step says the same in its table: no number, and why
    code, stdout, stderr = run_cli(
        "segment", str(real_ct_path), "--out", str(tmp_path / "f.nii.gz"), "--quality"
    )
    assert code == 0, stderr
    right = next(line for line in stdout.splitlines() if line.startswith("right "))
    assert right.split()[3] == "n/a" and "other engine cannot run here" in stdout
