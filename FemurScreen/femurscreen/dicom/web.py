"""DICOMweb in and out for the batch: find CT series on a PACS (QIDO), fetch them (WADO), store
the SEG, SR and report capture back into the same study (STOW). Built on dicomweb-client.

Credentials never travel on the command line or into logs: they come from the environment
(``FEMURSCREEN_DICOMWEB_USER`` / ``FEMURSCREEN_DICOMWEB_PASSWORD``) or a file
(``--dicomweb-credentials FILE``: a JSON object ``{"user": ..., "password": ...}`` or one line
``user:password``), and a URL with ``user:password@`` in it is refused. The same credentials
are used for the server read from and the one written to. Patient names and UIDs are not
logged; studies are named by a hash (:func:`femurscreen.batch.study_label`) unless
``include_identifiers``.

Series are chosen from the series' metadata by the same rules as a local tree
(:mod:`femurscreen.dicom.tree`), so no pixel data is fetched for scouts or reformats. Instances
are fetched in the transfer syntax they were stored in (``transfer-syntax=*``): a PACS that
cannot transcode, e.g. JPEG 2000, would otherwise refuse them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from femurscreen.dicom.tree import Series, series_from_datasets
from femurscreen.errors import InputError

log = logging.getLogger(__name__)

USER_ENV = "FEMURSCREEN_DICOMWEB_USER"
PASSWORD_ENV = "FEMURSCREEN_DICOMWEB_PASSWORD"
PAGE = 100  # studies per QIDO request
CREDENTIALS_HELP = (
    f"set {USER_ENV} and {PASSWORD_ENV}, or pass --dicomweb-credentials FILE "
    '(JSON {"user": ..., "password": ...} or one line user:password)'
)


@dataclass(frozen=True)
class RemoteSeries:
    """A series to screen on a DICOMweb server (UIDs stay in memory, never in a log)."""

    study_uid: str
    series_uid: str
    instances: int
    key: str  # the input key (batch-index.json): server, UIDs and instance count, hashed
    series: Series


@dataclass(frozen=True)
class StudyPlan:
    """What a server's study holds: the series to screen and those left out, with why."""

    study_uid: str
    chosen: list[RemoteSeries]
    skipped: list[Series]
    error: str = ""  # the study could not even be listed


def check_url(url: str) -> str:
    """``url`` without a trailing slash; refuses credentials in it and non-HTTP schemes."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise InputError(
            "the DICOMweb URL holds a user name or password (user:password@host); it would show "
            "in the process list and in shell history",
            f"remove it from the URL and {CREDENTIALS_HELP}",
        )
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(
            f"{url!r} is not an http(s) DICOMweb URL",
            "pass the server's DICOMweb root, e.g. https://pacs.example.org/dicom-web",
        )
    return urlunsplit(parts._replace(path=parts.path.rstrip("/"))).rstrip("/")


def read_credentials(file: str | Path | None = None) -> tuple[str, str] | None:
    """User and password from ``file`` or the environment; None when neither gives them."""
    if file is not None:
        path = Path(file).expanduser()
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InputError(
                f"cannot be read ({exc.strerror or exc})", CREDENTIALS_HELP, path
            ) from None
        if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s: others can read this credentials file (chmod 600 it)", path)
        user, password = _parse_credentials(text)
        if not user:
            raise InputError("holds no user name and password", CREDENTIALS_HELP, path)
        return user, password
    user, password = os.environ.get(USER_ENV, ""), os.environ.get(PASSWORD_ENV, "")
    if bool(user) != bool(password):
        missing = PASSWORD_ENV if user else USER_ENV
        raise InputError(f"{missing} is not set (the other one is)", CREDENTIALS_HELP)
    return (user, password) if user else None


def _parse_credentials(text: str) -> tuple[str, str]:
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return "", ""  # never echo the content: it is a secret
        if not isinstance(data, dict):
            return "", ""
        user = str(data.get("user") or data.get("username") or "")
        return user, str(data.get("password") or "")
    user, _, password = text.splitlines()[0].partition(":")
    return user.strip(), password.strip()


class DicomWeb:
    """One DICOMweb server (QIDO-RS, WADO-RS, STOW-RS under one root URL)."""

    def __init__(self, url: str, credentials: tuple[str, str] | None = None) -> None:
        import requests
        from dicomweb_client import DICOMwebClient

        self.url = check_url(url)
        session = requests.Session()
        if credentials is not None:
            session.auth = requests.auth.HTTPBasicAuth(*credentials)
        self.client = DICOMwebClient(self.url, session=session, timeout=(10, 300))

    @property
    def label(self) -> str:
        """The server as logs and batch-index.json may name it (no credentials, no query)."""
        return self.url

    def _call(self, what: str, function, *args, **kwargs):
        """Run a dicomweb-client call; network and HTTP errors become InputErrors that say
        which server and what to do (never the credentials)."""
        import requests

        try:
            return function(*args, **kwargs)
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            if code in (401, 403):
                raise InputError(
                    f"the DICOMweb server {self.label} refused access (HTTP {code}) while "
                    f"trying to {what}",
                    f"check the user name and password: {CREDENTIALS_HELP}",
                ) from None
            raise InputError(
                f"the DICOMweb server {self.label} answered HTTP {code} while trying to {what}",
                "check the server's log; the other studies go on",
            ) from None
        except requests.RequestException as exc:
            raise InputError(
                f"cannot reach the DICOMweb server {self.label} to {what} ({type(exc).__name__})",
                "check the URL and that the server is running and reachable from here",
            ) from None

    # QIDO ---------------------------------------------------------------------------------

    def study_uids(self) -> list[str]:
        """Every study on the server (paged QIDO search), in the server's order."""
        uids: list[str] = []
        offset = 0
        while True:
            page = self._call(
                "list its studies",
                self.client.search_for_studies,
                fields=["StudyInstanceUID"],
                limit=PAGE,
                offset=offset,
            )
            uids += [_value(item, "0020000D") for item in page]
            if len(page) < PAGE:
                break
            offset += len(page)
        return [u for u in dict.fromkeys(uids) if u]

    def plan_study(self, study_uid: str) -> StudyPlan:
        """The study's series judged like a local tree (metadata only, no pixel data)."""

        try:
            listing = self._call("list a study's series", self.client.search_for_series, study_uid)
        except InputError as exc:
            return StudyPlan(study_uid, [], [], exc.message)
        chosen, skipped = [], []
        for item in listing:
            series_uid = _value(item, "0020000E")
            modality = _value(item, "00080060").upper()
            count = int(_value(item, "00201209") or 0)
            if modality and modality != "CT":  # no need to fetch the metadata of an MR
                found = series_from_datasets([_dataset(item)])
                for series in found:
                    series.slices = count
                skipped += found
                continue
            try:
                metadata = self._call(
                    "read a series' metadata",
                    self.client.retrieve_series_metadata,
                    study_uid,
                    series_uid,
                )
            except InputError as exc:
                return StudyPlan(study_uid, [], skipped, exc.message)
            datasets = [_dataset(m) for m in metadata]
            for series in series_from_datasets(datasets):
                if not series.chosen:
                    skipped.append(series)
                    continue
                key = remote_key(self.label, study_uid, series.series_uid, len(datasets))
                chosen.append(
                    RemoteSeries(study_uid, series.series_uid, len(datasets), key, series)
                )
        return StudyPlan(study_uid, chosen, skipped)

    # WADO / STOW ----------------------------------------------------------------------------

    def retrieve(self, series: RemoteSeries, folder: Path) -> int:
        """Fetch the series into ``folder`` (one file per instance, stored as sent)."""
        datasets = self._call(
            "fetch a series",
            self.client.retrieve_series,
            series.study_uid,
            series.series_uid,
            media_types=(("application/dicom", "*"),),
        )
        folder.mkdir(parents=True, exist_ok=True)
        for number, dataset in enumerate(datasets):
            dataset.save_as(folder / f"{number:06d}.dcm", enforce_file_format=True)
        return len(datasets)

    def store(self, files: Iterable[Path]) -> int:
        """STOW the files; an InputError when the server refuses any of them."""
        import pydicom

        datasets = [pydicom.dcmread(p) for p in sorted(files)]
        if not datasets:
            return 0
        response = self._call("store results", self.client.store_instances, datasets)
        failed = list(getattr(response, "FailedSOPSequence", []) or [])
        if failed:
            reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
            raise InputError(
                f"the DICOMweb server {self.label} refused {len(failed)} of {len(datasets)} "
                f"result instances (failure reason {', '.join(reasons)})",
                "check the server's log",
            )
        return len(datasets)


def _dataset(item: dict):
    """A header from DICOM JSON; bulk data (pixels, private blobs) is left out, not fetched."""
    import pydicom

    return pydicom.Dataset.from_json(item, bulk_data_uri_handler=lambda *_: b"")


def remote_key(server: str, study_uid: str, series_uid: str, instances: int) -> str:
    text = f"dicomweb\0{server}\0{study_uid}\0{series_uid}\0{instances}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _value(item: dict, tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):  # a person name
        value = value.get("Alphabetic", "")
    return str(value)


__all__ = [
    "PASSWORD_ENV",
    "USER_ENV",
    "DicomWeb",
    "RemoteSeries",
    "StudyPlan",
    "check_url",
    "read_credentials",
    "remote_key",
]
