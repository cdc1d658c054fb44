"""Python packages the module needs inside Slicer: check cheaply, install on first use.

Checking reads package metadata (``importlib.metadata``) and never imports a package: importing
torch or scikit-learn takes seconds, and a package imported before an upgrade stays the old
version until Slicer restarts. Installing asks first, listing packages and versions; the
question is asked through a callback that the widget supplies, so this module has no Qt.

Three packages need care (see Resources/DEPENDENCIES.md):

- SimpleITK and numpy come with Slicer and are never replaced (Slicer's SimpleITK carries
  Slicer's own image IO);
- PyTorch is installed by the PyTorch extension (``PyTorchUtils``) when it is present, which
  picks the CUDA build matching the driver; otherwise the CPU build from PyTorch's index;
- pyradiomics has no wheels for Python 3.12 (Slicer >= 5.10). In order of preference: the
  Radiomics extension (SlicerRadiomics) brings a compiled copy; a folder of wheels built
  beforehand for this platform (``FEMURSCREEN_WHEELS``); or a build from the source
  distribution, which needs a C compiler.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYRADIOMICS_VERSION = "3.0.1"
WHEELS_ENV = "FEMURSCREEN_WHEELS"  # folder of pre-built wheels for offline installation


@dataclass(frozen=True)
class Requirement:
    """One distribution the module needs, and how it gets installed."""

    name: str  # distribution name as pip knows it
    specifier: str  # PEP 440 specifier, e.g. ">=1.4"
    purpose: str  # shown to the user
    route: str = "pip"  # "pip", "torch" or "radiomics"

    def __str__(self) -> str:
        return f"{self.name}{self.specifier}"


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("scikit-learn", ">=1.4", "bone-status classifier"),
    Requirement("skops", ">=0.10", "safe loading of the classifier (no pickle)"),
    Requirement("pandas", ">=2.1", "feature tables"),
    Requirement("safetensors", ">=0.4", "segmentation network weights"),
    Requirement("matplotlib", ">=3.8", "pictures in the HTML report"),
    Requirement("PyWavelets", ">=1.1", "pyradiomics dependency"),
    Requirement("pykwalify", ">=1.6", "pyradiomics dependency"),
    Requirement("six", ">=1.10", "pyradiomics dependency"),
    Requirement("pyradiomics", ">=3.0", "radiomics features", route="radiomics"),
    Requirement("torch", ">=2.1", "VB-Net segmentation network", route="torch"),
)

# Installed with Slicer; never reinstalled (replacing them would break Slicer).
PROVIDED_BY_SLICER = ("numpy", "SimpleITK", "scipy")


@dataclass(frozen=True)
class Missing:
    """A requirement that is absent or too old."""

    requirement: Requirement
    installed: str | None  # installed version, None when absent

    def describe(self) -> str:
        now = "not installed" if self.installed is None else f"installed {self.installed}"
        return f"{self.requirement} ({now}) - {self.requirement.purpose}"


def installed_version(name: str) -> str | None:
    """The installed version of a distribution, without importing it."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets ``specifier`` (local tags such as ``+cpu`` are ignored)."""
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version
    except ImportError:  # pragma: no cover - Slicer and pip environments ship packaging
        return True
    try:
        return Version(version.split("+")[0]) in SpecifierSet(specifier)
    except Exception:  # an unparsable version string: trust the installation
        return True


def resolve_engine(engine: str) -> str:
    """``default`` -> the core's default engine (light import: numpy, scipy, SimpleITK)."""
    if engine != "default":
        return engine
    try:
        from femurscreen.segmentation.pipeline import DEFAULT_ENGINE
    except ImportError:
        return engine
    return DEFAULT_ENGINE


def requirements_for(engine: str = "default") -> tuple[Requirement, ...]:
    """The requirements for a segmentation engine (the classical engine needs no torch)."""
    if resolve_engine(engine) == "classical":
        return tuple(r for r in REQUIREMENTS if r.route != "torch")
    return REQUIREMENTS


def missing(requirements: Sequence[Requirement] = REQUIREMENTS) -> list[Missing]:
    """The requirements that are absent or too old."""
    importlib.invalidate_caches()
    out = []
    for requirement in requirements:
        version = installed_version(requirement.name)
        if version is None or not satisfies(version, requirement.specifier):
            out.append(Missing(requirement, version))
    return out


def confirmation_text(needed: Sequence[Missing]) -> tuple[str, str]:
    """(question, details) for the confirmation dialog."""
    question = (
        "FemurScreen needs additional Python packages. They will be downloaded and installed "
        "into Slicer's Python; this may take several minutes. Install now?"
    )
    lines = [m.describe() for m in needed]
    if any(m.requirement.route == "radiomics" for m in needed):
        lines += [
            "",
            "pyradiomics: the easiest way is to install the 'Radiomics' extension from the "
            "Extensions Manager and restart Slicer. Otherwise it is built from source here, "
            "which needs a C compiler, or installed from the wheel folder named by "
            f"{WHEELS_ENV}.",
        ]
    if any(m.requirement.route == "torch" for m in needed):
        lines += [
            "",
            "PyTorch: installed through the PyTorch extension when it is present (GPU build "
            "matching your driver), otherwise the CPU build.",
        ]
    return question, "\n".join(lines)


class InstallError(RuntimeError):
    """Installation failed or was declined; ``restart`` says whether Slicer must restart."""

    def __init__(self, message: str, restart: bool = False) -> None:
        super().__init__(message)
        self.restart = restart


def default_pip_install(args: str | list[str]) -> None:
    """``slicer.util.pip_install`` inside Slicer, else ``python -m pip install``."""
    try:
        import slicer

        if hasattr(slicer, "app"):
            slicer.util.pip_install(args)
            return
    except ImportError:
        pass
    argv = args.split() if isinstance(args, str) else list(args)
    subprocess.run([sys.executable, "-m", "pip", "install", *argv], check=True)


def install(
    needed: Sequence[Missing],
    *,
    confirm: Callable[[str, str], bool],
    pip_install: Callable[[str | list[str]], None] = default_pip_install,
    log_message: Callable[[str], None] = log.info,
    wheel_dir: str | Path | None = None,
) -> bool:
    """Ask once, then install every missing requirement; True when a restart is advisable.

    ``confirm(question, details)`` returns True to go ahead. Raises :class:`InstallError`
    when the user declines or an installation fails.
    """
    if not needed:
        return False
    question, details = confirmation_text(needed)
    if not confirm(question, details):
        raise InstallError("installation of the required Python packages was declined")
    wheel_dir = wheel_dir or os.environ.get(WHEELS_ENV) or None
    restart = any(m.installed is not None for m in needed)  # upgraded a loaded version?
    for item in needed:
        requirement = item.requirement
        log_message(f"Installing {requirement} ...")
        try:
            if requirement.route == "torch":
                install_torch(requirement, pip_install, wheel_dir)
            elif requirement.route == "radiomics":
                install_pyradiomics(pip_install, wheel_dir)
            elif wheel_dir:
                pip_install(["--no-index", "--find-links", str(wheel_dir), str(requirement)])
            else:
                pip_install([str(requirement)])
        except Exception as exc:
            raise InstallError(f"could not install {requirement}: {exc}") from exc
    importlib.invalidate_caches()
    still = missing([m.requirement for m in needed])
    if still:
        raise InstallError(
            "still missing after installation: " + ", ".join(str(m.requirement) for m in still),
            restart=True,
        )
    return restart


def install_torch(
    requirement: Requirement,
    pip_install: Callable[[str | list[str]], None],
    wheel_dir: str | Path | None = None,
) -> None:
    """PyTorch through the PyTorch extension when present, else the CPU build."""
    try:
        import PyTorchUtils  # the PyTorch extension's module (SlicerPyTorch)
    except ImportError:
        PyTorchUtils = None
    if PyTorchUtils is not None and not wheel_dir:
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=requirement.specifier
        )
        if torch is None:
            raise InstallError("the PyTorch extension did not install PyTorch")
        return
    if wheel_dir:
        pip_install(["--no-index", "--find-links", str(wheel_dir), str(requirement)])
    else:
        pip_install([str(requirement), "--index-url", TORCH_CPU_INDEX])


def install_pyradiomics(
    pip_install: Callable[[str | list[str]], None], wheel_dir: str | Path | None = None
) -> None:
    """pyradiomics without touching Slicer's SimpleITK/numpy: its pure-Python dependencies
    are installed separately and pyradiomics itself with ``--no-deps``.

    With a wheel folder: ``pip install --no-index --find-links DIR``. Otherwise the 3.0.1
    source distribution is compiled with the installed numpy (``--no-build-isolation``, so pip
    does not fetch a second numpy to build against); that needs a C compiler.
    """
    if wheel_dir:
        pip_install(["--no-index", "--find-links", str(wheel_dir), "--no-deps", "pyradiomics"])
        return
    pip_install(["versioneer", "setuptools", "wheel"])
    pip_install(["--no-build-isolation", "--no-deps", f"pyradiomics=={PYRADIOMICS_VERSION}"])
