"""Build a Python environment the way FemurScreen ends up installed inside 3D Slicer.

CI uses it to run the Slicer-side tests on Slicer's own Python (3.12 for Slicer 5.10+):

1. a fresh virtual environment with only what Slicer itself ships and the test needs: numpy,
   SimpleITK, scipy, packaging (pinned to Slicer 5.10's 25.0, whose pre-release handling the
   module must cope with), pydicom 2.4.4 and pillow 11.2.1 (Slicer 5.10's; highdicom for the
   DICOM export needs pydicom 3, which the module's installer then upgrades to), slicer-core
   (Slicer's MRML classes from PyPI) and pytest;
2. the module folder on the path by a ``.pth`` file, as Slicer's "additional module paths"
   setting does (FemurScreen is not pip-installed inside Slicer);
3. everything else installed by the module's own code, ``FemurScreenLib.dependencies``, with
   the confirmation answered yes: the same routes, order and pip arguments as the Segment
   button's first run.

    python3.12 scripts/install_like_slicer.py VENV [--engine classical] [--stage all]

Runs with the standard library only; prints the seconds each step took. The ``vbnet`` engine
also installs torch, from PyTorch's CPU index (PyPI's Linux torch is the CUDA build): that
needs that index to be reachable, which it is not from this project's CI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "FemurScreen"

# What Slicer's own Python brings (numpy, SimpleITK, scipy, packaging; pydicom and pillow as
# Slicer 5.10's SuperBuild pins them, so the export stage upgrades pydicom as it does inside
# Slicer) plus the test tools.
SLICER_SHIPS = (
    "numpy",
    "SimpleITK",
    "scipy",
    "packaging==25.0",
    "pydicom==2.4.4",
    "pillow==11.2.1",
)
TEST_TOOLS = ("slicer-core>=5.10", "pytest>=8")

BASELINE_CODE = """
import json
from FemurScreenLib import dependencies as d
print(json.dumps({name: d.installed_version(name) for name in d.PROVIDED_BY_SLICER}))
"""

INSTALL_WITH_MODULE_CODE = """
import sys, time
from FemurScreenLib import dependencies
engine, stage = sys.argv[1], sys.argv[2]
needed = dependencies.missing(dependencies.requirements_for(engine, stage=stage))
print("module installs:", ", ".join(str(m.requirement) for m in needed) or "nothing", flush=True)
t0 = time.perf_counter()
dependencies.install(needed, confirm=lambda question, details: True, log_message=print)
left = dependencies.missing(dependencies.requirements_for(engine, stage=stage))
assert not left, left
print(f"module install: {time.perf_counter() - t0:.1f} s", flush=True)
"""


def python_in(env_dir: Path) -> Path:
    """The interpreter of a virtual environment (POSIX or Windows layout)."""
    scripts = env_dir / ("Scripts" if os.name == "nt" else "bin")
    return scripts / ("python.exe" if os.name == "nt" else "python")


def site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def step(label: str, argv: list[str]) -> float:
    """Run one command, fail loudly, return its seconds."""
    shown = argv[: argv.index("-c") + 1] + ["..."] if "-c" in argv else argv
    print(f"[install_like_slicer] {label}: {' '.join(shown)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True)
    seconds = time.perf_counter() - t0
    print(f"[install_like_slicer] {label}: {seconds:.1f} s", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path, help="folder of the environment to create")
    parser.add_argument("--engine", default="classical", help="segmentation engine to provide")
    parser.add_argument("--stage", default="all", choices=("segment", "grade", "export", "all"))
    args = parser.parse_args(argv)

    if args.venv.exists() and not (args.venv / "pyvenv.cfg").is_file():
        parser.error(f"{args.venv} exists and is not a virtual environment: choose another folder")
    t0 = time.perf_counter()
    print(f"[install_like_slicer] Python {sys.version.split()[0]} -> {args.venv}", flush=True)
    venv.EnvBuilder(clear=True, with_pip=True).create(args.venv)
    python = python_in(args.venv)
    pip = [str(python), "-m", "pip", "install", "-q"]
    step("upgrade pip", [*pip, "--upgrade", "pip"])
    step("what Slicer ships", [*pip, *SLICER_SHIPS, *TEST_TOOLS])
    (site_packages(python) / "femurscreen-module-path.pth").write_text(
        f"{MODULE_DIR}\n", encoding="utf-8"
    )
    # What "Slicer" has before the module installs anything: Testing/test_dependencies.py
    # checks that the module's installer left these versions alone.
    baseline = subprocess.run(
        [str(python), "-c", BASELINE_CODE], check=True, capture_output=True, text=True
    ).stdout
    (args.venv / "femurscreen-slicer-baseline.json").write_text(baseline, encoding="utf-8")
    step(
        "the module's own installer",
        [str(python), "-c", INSTALL_WITH_MODULE_CODE, args.engine, args.stage],
    )
    print(f"[install_like_slicer] total {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
