"""Segmentation quality signal: per-side agreement with the other engine, high on phantoms
where both engines are right, low on the real sample CT where they disagree (flagged
``review_segmentation``, still graded), and honest when the second engine cannot run."""

from __future__ import annotations

from femurscreen.errors import ModelError
from femurscreen.segmentation import pipeline, segment
from femurscreen.segmentation.flags import FLAG_HELP, blocks_grading
from test_wrong_bone import _phantom


def test_phantom_engines_agree():
    ct, _ = _phantom("top", 20.0)
    result = segment(ct, engine="classical", quality=True)
    for name, side in result.sides.items():
        assert side.status == "ok", name
        assert side.quality_method == "dice_with_vbnet"
        assert side.quality is not None and side.quality >= 0.9, (name, side.quality)
        assert "review_segmentation" not in side.flags
        assert side.to_dict()["quality"] == round(side.quality, 3)
    assert "quality" in result.timing_s


def test_real_ct_disagreement_asks_for_review_but_still_grades(real_ct):
    result = segment(real_ct, engine="classical", quality=True)
    right = result.sides["right"]
    assert right.status == "ok"  # informative: the side is still graded
    assert right.quality is not None and right.quality < pipeline.REVIEW_QUALITY
    assert "review_segmentation" in right.flags
    assert not blocks_grading("review_segmentation")
    assert "check the mask" in FLAG_HELP["review_segmentation"]


def test_quality_is_opt_in_and_says_when_it_cannot_be_computed(
    real_ct, real_ct_classical, monkeypatch
):
    plain = real_ct_classical
    assert all(s.quality is None and s.quality_method is None for s in plain.sides.values())

    real_get_engine = pipeline.get_engine

    def no_vbnet(name: str = "default"):
        if name == "vbnet":
            raise ModelError("the VB-Net segmentation engine cannot be loaded (test)", "none")
        return real_get_engine(name)

    monkeypatch.setattr(pipeline, "get_engine", no_vbnet)
    result = segment(real_ct, engine="classical", quality=True)
    for side in result.sides.values():
        assert side.quality is None
        assert side.quality_method == "dice_with_vbnet_unavailable"
        assert "review_segmentation" not in side.flags
