"""Shared test set-up: real sample files from the repository, isolated caches, no display."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import SimpleITK as sitk
    from femurscreen.segmentation.pipeline import SegmentationResult

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


@pytest.fixture(scope="session")
def real_ct(real_ct_path: Path) -> sitk.Image:
    """The real CT, read once per session with the package's reader. Treat it as read-only."""
    from femurscreen.io.ctio import read_ct

    return read_ct(real_ct_path)


@pytest.fixture(scope="session")
def real_ct_classical_shared(real_ct_path: Path) -> SegmentationResult:
    """The classical segmentation of the real CT, once per session, shared: never modify it
    (for session- or module-scoped fixtures; a test takes ``real_ct_classical``)."""
    # reads the CT itself, not via ``real_ct``: a test module that overrides ``real_ct`` with a
    # narrower scope must not make this session fixture a scope mismatch
    from femurscreen.io.ctio import read_ct
    from femurscreen.segmentation import segment

    return segment(read_ct(real_ct_path), engine="classical")


@pytest.fixture
def real_ct_classical(real_ct_classical_shared: SegmentationResult) -> SegmentationResult:
    """The classical engine's segmentation of the real CT, computed once per session (it is
    the slowest step several test files need); each test gets its own deep copy, so a test that
    edits flags or labels never changes what the next one sees."""
    return copy.deepcopy(real_ct_classical_shared)


@pytest.fixture(scope="module")
def core():
    """Slicer's real application logic with the module logics registered (slicer-core), once
    per test module; the Slicer-side test files skip themselves when slicer-core is absent."""
    from slicer_harness import start_slicer_core

    return start_slicer_core()


@pytest.fixture
def scene(core):
    """A fresh MRML scene for one test."""
    yield core.activate().scene
    core.close()
