"""The one status vocabulary and the one flag table."""

from __future__ import annotations

import json

from femurscreen.segmentation.flags import (
    FLAG_HELP,
    FLAG_STATUS,
    FLAGS,
    GUARD_FLAGS,
    blocks_grading,
    primary_status,
    side_flags,
)
from femurscreen.status import GRADED_STATUSES, STATUS_PRECEDENCE, Status


def test_status_values_serialise_as_the_strings_result_files_have_always_held() -> None:
    values = {s.value for s in Status}
    assert values == {"ok", "not_found", "implant", "truncated", "error"}
    text = json.dumps({"status": Status.NOT_FOUND, "flags": [Status.IMPLANT]})
    assert text == '{"status": "not_found", "flags": ["implant"]}'
    assert f"{Status.TRUNCATED:<10}|" == "truncated |"
    assert Status("ok") is Status.OK and Status.OK == "ok"
    assert {Status.OK} == GRADED_STATUSES and STATUS_PRECEDENCE[-1] is Status.OK


def test_flag_table_views_agree_with_the_table() -> None:
    assert set(FLAG_HELP) == set(FLAGS)
    for code, flag in FLAGS.items():
        assert flag.code == code and flag.words and flag.words == FLAG_HELP[code]
        assert blocks_grading(code) is flag.blocks_grading is (code in FLAG_STATUS)
        if flag.blocks_grading:
            assert isinstance(flag.status, Status)
    assert GUARD_FLAGS == ("not_femur", "pelvis_in_mask", "neck_not_in_view")
    # every flag that blocks grading says so in its words, or names the error
    for code in FLAG_STATUS:
        words = FLAG_HELP[code]
        assert "not graded" in words or FLAG_STATUS[code] is Status.ERROR, code


def test_every_flag_segmentation_can_set_is_in_the_table() -> None:
    flags = side_flags(
        volume_ml=10.0,
        metal_mm3=1e6,
        geometry_flags=["truncated", "distal_fov_short"],
        guard_flag="not_femur",
    )
    assert flags == ["not_femur", "implant", "truncated", "distal_fov_short", "small"]
    assert all(f in FLAGS for f in flags)
    assert primary_status(True, flags) is Status.NOT_FOUND
    assert primary_status(True, ["implant", "truncated"]) is Status.IMPLANT
    assert primary_status(True, ["neck_not_in_view"]) is Status.TRUNCATED
    assert primary_status(True, ["small", "review_segmentation"]) is Status.OK
    assert primary_status(False, []) is Status.NOT_FOUND


def test_real_ct_result_statuses_are_members_and_serialise_as_before(real_ct_classical) -> None:
    """On the real CT (left implant, right graded) the sides carry ``Status`` members and
    result.json holds exactly the old strings."""
    sides = real_ct_classical.sides
    assert sides["left"].status is Status.IMPLANT and sides["right"].status is Status.OK
    left = json.loads(json.dumps(sides["left"].to_dict()))
    assert left["status"] == "implant" and type(left["status"]) is str
    assert '"status": "ok"' in json.dumps(sides["right"].to_dict())
    sides["right"].flags.append("edited")  # a private copy: the next test does not see this


def test_each_test_gets_its_own_copy_of_the_session_segmentation(real_ct_classical) -> None:
    assert "edited" not in real_ct_classical.sides["right"].flags
