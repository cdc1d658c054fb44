"""The one cohort CSV reader: text cells, paths relative to the CSV, clear refusals; and the
four users (features, VB-Net training, classifier training, phantom cohort) agree on a cohort."""

from __future__ import annotations

from pathlib import Path

import pytest
from femurscreen.classifier.from_cohort import cohort_labels
from femurscreen.errors import InputError
from femurscreen.features.cohort_extract import read_cohort as features_cohort
from femurscreen.io.cohort_csv import read_cohort_csv
from femurscreen.phantom.cohort_writer import read_cohort as phantom_cohort
from femurscreen.segmentation.vbnet.data import read_cohort as vbnet_cohort

HEADER = "case_id,ct,mask,t_score,bone_status\n"


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def test_cells_are_text_and_paths_resolve_against_the_csv_folder(tmp_path):
    csv = _write(
        tmp_path / "cohorts" / "c.csv",
        HEADER + "007, ct/007.nii.gz ,m/007.nii.gz,-2.7,\n\n008,/abs/ct.nrrd,m.nrrd,,normal\n",
        encoding="utf-8-sig",  # a spreadsheet's byte-order mark
    )
    table = read_cohort_csv(csv, ("ct", "mask"))
    assert table.case_ids == ["007", "008"]  # leading zero kept, blank line skipped
    assert table.columns[0] == "case_id"
    first, second = table.rows
    assert table.path_of(first, "ct") == (tmp_path / "cohorts" / "ct/007.nii.gz").resolve()
    assert table.path_of(second, "ct") == Path("/abs/ct.nrrd")
    frame = table.frame()
    assert list(frame["t_score"]) == ["-2.7", ""]
    assert cohort_labels(frame, csv).to_dict() == {"007": "osteoporosis", "008": "normal"}
    # the users of the reader see the same cases and files
    assert [c for c, _, _ in features_cohort(csv)] == ["007", "008"]
    assert features_cohort(csv)[0][1] == table.path_of(first, "ct")
    assert [r["case_id"] for r in vbnet_cohort(csv).rows] == ["007", "008"]
    assert [r["case_id"] for r in phantom_cohort(csv)] == ["007", "008"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("case_id,ct\n1,a.nii\n", "lacks column(s) mask"),
        ("ct,mask\na,b\n", "lacks column(s) case_id"),
        ("case_id,ct,mask\n", "has no cases"),
        ("case_id,ct,mask\n1,a,b\n1,c,d\n", "repeated case_id(s) in the cohort CSV: 1"),
        ("case_id,ct,mask\n1,a,b\n,c,d\n", "rows without a case_id (line(s) 3)"),
        ("case_id,ct,mask\n1,a,b,c\n", "more cells than header columns on line(s) 2"),
    ],
)
def test_bad_cohorts_are_refused_naming_the_file_and_the_fix(tmp_path, text, message):
    csv = _write(tmp_path / "bad.csv", text)
    for read in (
        lambda: read_cohort_csv(csv, ("ct", "mask")),
        lambda: features_cohort(csv),
        lambda: vbnet_cohort(csv),
    ):
        with pytest.raises(InputError) as info:
            read()
        assert message in str(info.value) and str(csv) in str(info.value)
        assert info.value.fix


def test_missing_and_undecodable_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="cohort CSV not found"):
        read_cohort_csv(tmp_path / "none.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("case_id,ct,mask\n1,\xe9.nii,b\n".encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8"):
        read_cohort_csv(latin)


def test_case_id_may_be_left_out_where_the_caller_names_cases(tmp_path):
    """The Slicer review names a case after its CT: case_id optional, given ids still unique."""
    no_column = _write(tmp_path / "a.csv", "ct\nx/1.nii.gz\ny/2.nii.gz\n")
    with pytest.raises(InputError, match="case_id"):
        read_cohort_csv(no_column, ("ct",))
    table = read_cohort_csv(no_column, ("ct",), case_id_required=False)
    assert [table.path_of(row, "ct") for row in table.rows] == [
        tmp_path / "x/1.nii.gz",
        tmp_path / "y/2.nii.gz",
    ]
    some_blank = _write(tmp_path / "b.csv", "case_id,ct\n,1.nii.gz\nc2,2.nii.gz\n")
    rows = read_cohort_csv(some_blank, ("ct",), case_id_required=False).rows
    assert [row.get("case_id") for row in rows] == ["", "c2"]
    repeated = _write(tmp_path / "c.csv", "case_id,ct\nc2,1.nii.gz\nc2,2.nii.gz\n")
    with pytest.raises(InputError, match="repeated case_id"):
        read_cohort_csv(repeated, ("ct",), case_id_required=False)
