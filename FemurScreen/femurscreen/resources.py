"""Where the files shipped with the module live (models, radiomics parameter files).

They sit in the Slicer module's ``Resources/`` folder, beside the ``femurscreen`` package, so
that the Slicer extension and the pip-installed core (an editable install from the repository)
share one copy. ``FEMURSCREEN_RESOURCES`` points elsewhere, e.g. for a packaged deployment.
"""

from __future__ import annotations

import os
from pathlib import Path

from femurscreen.errors import FemurScreenError


def resource_dir() -> Path:
    """The folder that holds ``Models/``, ``Radiomics/`` and ``SampleData/``."""
    override = os.environ.get("FEMURSCREEN_RESOURCES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1] / "Resources"


def resource_path(*parts: str) -> Path:
    """Path of a shipped file; a clear error if the installation lacks it."""
    path = resource_dir().joinpath(*parts)
    if not path.exists():
        raise FemurScreenError(
            f"shipped resource {'/'.join(parts)} is missing",
            "reinstall FemurScreen from its repository (pip install -e .) or set "
            "FEMURSCREEN_RESOURCES to the folder that holds Models/ and Radiomics/",
            path=path,
        )
    return path
