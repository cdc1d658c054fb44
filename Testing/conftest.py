"""Shared test set-up: real sample files from the repository, isolated caches, no display."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "FemurScreen" / "Resources" / "SampleData"

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Feature caches of the tests never touch the user's home folder."""
    os.environ["FEMURSCREEN_CACHE"] = str(tmp_path_factory.mktemp("femurscreen-cache"))


@pytest.fixture(scope="session")
def real_ct_path() -> Path:
    """The real abdominal-pelvic CT shipped as sample data (TotalSegmentator, Apache-2.0)."""
    return SAMPLE_DATA / "totalseg_example_ct.nii.gz"


@pytest.fixture(scope="session")
def real_dicom_dir() -> Path:
    """A real upper-abdomen CT DICOM series without femurs (TotalSegmentator, Apache-2.0)."""
    return SAMPLE_DATA / "totalseg_example_ct_dicom"
