"""A real PACS round trip: Orthanc on localhost, DICOMweb in and out, credentials from the env.

The server gets three studies over STOW: the real sample series (upper abdomen, no femur: that
study must fail, with the reason, without stopping the others), the real sample CT written as
a DICOM series with a localiser beside it (screened; the localiser skipped), and an MR-only
study (no CT to screen: failed). ``femurscreen batch --from-dicomweb --to-dicomweb`` must put a
SEG and an SR into the CT's own study and nothing into the others; a rerun stores nothing twice.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from femurscreen.cli import main
from femurscreen.dicom.series import SeriesOptions, write_ct_series
from femurscreen.dicom.web import PASSWORD_ENV, USER_ENV
from femurscreen.io.ctio import read_ct
from orthanc_server import Orthanc, orthanc_server
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from requests import Session

PATIENTS = {"abdomen": "Doe^Jane", "hips": "Roe^Richard", "mr": "Poe^Edgar"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    try:
        with orthanc_server(tmp_path_factory.mktemp("orthanc")) as running:
            yield running
    except RuntimeError as exc:  # not installed: a failure that says what to run, not a skip
        pytest.fail(str(exc))


def _client(server: Orthanc) -> DICOMwebClient:
    session = Session()
    session.auth = server.auth
    return DICOMwebClient(server.dicomweb, session=session)


def _restamp(dataset: pydicom.Dataset, study: str, series: str, patient: str, sop_class: str):
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
    dataset.SOPInstanceUID, dataset.SOPClassUID = generate_uid(), sop_class
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.MediaStorageSOPClassUID = sop_class
    dataset.PatientName, dataset.PatientID = patient, f"PID-{len(patient):04d}"
    return dataset


@pytest.fixture(scope="module")
def pacs(server: Orthanc, real_dicom_dir: Path, real_ct_path: Path, tmp_path_factory) -> dict:
    """The three studies, uploaded over STOW; their UIDs."""
    client = _client(server)
    uids = {name: (generate_uid(), generate_uid()) for name in PATIENTS}
    files = sorted(real_dicom_dir.iterdir())
    abdomen = [
        _restamp(pydicom.dcmread(p), *uids["abdomen"], PATIENTS["abdomen"], CTImageStorage)
        for p in files
    ]
    client.store_instances(abdomen)
    folder = tmp_path_factory.mktemp("hips-series")
    study, series = uids["hips"]
    options = SeriesOptions(study_instance_uid=study, series_instance_uid=series)
    options.patient = {**options.patient, "PatientName": PATIENTS["hips"]}
    hips = [pydicom.dcmread(p) for p in write_ct_series(read_ct(real_ct_path), folder, options)]
    scout = _restamp(pydicom.dcmread(files[0]), study, generate_uid(), "", CTImageStorage)
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.PatientName, scout.PatientID = hips[0].PatientName, hips[0].PatientID
    client.store_instances([*hips, scout])
    mr = _restamp(pydicom.dcmread(files[0]), *uids["mr"], PATIENTS["mr"], MRImageStorage)
    mr.Modality = "MR"
    client.store_instances([mr])
    return {"uids": uids}


@pytest.fixture(scope="module")
def round_trip(server: Orthanc, pacs: dict, tmp_path_factory) -> dict:
    """Two runs of the command as a user runs it (its own process, its real console): the
    second one resumes, with a process pool (series fetched first, screened by the workers)."""
    out = tmp_path_factory.mktemp("pacs-out") / "results"
    env = {**os.environ, USER_ENV: server.user, PASSWORD_ENV: server.password}
    url = server.dicomweb
    argv = ["batch", "--from-dicomweb", url, "--to-dicomweb", url, "--out", str(out)]
    runs = []
    for workers in ("1", "2"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "femurscreen",
                *argv,
                "--engine",
                "classical",
                "--workers",
                workers,
            ],
            env=env,
            capture_output=True,
            encoding="utf-8",  # not the locale's: a test may have set it to C
            errors="replace",
            timeout=300,
            check=False,
        )
        runs.append((done.returncode, done.stdout, done.stderr))
    return {"out": out, "runs": runs}


def _series(server: Orthanc, study: str) -> list[pydicom.Dataset]:
    return [pydicom.Dataset.from_json(s) for s in _client(server).search_for_series(study)]


def test_seg_and_sr_land_in_the_ct_study(server: Orthanc, pacs: dict, round_trip: dict) -> None:
    code, stdout, stderr = round_trip["runs"][0]
    assert code == 3, stderr  # two studies failed, the CT study did not
    study, series = pacs["uids"]["hips"]
    found = _series(server, study)
    modalities = sorted(str(s.Modality) for s in found)
    assert modalities == ["CT", "CT", "OT", "SEG", "SR"], modalities  # + scout, report capture
    assert {str(s.StudyInstanceUID) for s in found} == {study}
    seg_series = next(s for s in found if s.Modality == "SEG")
    (seg,) = _client(server).retrieve_series(
        study, str(seg_series.SeriesInstanceUID), media_types=(("application/dicom", "*"),)
    )
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series  # the CT we sent
    assert str(seg.PatientName) == PATIENTS["hips"]  # filed under the right patient
    for name in ("abdomen", "mr"):  # nothing stored into the failed studies
        assert {str(s.Modality) for s in _series(server, pacs["uids"][name][0])} <= {"CT", "MR"}


def test_failed_studies_are_recorded_with_the_reason(pacs: dict, round_trip: dict) -> None:
    out = round_trip["out"]
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    graded = summary[summary["graded"].astype(str) == "True"]
    assert len(graded) == 1 and graded["side"].iloc[0] == "right"  # the left hip has an implant
    errors = summary[summary["status"] == "error"]
    assert errors["error"].str.contains("no proximal femur").sum() == 2  # abdomen, both sides
    assert errors["error"].str.contains("no axial CT series to screen").sum() == 1  # the MR
    assert errors["error"].str.contains("modality MR, not CT").sum() == 1
    skipped = summary[summary["status"] == "skipped"]
    assert sorted(skipped["reason"]) == [  # after the rerun, our own SEG, SR and capture too
        "localiser / scout (ImageType LOCALIZER)",
        "modality MR, not CT",
        "modality OT, not CT",
        "modality SEG, not CT",
        "modality SR, not CT",
    ]
    assert summary["study"].str.match(r"study-[0-9a-f]{10}$").all()
    assert summary["study"].nunique() == 3
    assert not any(p.name.startswith(".") for p in out.iterdir())  # fetched copies removed


def test_rerun_resumes_and_stores_nothing_twice(server: Orthanc, pacs: dict, round_trip: dict):
    code, stdout, stderr = round_trip["runs"][1]
    assert code == 3
    assert "1 of 2 cases already done: skipped" in stderr
    found = _series(server, pacs["uids"]["hips"][0])
    assert sorted(str(s.Modality) for s in found) == ["CT", "CT", "OT", "SEG", "SR"]
    assert all(int(s.NumberOfSeriesRelatedInstances) == 1 for s in found if s.Modality != "CT")
    stored = json.loads((round_trip["out"] / "batch-index.json").read_text())["stored"]
    assert len(stored) == 1 and list(next(iter(stored.values()))) == [server.dicomweb]


def test_no_credentials_patient_names_or_uids_in_outputs(server, pacs, round_trip) -> None:
    out = round_trip["out"]
    texts = [t for run in round_trip["runs"] for t in run[1:]]
    texts += [
        p.read_text(errors="replace") for p in out.rglob("*") if p.suffix in {".csv", ".json"}
    ]
    everything = "\n".join(texts)
    secrets = [server.password, *PATIENTS.values()]
    secrets += [uid for pair in pacs["uids"].values() for uid in pair]
    for secret in secrets:
        assert secret not in everything


def test_credentials_in_the_url_or_wrong_ones_are_refused(server: Orthanc, tmp_path, monkeypatch):
    monkeypatch.delenv(USER_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with_password = server.dicomweb.replace("http://", f"http://{server.user}:{server.password}@")
    stderr = io.StringIO()
    argv = ["batch", "--from-dicomweb", with_password, "--out", str(tmp_path / "a")]
    with contextlib.redirect_stderr(stderr):
        assert main(argv) == 1
    assert "holds a user name or password" in stderr.getvalue()
    assert server.password not in stderr.getvalue()
    credentials = tmp_path / "pacs.json"
    credentials.write_text(json.dumps({"user": server.user, "password": "wrong"}))
    credentials.chmod(0o600)
    stderr = io.StringIO()
    argv = ["batch", "--from-dicomweb", server.dicomweb, "--out", str(tmp_path / "b")]
    with contextlib.redirect_stderr(stderr):
        assert main([*argv, "--dicomweb-credentials", str(credentials)]) == 1
    assert "refused access (HTTP 401)" in stderr.getvalue()
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_credentials_file_forms_and_env(tmp_path: Path, monkeypatch) -> None:
    from femurscreen.dicom.web import check_url, read_credentials
    from femurscreen.errors import InputError

    monkeypatch.delenv(USER_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    assert read_credentials() is None  # an open server: no authentication
    line = tmp_path / "line"
    line.write_text("reader:s3cr:et\n")  # the password may hold a colon
    assert read_credentials(line) == ("reader", "s3cr:et")
    empty = tmp_path / "empty"
    empty.write_text('{"password": "only-this"}')
    with pytest.raises(InputError, match="holds no user name") as refused:
        read_credentials(empty)
    assert "only-this" not in str(refused.value)  # a secret is never echoed
    monkeypatch.setenv(USER_ENV, "reader")
    with pytest.raises(InputError, match=f"{PASSWORD_ENV} is not set"):
        read_credentials()
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    assert read_credentials() == ("reader", "pw")
    assert check_url("https://pacs.example.org/dicom-web/") == "https://pacs.example.org/dicom-web"
    with pytest.raises(InputError, match="not an http"):
        check_url("pacs.example.org/dicom-web")


def test_local_dicom_tree_to_dicomweb(
    server: Orthanc, round_trip, real_ct_path, tmp_path, monkeypatch
):
    """A local DICOM export screened and its results stored into the PACS (runs after the
    round trip: that one pulls every study on the server)."""
    study = generate_uid()
    series = write_ct_series(
        read_ct(real_ct_path), tmp_path / "export" / "ct", SeriesOptions(study_instance_uid=study)
    )
    monkeypatch.setenv(USER_ENV, server.user)
    monkeypatch.setenv(PASSWORD_ENV, server.password)
    out = tmp_path / "out"
    argv = ["batch", str(tmp_path / "export"), "--to-dicomweb", server.dicomweb, "--out", str(out)]
    assert main([*argv, "--engine", "classical"]) == 0
    found = sorted(str(s.Modality) for s in _series(server, study))
    assert found == ["OT", "SEG", "SR"], found  # the results; the CT itself was never sent
    assert len(series) == read_ct(real_ct_path).GetSize()[2]
