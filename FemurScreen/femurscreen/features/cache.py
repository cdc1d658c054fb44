"""On-disk cache of one side's feature row, so that training and re-runs cost a file read.

Key: sha256 over the CT's voxel bytes and geometry, the side's binary mask bytes and geometry,
the parameter file's sha256, the side, the requested feature subset, and the versions of
pyradiomics and of our density readouts (either changes the numbers). An entry is one JSON file,
written to a temporary file and moved into place (``os.replace``), so a killed run never leaves
half a file; an entry that does not parse or does not carry its own key is ignored and
recomputed. Only rows with status "ok" are stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from femurscreen.status import Status

log = logging.getLogger(__name__)

CACHE_SCHEMA = "femurscreen-features-cache-v1"


def default_cache_dir() -> Path:
    """``$FEMURSCREEN_CACHE/features``, else ``~/.cache/femurscreen/features``."""
    root = os.environ.get("FEMURSCREEN_CACHE")
    if root:
        return Path(root).expanduser() / "features"
    return Path.home() / ".cache" / "femurscreen" / "features"


def image_digest(image: sitk.Image, voxels: np.ndarray | None = None) -> str:
    """sha256 of an image's pixel type, geometry and voxel bytes (``voxels`` if already read)."""
    digest = hashlib.sha256()
    digest.update(image.GetPixelIDTypeAsString().encode())
    digest.update(struct.pack(f"<{image.GetDimension()}q", *image.GetSize()))
    for values in (image.GetSpacing(), image.GetOrigin(), image.GetDirection()):
        digest.update(struct.pack(f"<{len(values)}d", *values))
    array = voxels if voxels is not None else sitk.GetArrayViewFromImage(image)
    digest.update(str(array.dtype).encode())
    digest.update(np.ascontiguousarray(array).data.cast("B"))
    return digest.hexdigest()


def cache_key(
    *,
    image_sha: str,
    mask_sha: str,
    params_sha: str,
    side: str,
    only: Sequence[str] | None,
    versions: Mapping[str, str],
) -> str:
    """The entry's name: everything that can change the numbers of one side's row."""
    payload = {
        "schema": CACHE_SCHEMA,
        "image": image_sha,
        "mask": mask_sha,
        "params": params_sha,
        "side": side,
        "only": sorted(set(only)) if only is not None else None,
        "versions": dict(sorted(versions.items())),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """JSON files under ``root/<2 hex>/<key>.json``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The cached row, or None when absent, unreadable or not this key's entry."""
        path = self.path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("ignoring corrupt feature cache entry %s (%s); recomputing", path, exc)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            log.warning("ignoring feature cache entry %s: not this key's entry; recomputing", path)
            return None
        row = entry.get("row")
        if not isinstance(row, dict) or row.get("status") != Status.OK:
            log.warning("ignoring feature cache entry %s: no valid row; recomputing", path)
            return None
        return row

    def put(self, key: str, row: Mapping) -> None:
        """Store an ok row atomically; a failure to write only costs a recomputation later."""
        path = self.path(key)
        try:
            text = json.dumps({"key": key, "row": dict(row)}, allow_nan=False)
        except ValueError:
            return  # non-finite values are never cached
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("could not write feature cache entry %s (%s)", path, exc)
