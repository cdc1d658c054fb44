"""Start-up: the classical path does not import torch (about 4 s of a screen's start-up), and
the package has one version."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import femurscreen

# what `femurscreen screen --engine classical` imports and loads before its first voxel
CLASSICAL_PATH = """
import json, sys
from femurscreen.classifier import default_model_dir, load_model
from femurscreen.features import write_features_csv
from femurscreen.io.ctio import read_ct
from femurscreen.segmentation import get_engine, segment
import femurscreen.screening
model = load_model(default_model_dir())
engine = get_engine("classical")
print(json.dumps({"torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch"),
                  "features": len(model.features)}))
"""


def test_classical_screen_path_never_imports_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CLASSICAL_PATH], capture_output=True, text=True, check=True
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["features"] > 0  # the shipped model really was loaded and verified
    assert seen["torch"] == [], f"torch imported on the classical path: {seen['torch'][:5]}"


def test_the_package_has_one_version() -> None:
    assert femurscreen.__version__ == importlib.metadata.version("femurscreen")


def test_shared_engine_option_names_the_pipelines_engines() -> None:
    from femurscreen.cli._options import ENGINE_CHOICES
    from femurscreen.segmentation.pipeline import ENGINES

    assert ("default", *ENGINES) == ENGINE_CHOICES
