"""A real Orthanc PACS on localhost for the tests (Debian's ``orthanc`` + DICOMweb plugin).

Each server gets its own folder (configuration, database, log), a free HTTP port, no DICOM
port, no remote access and HTTP authentication with a test user, so the credential path of the
DICOMweb client is exercised. ``make system-deps`` installs Orthanc on a fresh machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

ORTHANC_NAMES = ("Orthanc", "/usr/sbin/Orthanc")
DICOMWEB_PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)
INSTALL_HINT = "run 'make system-deps' (apt-get install orthanc orthanc-dicomweb)"


@dataclass(frozen=True)
class Orthanc:
    """A running server: its REST root, its DICOMweb root and the test user's credentials."""

    url: str
    dicomweb: str
    user: str
    password: str
    log: Path

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    def get(self, path: str) -> object:
        """A GET on the REST API (e.g. ``/studies``), parsed from JSON."""
        response = requests.get(self.url + path, auth=self.auth, timeout=30)
        response.raise_for_status()
        return response.json()


def find_orthanc() -> tuple[str, str]:
    """The Orthanc binary and its DICOMweb plugin; a RuntimeError saying how to install them."""
    binary = next((b for b in (shutil.which(n) for n in ORTHANC_NAMES) if b), None)
    plugin = next((p for p in DICOMWEB_PLUGINS if Path(p).exists()), None)
    if binary is None or plugin is None:
        missing = "the Orthanc binary" if binary is None else "Orthanc's DICOMweb plugin"
        raise RuntimeError(f"{missing} is not installed: {INSTALL_HINT}")
    return binary, plugin


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def orthanc_server(folder: Path, timeout_s: float = 30.0) -> Iterator[Orthanc]:
    """Start Orthanc with its files in ``folder``; stop it (and wait) on exit."""
    binary, plugin = find_orthanc()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    user, password = "femurscreen-test", os.urandom(9).hex()
    config = {
        "Name": "FemurScreenTest",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": port,
        "HttpServerEnabled": True,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {user: password},
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"},
        "HttpThreadsCount": 4,
        "StableAge": 1,
        "SaveJobs": False,
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=1))
    log_path = folder / "orthanc.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=folder
        )
        try:
            _wait_until_up(process, url, (user, password), log_path, timeout_s)
            yield Orthanc(url, f"{url}/dicom-web", user, password, log_path)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(
    process: subprocess.Popen, url: str, auth: tuple[str, str], log: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited ({process.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/system", auth=auth, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"Orthanc did not answer within {timeout_s} s: {log.read_text()[-2000:]}")
