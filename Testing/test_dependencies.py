"""The module's dependency check and install route (FemurScreenLib.dependencies).

Runs under the project's Python 3.11 environment and under the Python 3.12 environment that
``scripts/install_like_slicer.py`` builds the way Slicer 5.10 ends up (packaging 25.0, the
module's own installer): there the installed-route test checks the real result.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "FemurScreen"
sys.path.insert(0, str(MODULE_DIR))

from FemurScreenLib import dependencies  # noqa: E402

# Top-level import of each distribution the module may install.
IMPORT_NAME = {
    "scikit-learn": "sklearn",
    "skops": "skops",
    "pandas": "pandas",
    "matplotlib": "matplotlib",
    "PyWavelets": "pywt",
    "pykwalify": "pykwalify",
    "six": "six",
    "pyradiomics-bhklab": "radiomics",
    "safetensors": "safetensors",
    "torch": "torch",
    "highdicom": "highdicom",
    "pydicom": "pydicom",
    "PyMaxflow": "maxflow",
}


def _names(requirements) -> set[str]:
    return {r.name for r in requirements}


def _fake_distribution(site: Path, name: str, version: str) -> None:
    """A real ``*.dist-info`` folder, read by the real importlib.metadata."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )


# ---------------------------------------------------------------- versions and pre-releases


@pytest.mark.parametrize(
    ("version", "spec", "expected"),
    [
        ("3.0.1a1", ">=3.0", True),  # the Radiomics extension's pyradiomics
        ("3.0.1a1", ">=3.0.1a1", True),
        ("3.1.0rc2", ">=3.0.1a1", True),
        ("3.1.0+2.g146e3bd", ">=3.0.1a1", True),  # a git build: local tag ignored
        ("3.0.1a1", ">=3.1.4", False),
        ("3.0", ">=3.0.1a1", False),
        ("2.13.0+cpu", ">=2.1", True),
        ("2.0.1", ">=2.1", False),
    ],
)
def test_satisfies_accepts_pre_releases_that_meet_the_spec(version, spec, expected):
    assert dependencies.satisfies(version, spec) is expected


def test_satisfies_does_not_depend_on_packagings_pre_release_default():
    """packaging 25 (Slicer 5.10) says 3.0.1a1 is not in '>=3.0' unless asked; we ask."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    plain = Version("3.0.1a1") in SpecifierSet(">=3.0")  # False on packaging 25, True on 26
    assert dependencies.satisfies("3.0.1a1", ">=3.0"), f"packaging plain answer: {plain}"


def test_an_accepted_alternative_distribution_counts_as_installed(tmp_path, monkeypatch):
    """The Radiomics extension's ``pyradiomics 3.0.1a1`` stands in for pyradiomics-bhklab."""
    requirement = dependencies.Requirement(
        "femurscreen-test-primary",
        ">=3.1.4",
        "test",
        alternatives=(("femurscreen-test-extension", ">=3.0.1a1"),),
    )
    _fake_distribution(tmp_path / "old", "femurscreen-test-extension", "2.2.0")
    monkeypatch.syspath_prepend(str(tmp_path / "old"))
    (gap,) = dependencies.missing([requirement])
    assert gap.installed == "femurscreen-test-extension 2.2.0"  # too old: still missing

    monkeypatch.syspath_prepend(str(tmp_path / "new"))
    _fake_distribution(tmp_path / "new", "femurscreen-test-extension", "3.0.1a1")
    assert dependencies.missing([requirement]) == []
    assert dependencies.installed_for(requirement) == ("femurscreen-test-extension 3.0.1a1", True)


def test_the_radiomics_requirement_is_bhklab_and_accepts_the_extensions_pyradiomics():
    (radiomics,) = [r for r in dependencies.REQUIREMENTS if r.route == "radiomics"]
    assert radiomics.name == "pyradiomics-bhklab"
    assert dependencies.satisfies(dependencies.RADIOMICS_VERSION, radiomics.specifier)
    (alt_name, alt_spec), *_ = radiomics.alternatives
    assert alt_name == "pyradiomics"
    assert dependencies.satisfies("3.0.1a1", alt_spec)
    assert dependencies.satisfies("3.0.1", alt_spec)


# ---------------------------------------------------------------- stages


def test_stage_split():
    segment_classical = dependencies.requirements_for("classical", stage="segment")
    segment_vbnet = dependencies.requirements_for("vbnet", stage="segment")
    grade = dependencies.requirements_for("classical", stage="grade")
    assert _names(segment_classical) == {"PyMaxflow"}  # the min-cut at the hip joint
    assert {str(r) for r in segment_classical} == {"PyMaxflow>=1.3"}
    assert _names(segment_vbnet) == {"torch", "safetensors"}
    assert {"pyradiomics-bhklab", "scikit-learn", "skops", "pandas"} <= _names(grade)
    assert not {"torch", "safetensors"} & _names(grade)
    assert dependencies.requirements_for("vbnet", stage="grade") == grade
    # the DICOM export: highdicom and the pydicom 3 it needs (Slicer 5.10 ships 2.4.4)
    export = dependencies.requirements_for("classical", stage="export")
    assert _names(export) == {"highdicom", "pydicom"}
    assert {str(r) for r in export} == {"highdicom>=0.28", "pydicom>=3.0.1"}
    assert not dependencies.satisfies(
        "2.4.4", next(r for r in export if r.name == "pydicom").specifier
    )
    assert not _names(export) & (_names(grade) | _names(segment_vbnet) | _names(segment_classical))
    assert _names(dependencies.requirements_for("vbnet")) == (
        _names(segment_vbnet) | _names(grade) | _names(export)
    )
    assert _names(dependencies.requirements_for("classical")) == (
        _names(segment_classical) | _names(grade) | _names(export)
    )
    # an engine this module does not know gets everything, so nothing is missed
    assert _names(dependencies.requirements_for("future-engine")) == _names(
        dependencies.REQUIREMENTS
    )
    with pytest.raises(ValueError, match="unknown stage"):
        dependencies.requirements_for("classical", stage="segmentation")


def test_every_requirement_knows_its_import():
    assert set(IMPORT_NAME) == _names(dependencies.REQUIREMENTS)


BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: classical segmentation must not need it")
sys.meta_path.insert(0, Block())
from femurscreen.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_classical_segmentation_runs_without_any_module_installed_package(tmp_path, real_ct_path):
    """``femurscreen segment --engine classical`` on the real CT with every package the module
    installs made unimportable: what the "segment" stage says it needs is all it needs."""
    needs = _names(dependencies.requirements_for("classical", stage="segment"))
    blocked = sorted(IMPORT_NAME[n] for n in _names(dependencies.REQUIREMENTS) - needs)
    out = tmp_path / "mask.nii.gz"
    cmd = [sys.executable, "-c", BLOCKER, ",".join(blocked), "segment", str(real_ct_path)]
    cmd += ["--out", str(out), "--engine", "classical"]
    env = {**os.environ, "PYTHONPATH": str(MODULE_DIR)}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file() and out.stat().st_size > 1000


# ---------------------------------------------------------------- install route


def test_install_route_arguments(monkeypatch):
    """One pip call for the plain packages, then pyradiomics-bhklab with --no-deps, every
    call constrained to the installed numpy/SimpleITK/scipy; the folder route is offline."""
    monkeypatch.delenv(dependencies.WHEELS_ENV, raising=False)
    calls: list[tuple[list[str], str]] = []

    def record(args):
        args = list(args)
        constraint = args[args.index("-c") + 1] if "-c" in args else ""
        text = Path(constraint).read_text(encoding="utf-8") if constraint else ""
        calls.append((args, text))

    wanted = dependencies.requirements_for("classical", stage="grade")
    needed = [dependencies.Missing(r, None) for r in wanted]
    with contextlib.suppress(dependencies.InstallError):  # "still missing" where absent
        dependencies.install(needed, confirm=lambda q, d: True, pip_install=record)
    (plain, plain_pins), (radiomics, radiomics_pins) = calls
    assert "pyradiomics-bhklab>=3.1.4" not in plain and "scikit-learn>=1.4" in plain
    assert radiomics[-2:] == ["--no-deps", "pyradiomics-bhklab==3.1.4"]
    assert "--no-build-isolation" not in radiomics
    numpy_pin = f"numpy=={dependencies.installed_version('numpy')}"
    assert numpy_pin in plain_pins.split() and numpy_pin in radiomics_pins.split()

    calls.clear()
    with contextlib.suppress(dependencies.InstallError):
        dependencies.install(needed, confirm=lambda q, d: True, pip_install=record, wheel_dir="W")
    assert len(calls) == 2
    assert all(args[:3] == ["--no-index", "--find-links", "W"] for args, _ in calls)


def test_a_failed_radiomics_build_says_what_to_do(monkeypatch):
    monkeypatch.delenv(dependencies.WHEELS_ENV, raising=False)

    def fail(args):
        if any("pyradiomics" in a for a in args):
            raise subprocess.CalledProcessError(1, "pip")

    (radiomics,) = [r for r in dependencies.REQUIREMENTS if r.route == "radiomics"]
    with pytest.raises(dependencies.InstallError) as info:
        dependencies.install(
            [dependencies.Missing(radiomics, None)], confirm=lambda q, d: True, pip_install=fail
        )
    message = str(info.value)
    assert "C compiler" in message and "Radiomics" in message and dependencies.WHEELS_ENV in message


def _wheel(folder: Path, name: str, version: str, requires: list[str], module: str) -> None:
    """A minimal valid wheel (PEP 427) so that real pip installs it from a local folder."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record
    with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)


@pytest.mark.slow
def test_wheel_folder_route_with_real_pip_never_replaces_slicers_numpy(tmp_path):
    """A fresh environment with a stand-in 'Slicer numpy' 1.0; the module installs from a
    FEMURSCREEN_WHEELS folder with real pip: the plain packages install, a package that would
    need another numpy is refused (pip error, InstallError) and numpy stays 1.0."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "numpy", "1.0", [], "numpy")  # what "Slicer" ships here
    _wheel(wheels, "numpy", "2.0", [], "numpy")  # a newer one pip could be tempted by
    _wheel(wheels, "femurscreen-test-plain", "1.5", ["numpy>=1.0"], "fs_plain")
    _wheel(wheels, "femurscreen-test-greedy", "1.0", ["numpy>=2.0"], "fs_greedy")
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / ("Scripts" if os.name == "nt" else "bin") / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels)]
    subprocess.run([*pip, "numpy==1.0"], check=True, timeout=300)
    script = textwrap.dedent(
        """
        import json, sys
        sys.path.insert(0, sys.argv[1])
        from FemurScreenLib import dependencies as d
        d.PROVIDED_BY_SLICER = ("numpy",)
        out = {}
        for name in ("femurscreen-test-plain", "femurscreen-test-greedy"):
            need = d.missing([d.Requirement(name, ">=1.0", "test")])
            try:
                d.install(need, confirm=lambda q, t: True, wheel_dir=sys.argv[2])
                out[name] = "installed"
            except d.InstallError as exc:
                out[name] = "refused: " + str(exc)[:200]
        out["numpy"] = d.installed_version("numpy")
        print(json.dumps(out))
        """
    )
    result = subprocess.run(
        [str(python), "-c", script, str(MODULE_DIR), str(wheels)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["femurscreen-test-plain"] == "installed"
    assert out["femurscreen-test-greedy"].startswith("refused")
    assert out["numpy"] == "1.0"


# ---------------------------------------------------------------- the environment CI built

BASELINE = Path(sys.prefix) / "femurscreen-slicer-baseline.json"


@pytest.mark.skipif(
    not BASELINE.is_file(),
    reason="not an environment built by scripts/install_like_slicer.py (CI's Python 3.12 one)",
)
def test_the_module_installed_a_working_radiomics_and_left_slicers_packages_alone():
    """In the environment the module's installer built (as inside Slicer): nothing the
    classical engine needs is missing, radiomics is bhklab 3.1.4 with its C extensions, and
    numpy/SimpleITK/scipy are the versions 'Slicer' had before the module installed."""
    baseline = json.loads(BASELINE.read_text(encoding="utf-8"))
    assert dependencies.missing(dependencies.requirements_for("classical")) == []
    assert dependencies.installed_version("pyradiomics-bhklab") == dependencies.RADIOMICS_VERSION
    from radiomics import _cmatrices, _cshape  # compiled by the sdist build

    assert _cmatrices.__file__ and _cshape.__file__
    for name in dependencies.PROVIDED_BY_SLICER:
        assert dependencies.installed_version(name) == baseline[name], name
