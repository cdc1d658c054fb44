"""Python packages the module needs inside Slicer: check cheaply, install on first use.

Checking reads package metadata (``importlib.metadata``) and never imports a package: importing
torch or scikit-learn takes seconds, and a package imported before an upgrade stays the old
version until Slicer restarts. Installing asks first, listing packages and versions; the
question is asked through a callback that the widget supplies, so this module has no Qt.

Requirements are split by stage, so that *Segment* does not wait for what only grading needs:
``requirements_for(engine, stage="segment")`` is what that engine's segmentation imports (the
classical engine: PyMaxflow for the min-cut at the hip joint; VB-Net: torch and safetensors),
``stage="grade"`` what features and the classifier import, ``stage="export"`` what the DICOM
SEG/SR export imports (highdicom, which needs pydicom 3: Slicer 5.10 ships pydicom 2.4.4, so
that export upgrades it and asks for a restart), ``stage="all"`` everything.

Three packages need care (see Resources/DEPENDENCIES.md):

- SimpleITK, numpy and scipy come with Slicer and are never replaced (Slicer's SimpleITK
  carries Slicer's own image IO): every pip call is constrained to their installed versions;
- PyTorch is installed by the PyTorch extension (``PyTorchUtils``) when it is present, which
  picks the CUDA build matching the driver; otherwise the CPU build from PyTorch's index;
- radiomics features come from ``pyradiomics-bhklab`` 3.1.4 (same ``radiomics`` import as
  pyradiomics, installs on Python 3.11 and 3.12 with a plain ``pip install``, compiling two C
  extensions from its source distribution). A pyradiomics >= 3.0.1a1 that is already there
  (the Radiomics extension's, or PyPI's 3.0.1 on Python <= 3.11) is accepted as it is: its
  feature code is the same (Resources/DEPENDENCIES.md says how that was checked).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
RADIOMICS_DISTRIBUTION = "pyradiomics-bhklab"  # provides the ``radiomics`` import
RADIOMICS_VERSION = "3.1.4"
WHEELS_ENV = "FEMURSCREEN_WHEELS"  # folder of pre-built wheels for offline installation

STAGES = ("segment", "grade", "export", "all")
ENGINES = ("classical", "vbnet")  # what ``resolve_engine`` may return for a known engine


@dataclass(frozen=True)
class Requirement:
    """One distribution the module needs, when it is needed, and how it gets installed.

    ``alternatives`` are other distributions that provide the same import and are accepted in
    its place, as ``(name, specifier)``. ``engines`` limits a segmentation requirement to the
    engines that import it (empty: every engine).
    """

    name: str  # distribution name as pip knows it
    specifier: str  # PEP 440 specifier, e.g. ">=1.4"
    purpose: str  # shown to the user
    route: str = "pip"  # "pip", "torch" or "radiomics"
    stage: str = "grade"  # "segment" or "grade"
    engines: tuple[str, ...] = ()
    alternatives: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return f"{self.name}{self.specifier}"


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("scikit-learn", ">=1.4", "bone-status classifier"),
    Requirement("skops", ">=0.10", "safe loading of the classifier (no pickle)"),
    Requirement("pandas", ">=2.1", "feature tables"),
    Requirement("matplotlib", ">=3.8", "pictures in the HTML report"),
    Requirement("PyWavelets", ">=1.1", "pyradiomics dependency (wavelet features)"),
    Requirement("pykwalify", ">=1.6", "pyradiomics dependency (parameter file schema)"),
    Requirement("six", ">=1.10", "pyradiomics dependency"),
    Requirement(
        RADIOMICS_DISTRIBUTION,
        f">={RADIOMICS_VERSION}",
        "radiomics features",
        route="radiomics",
        alternatives=(("pyradiomics", ">=3.0.1a1"),),
    ),
    Requirement("highdicom", ">=0.28", "DICOM SEG and SR export", stage="export"),
    Requirement(
        "pydicom",
        ">=3.0.1",
        "DICOM files for highdicom (Slicer 5.10 ships 2.4.4: upgraded, restart Slicer after)",
        stage="export",
    ),
    Requirement(
        "PyMaxflow",
        ">=1.3",
        "min-cut between femur and pelvis at the hip joint (classical segmentation)",
        stage="segment",
        engines=("classical",),
    ),
    Requirement(
        "safetensors", ">=0.4", "segmentation network weights", stage="segment", engines=("vbnet",)
    ),
    Requirement(
        "torch",
        ">=2.1",
        "VB-Net segmentation network",
        route="torch",
        stage="segment",
        engines=("vbnet",),
    ),
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
    """Whether ``version`` meets ``specifier``; local tags (``+cpu``) are ignored.

    Pre-releases are accepted when they meet the specifier: the Radiomics extension's
    pyradiomics calls itself ``3.0.1a1``, and packaging 25 (Slicer 5.10's) rejects a
    pre-release against ``>=3.0`` unless asked to accept them.
    """
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:  # pragma: no cover - Slicer and pip environments ship packaging
        return True
    try:
        parsed = Version(version.split("+")[0])
    except InvalidVersion:  # an unparsable version string: trust the installation
        return True
    return SpecifierSet(specifier, prereleases=True).contains(parsed)


def resolve_engine(engine: str) -> str:
    """``default`` -> the core's default engine (light import: numpy, scipy, SimpleITK)."""
    if engine != "default":
        return engine
    try:
        from femurscreen.segmentation.pipeline import DEFAULT_ENGINE
    except ImportError:
        return engine
    return DEFAULT_ENGINE


def requirements_for(engine: str = "default", *, stage: str = "all") -> tuple[Requirement, ...]:
    """What ``stage`` needs with segmentation ``engine``.

    ``"segment"``: what that engine's segmentation imports (classical: PyMaxflow; vbnet:
    torch and safetensors). ``"grade"``: features and classifier.
    ``"export"``: the DICOM SEG/SR export. ``"all"``: everything. An engine this module does
    not know (or ``default`` when the core cannot be imported) gets every engine's
    requirements, so nothing is missed.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: use one of {', '.join(STAGES)}")
    resolved = resolve_engine(engine)
    out = []
    for requirement in REQUIREMENTS:
        if stage != "all" and requirement.stage != stage:
            continue
        if requirement.engines and resolved in ENGINES and resolved not in requirement.engines:
            continue
        out.append(requirement)
    return tuple(out)


def installed_for(requirement: Requirement) -> tuple[str | None, bool]:
    """(what is installed, whether it satisfies) for a requirement or one of its alternatives.

    The installed text is the version of ``requirement.name``, or ``"NAME VERSION"`` when only
    an alternative distribution is there; None when neither is.
    """
    version = installed_version(requirement.name)
    if version is not None and satisfies(version, requirement.specifier):
        return version, True
    found = version
    for name, specifier in requirement.alternatives:
        other = installed_version(name)
        if other is None:
            continue
        if satisfies(other, specifier):
            return f"{name} {other}", True
        found = found or f"{name} {other}"
    return found, False


def missing(requirements: Sequence[Requirement] = REQUIREMENTS) -> list[Missing]:
    """The requirements that are absent or too old (an accepted alternative counts as there)."""
    importlib.invalidate_caches()
    out = []
    for requirement in requirements:
        installed, ok = installed_for(requirement)
        if not ok:
            out.append(Missing(requirement, installed))
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
            f"pyradiomics: {RADIOMICS_DISTRIBUTION} {RADIOMICS_VERSION} is built from its source "
            "distribution (two small C extensions, about a minute; needs a C compiler: Xcode "
            "command-line tools on macOS, gcc on Linux, Microsoft C++ Build Tools on Windows). "
            "Without a compiler, install the 'Radiomics' extension from the Extensions Manager "
            "and restart Slicer (its pyradiomics is accepted), or use the wheel folder named by "
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


@contextlib.contextmanager
def slicer_constraints() -> Iterator[list[str]]:
    """``["-c", FILE]`` pinning what Slicer ships to its installed versions, for every pip call.

    pip then never upgrades or replaces Slicer's numpy/SimpleITK/scipy to satisfy another
    package: it picks a compatible release or fails with a message, leaving Slicer intact.
    """
    pins = [
        f"{name}=={version}"
        for name in PROVIDED_BY_SLICER
        if (version := installed_version(name)) is not None
    ]
    if not pins:
        yield []
        return
    with tempfile.TemporaryDirectory(prefix="femurscreen-pip-") as folder:
        path = Path(folder) / "slicer-constraints.txt"
        path.write_text("\n".join(pins) + "\n", encoding="utf-8")
        yield ["-c", str(path)]


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
    when the user declines or an installation fails. Plain packages go in one pip call (one
    resolution, so they agree with each other), then pyradiomics, then torch.
    """
    if not needed:
        return False
    question, details = confirmation_text(needed)
    if not confirm(question, details):
        raise InstallError("installation of the required Python packages was declined")
    wheel_dir = wheel_dir or os.environ.get(WHEELS_ENV) or None
    restart = any(m.installed is not None for m in needed)  # upgraded a loaded version?
    offline = ["--no-index", "--find-links", str(wheel_dir)] if wheel_dir else []
    plain = [m.requirement for m in needed if m.requirement.route == "pip"]
    special = [m.requirement for m in needed if m.requirement.route != "pip"]
    with slicer_constraints() as constraints:
        if plain:
            names = [str(r) for r in plain]
            log_message(f"Installing {', '.join(names)} ...")
            try:
                pip_install([*offline, *constraints, *names])
            except Exception as exc:
                raise InstallError(f"could not install {', '.join(names)}: {exc}") from exc
        for requirement in special:
            log_message(f"Installing {requirement} ...")
            try:
                if requirement.route == "torch":
                    install_torch(requirement, pip_install, wheel_dir, constraints)
                else:
                    install_pyradiomics(pip_install, wheel_dir, constraints)
            except InstallError:
                raise
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
    constraints: Sequence[str] = (),
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
        pip_install(["--no-index", "--find-links", str(wheel_dir), *constraints, str(requirement)])
    else:
        pip_install([*constraints, str(requirement), "--index-url", TORCH_CPU_INDEX])


def install_pyradiomics(
    pip_install: Callable[[str | list[str]], None],
    wheel_dir: str | Path | None = None,
    constraints: Sequence[str] = (),
) -> None:
    """pyradiomics-bhklab with ``--no-deps``, so its unpinned numpy/SimpleITK requirements never
    touch Slicer's; its pure-Python dependencies (PyWavelets, pykwalify, six) are requirements
    of their own and installed before it.

    With a wheel folder: ``pip install --no-index --find-links DIR``. Otherwise a plain
    ``pip install`` of the source distribution: pip builds it in an isolated environment
    (setuptools, numpy, versioneer fetched for the build only) and compiles two C extensions,
    which needs a C compiler.
    """
    spec = f"{RADIOMICS_DISTRIBUTION}=={RADIOMICS_VERSION}"
    if wheel_dir:
        pip_install(["--no-index", "--find-links", str(wheel_dir), *constraints, "--no-deps", spec])
        return
    try:
        pip_install([*constraints, "--no-deps", spec])
    except Exception as exc:
        raise InstallError(
            f"could not build {spec} from its source distribution ({exc}). It needs a C "
            "compiler (Xcode command-line tools on macOS, gcc on Linux, Microsoft C++ Build "
            "Tools on Windows). Alternatively install the 'Radiomics' extension from the "
            f"Extensions Manager and restart Slicer, or set {WHEELS_ENV} to a folder of wheels "
            "built beforehand (Resources/DEPENDENCIES.md)."
        ) from exc
