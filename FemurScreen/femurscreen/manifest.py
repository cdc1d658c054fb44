"""Model artifacts checked against their manifest: one verifier for every learned file.

A model folder (the classifier's ``model.skops`` + ``applicability.json``, the VB-Net's
``coarse``/``fine.safetensors``) carries a ``manifest.json`` with the sha256 of each file. The
files decide every grade and every label, so they are treated like code:

- the manifest must be a JSON object (:func:`read_json_object`);
- a file name in it must be a plain name inside the folder, never a path
  (:func:`member_path`): a crafted manifest cannot point the loader at another file;
- a file is read **once**; its sha256 is computed on those bytes and only the same bytes are
  deserialised (:func:`verified_bytes`), so a file swapped between check and load is never
  used unverified.

Every refusal is a :class:`~femurscreen.errors.ModelError` that names the file and says what to
do; the callers (``classifier.persistence``, ``segmentation.vbnet.weights``) give the advice
and their own format checks (required keys, format name and version).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from femurscreen.errors import ModelError

MANIFEST_FILE = "manifest.json"


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (for writing manifests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_object(path: Path, advice: str, *, missing: str | None = None) -> dict[str, Any]:
    """A manifest file's JSON object; a ModelError naming the file when it is missing (with
    ``missing`` as the message), unreadable, not JSON or not an object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelError(missing or f"no {path.name}", advice, path) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"the manifest is unreadable ({exc})", advice, path) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"the manifest is not valid JSON ({exc})", advice, path) from exc
    if not isinstance(data, dict):
        raise ModelError("the manifest is not a JSON object", advice, path)
    return data


def member_path(folder: Path, name: Any, what: str, advice: str) -> Path:
    """``folder / name`` for a file name taken from a manifest, refused unless ``name`` is a
    plain file name (no folder part, not ``.``/``..``): the loader never leaves the folder."""
    text = "" if name is None else str(name)
    if not text or Path(text).name != text or text in {".", ".."} or "\\" in text:
        raise ModelError(
            f"the manifest names an unsafe file {text!r} for {what}",
            advice,
            folder / MANIFEST_FILE,
        )
    return folder / text


def verified_bytes(path: Path, expected_sha256: Any, what: str, advice: str) -> bytes:
    """The file's bytes, read once, after checking their sha256 against the manifest's.

    Everything after this works on these bytes, never on the file again. ``what`` names the
    file for the reader (``"model.skops"``, ``"the 'fine' weights file"``).
    """
    if not path.is_file():
        raise ModelError(f"{what} is missing", advice, path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{what} cannot be read ({exc})", advice, path) from exc
    expected = str(expected_sha256 or "").lower()
    actual = sha256_bytes(data)
    if actual != expected:
        raise ModelError(
            f"{what} does not match its manifest (sha256 expected {expected[:16] or 'none'}…, "
            f"found {actual[:16]}…): the file was modified or corrupted (or is incomplete, or "
            "was replaced), so it is not loaded",
            advice,
            path,
        )
    return data


__all__ = [
    "MANIFEST_FILE",
    "member_path",
    "read_json_object",
    "sha256_bytes",
    "sha256_file",
    "verified_bytes",
]
