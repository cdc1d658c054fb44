"""VB-Net weights on disk: safetensors files plus a manifest that says what they are.

Why a manifest with sha256: a weights file is code-like (it decides every label), so it is
checked against the manifest *before* it is deserialised, and a missing, truncated, corrupted
or swapped file is refused with a message instead of giving quietly wrong masks. Only
safetensors is read (plain tensors, no pickle), never ``torch.load`` of a weights file.

Layout of a weights folder::

    manifest.json       format, demo flag, intensity normalisation, one entry per model
    coarse.safetensors  locates the hips (0 background, 1 left, 2 right) at ~5 mm
    fine.safetensors    segments one femur (0/1) in a ~1 mm crop; right crops are mirrored
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from femurscreen.atomic import atomic_path, write_text
from femurscreen.errors import ModelError
from femurscreen.manifest import (
    MANIFEST_FILE,
    member_path,
    read_json_object,
    sha256_bytes,
    verified_bytes,
)

from .network import VBNet

MANIFEST = MANIFEST_FILE
FORMAT = "femurscreen-vbnet"
FORMAT_VERSION = 1
DEMO_NOTICE = "DEMO WEIGHTS trained on synthetic phantoms only - not for clinical use"
MODEL_NAMES = ("coarse", "fine")

_RETRAIN = (
    "reinstall FemurScreen's model files from the repository, or retrain them with "
    "'femurscreen train-seg COHORT.csv --out DIR' and pass that folder"
)


def save_model(model: VBNet, path: str | Path, dtype: torch.dtype = torch.float16) -> dict:
    """Write the model's weights as safetensors (atomically); returns file, sha256, bytes.

    Floating tensors are stored as ``dtype`` (half by default: the shipped files stay small,
    and loading widens them into the float32 model, which changes masks by far less than a
    voxel); integer tensors are kept as they are.
    """
    path = Path(path)
    state = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }
    meta = {"format": FORMAT, "architecture": json.dumps(model.config()), "dtype": str(dtype)}
    data = st_save(state, metadata=meta)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    _readable(path)
    return {"file": path.name, "sha256": sha256_bytes(data), "bytes": len(data)}


def _readable(path: Path) -> None:
    """World-readable like any installed file (the atomic writer's temp file is 0600)."""
    path.chmod(0o644)


def read_manifest(weights_dir: str | Path) -> dict:
    """The manifest of a weights folder; a ModelError when it is missing or not ours."""
    weights_dir = Path(weights_dir)
    path = weights_dir / MANIFEST
    if not path.is_file():
        what = (
            "no VB-Net weights folder here"
            if not weights_dir.is_dir()
            else "no VB-Net weights manifest (manifest.json) in this folder"
        )
        raise ModelError(what, _RETRAIN + ", or use the classical segmentation engine", path)
    manifest = read_json_object(path, _RETRAIN)
    if manifest.get("format") != FORMAT:
        raise ModelError(f"not a {FORMAT} manifest", _RETRAIN, path)
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"manifest format version {manifest.get('format_version')} is newer than this "
            f"FemurScreen understands ({FORMAT_VERSION})",
            "update FemurScreen",
            path,
        )
    return manifest


def write_manifest(weights_dir: str | Path, manifest: dict) -> Path:
    path = write_text(Path(weights_dir) / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    _readable(path)
    return path


def load_model(
    weights_dir: str | Path, name: str, manifest: dict | None = None, device: str = "cpu"
) -> tuple[VBNet, dict]:
    """Verify one weights file against the manifest, then build the network and load it.

    The file is read once into memory; the sha256 is computed on those bytes and only the
    same bytes are deserialised, so nothing can change between the check and the use.
    """
    weights_dir = Path(weights_dir)
    manifest = manifest if manifest is not None else read_manifest(weights_dir)
    entry = manifest.get("models", {}).get(name)
    if not isinstance(entry, dict):
        raise ModelError(f"the manifest lists no '{name}' model", _RETRAIN, weights_dir / MANIFEST)
    path = member_path(weights_dir, entry.get("file"), f"the '{name}' model", _RETRAIN)
    data = verified_bytes(path, entry.get("sha256"), f"the '{name}' weights file", _RETRAIN)
    try:
        state = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        what = f"the '{name}' weights file is not valid safetensors"
        raise ModelError(what, _RETRAIN, path) from exc
    try:
        model = VBNet(**entry["architecture"])
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"the '{name}' weights do not fit the architecture in the manifest ({str(exc)[:200]})",
            _RETRAIN,
            path,
        ) from exc
    return model.to(torch.device(device)).eval(), entry
