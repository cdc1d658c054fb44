"""Saving and loading a classifier folder without pickle.

A model folder holds ``model.skops`` (the forest, in skops' zip format), ``applicability.json``
(plain statistics) and ``manifest.json`` (what the model is, what it needs, how good it was,
and the sha256 of the other two files). Loading refuses, with a message that says what to do:

- a file whose sha256 differs from the manifest (modified, corrupted, swapped);
- any Python type in ``model.skops`` outside :data:`TRUSTED_TYPES` and the plain builtins, so
  that a crafted file can never make us construct an arbitrary object (stricter than skops'
  own default trust, which accepts every scikit-learn estimator);
- a manifest of a newer format than this version understands.

The folder is written atomically: built in a hidden folder beside the target, loaded back
under the same checks, then renamed into place.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from femurscreen.atomic import atomic_dir
from femurscreen.classifier.applicability import Applicability
from femurscreen.errors import InputError, ModelError
from femurscreen.manifest import (
    MANIFEST_FILE,
    member_path,
    read_json_object,
    sha256_file,
    verified_bytes,
)

FORMAT_VERSION = 1
MODEL_FILE = "model.skops"
APPLICABILITY_FILE = "applicability.json"
DEMO_NOTICE = "DEMO MODEL trained on synthetic phantom data only - not for clinical use"

# The only non-builtin types a FemurScreen classifier file may contain: a Pipeline holding a
# RandomForestClassifier of DecisionTreeClassifiers with their Tree structures, numpy arrays
# (tree nodes, feature names, classes) and the int64 class labels. Training loads every model
# back under this list before writing it, so a library update that adds a type fails there.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.pipeline.Pipeline",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "numpy.ndarray",
    "numpy.int64",
)
# Containers and scalars skops writes as JSON or builtin nodes; never code.
BUILTIN_TYPES: tuple[str, ...] = (
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.str",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "builtins.NoneType",
)

REQUIRED_KEYS: tuple[str, ...] = (
    "format_version",
    "model_file",
    "sha256",
    "classes",
    "features",
    "radiomics_params_sha256",
    "training_data",
    "cv_metrics",
    "hyperparameters",
    "package_versions",
    "created",
    "command",
    "demo",
    "demo_notice",
)

RESTORE_ADVICE = (
    "restore the model folder from its original source (reinstall FemurScreen for the shipped "
    "demo model) or train a new one with 'femurscreen train-classifier'; never edit model files "
    "by hand"
)


def _skops_io() -> Any:
    """``skops.io``, imported without its start-up walk over every scikit-learn module.

    On import, skops builds its *default* trust list from ``sklearn.utils.all_estimators()``,
    which imports every scikit-learn module, and through ``pkgutil`` every package under
    ``sklearn.externals`` too: that pulls in torch (sklearn's array-API adapter) and costs
    about 8 s of a 10 s classifier import on this machine, for a list FemurScreen never uses:
    every load passes :data:`TRUSTED_TYPES` explicitly and :func:`_check_types` compares every
    stored type with our own list. An empty default is stricter, never looser.
    """
    import sys

    if "skops.io" not in sys.modules:
        import sklearn.utils

        walk = sklearn.utils.all_estimators
        sklearn.utils.all_estimators = lambda type_filter=None: []
        try:
            import skops.io
        finally:
            sklearn.utils.all_estimators = walk
    import skops.io

    return skops.io


_WRITER_KEYS = frozenset(
    {"format_version", "model_file", "sha256", "applicability_file", "applicability_sha256"}
)


@dataclass(frozen=True)
class LoadedModel:
    """A verified classifier: the estimator, its manifest and its applicability domain."""

    model: Any  # sklearn Pipeline: forest on ``features`` (columns in that order)
    manifest: dict[str, Any]
    applicability: Applicability
    path: Path

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def demo(self) -> bool:
        return bool(self.manifest.get("demo", False))


def stored_types(path: str | Path | bytes) -> set[str]:
    """Every ``module.class`` named in a skops file's schema (read as JSON, nothing built)."""
    source = io.BytesIO(path) if isinstance(path, bytes) else path
    with zipfile.ZipFile(source) as archive:
        schema = json.loads(archive.read("schema.json"))
    found: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node:
                found.add(f"{node.get('__module__', '')}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The manifest of a model folder, checked for format and required keys."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(
            "model folder not found",
            "give the folder written by 'femurscreen train-classifier' (it holds manifest.json "
            "and model.skops)",
            model_dir,
        )
    path = model_dir / MANIFEST_FILE
    manifest = read_json_object(
        path,
        RESTORE_ADVICE,
        missing="no manifest.json: this is not a FemurScreen model folder",
    )
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelError(f"manifest lacks {', '.join(missing)}", RESTORE_ADVICE, path)
    version = manifest["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ModelError(
            f"model format {version!r} is not supported (this FemurScreen reads format "
            f"{FORMAT_VERSION})",
            "update FemurScreen, or use a model trained with this version",
            path,
        )
    return manifest


def _cannot_read(path: Path, exc: BaseException) -> ModelError:
    return ModelError(
        f"model cannot be read: the file is damaged or not a FemurScreen model although its "
        f"sha256 matches the manifest ({_kind(exc)}: {exc})",
        RESTORE_ADVICE,
        path,
    )


def _kind(exc: BaseException) -> str:
    module = type(exc).__module__
    return type(exc).__name__ if module == "builtins" else f"{module}.{type(exc).__name__}"


def _check_types(path: Path, data: bytes) -> None:
    try:
        names = stored_types(data)
        untrusted = set(_skops_io().get_untrusted_types(data=data))
    except Exception as exc:  # noqa: BLE001 - zlib.error, BadZipFile, KeyError...: the file's
        raise _cannot_read(path, exc) from exc
    allowed = set(TRUSTED_TYPES) | set(BUILTIN_TYPES)
    unknown = sorted((names | untrusted) - allowed)
    if unknown:
        raise ModelError(
            f"the model holds types outside FemurScreen's trusted list: {', '.join(unknown)}; "
            "it is not loaded because loading it could run foreign code",
            "use a model folder written by 'femurscreen train-classifier' of a compatible "
            "FemurScreen and scikit-learn version, or retrain",
            path,
        )


def load_model(model_dir: str | Path) -> LoadedModel:
    """Verify hashes and types, then load the forest and its applicability statistics."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    model_path = member_path(model_dir, manifest["model_file"], "the model", RESTORE_ADVICE)
    model_bytes = verified_bytes(model_path, manifest["sha256"], model_path.name, RESTORE_ADVICE)
    applicability_path = member_path(
        model_dir,
        manifest.get("applicability_file", APPLICABILITY_FILE),
        "the applicability statistics",
        RESTORE_ADVICE,
    )
    applicability_bytes = verified_bytes(
        applicability_path,
        manifest.get("applicability_sha256"),
        applicability_path.name,
        RESTORE_ADVICE,
    )
    _check_types(model_path, model_bytes)
    try:
        model = _skops_io().loads(model_bytes, trusted=list(TRUSTED_TYPES))
    except Exception as exc:  # noqa: BLE001 - any failure to build the object is the file's
        raise _cannot_read(model_path, exc) from exc
    try:
        applicability = Applicability.from_dict(json.loads(applicability_bytes.decode("utf-8")))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelError(
            f"applicability statistics are unreadable ({exc})", RESTORE_ADVICE, applicability_path
        ) from exc
    features = list(manifest["features"])
    n_classes = len(manifest["classes"])
    n_in = getattr(model, "n_features_in_", None)
    classes = [int(c) for c in getattr(model, "classes_", [])]
    if (
        n_in != len(features)
        or classes != list(range(n_classes))
        or (applicability.features != features)
    ):
        raise ModelError(
            f"model.skops takes {n_in} features and {len(classes)} classes but the manifest "
            f"lists {len(features)} features and {n_classes} classes",
            RESTORE_ADVICE,
            model_path,
        )
    return LoadedModel(model, manifest, applicability, model_dir)


def write_model_dir(
    out_dir: str | Path,
    model: Any,
    manifest: dict[str, Any],
    applicability: Applicability,
) -> Path:
    """Write model, applicability and manifest (with their sha256) atomically into ``out_dir``.

    ``manifest`` receives ``format_version``, ``model_file``, ``sha256`` and the applicability
    entries here. An existing model folder is replaced; any other non-empty folder is refused.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("output exists and is not a folder", "choose another --out", out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILE).is_file():
        raise InputError(
            "output folder is not empty and is not a FemurScreen model folder",
            "choose a new or empty folder for --out (an existing model folder is replaced)",
            out_dir,
        )
    with atomic_dir(out_dir) as tmp:
        # deflate: a 500-tree forest shrinks about 13-fold (it is shipped in the repository)
        _skops_io().dump(model, tmp / MODEL_FILE, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
        (tmp / APPLICABILITY_FILE).write_text(
            json.dumps(applicability.to_dict(), indent=1) + "\n", encoding="utf-8"
        )
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_file": MODEL_FILE,
            "sha256": sha256_file(tmp / MODEL_FILE),
            "applicability_file": APPLICABILITY_FILE,
            "applicability_sha256": sha256_file(tmp / APPLICABILITY_FILE),
            **{k: v for k, v in manifest.items() if k not in _WRITER_KEYS},
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        load_model(tmp)  # what we ship must pass the checks every user will run
    return out_dir
