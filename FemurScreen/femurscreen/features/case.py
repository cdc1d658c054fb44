"""Features and density readouts of one case: one row per proximal femur side.

A side that cannot be computed (empty or tiny mask, NaN features, a pyradiomics failure) gets
``status = "error"`` and a message saying what to do; the other side is still computed, so a
cohort run never loses a good femur because of its neighbour.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from femurscreen.errors import InputError
from femurscreen.features.cache import FeatureCache, cache_key, image_digest
from femurscreen.features.density import DENSITY_KEYS, DENSITY_VERSION, density_readouts
from femurscreen.features.fast_path import extract_fast
from femurscreen.features.params import params_sha256, plan_features, resolve_params
from femurscreen.features.radiomics_extract import SideError, check_finite, extract_full
from femurscreen.labels import SIDES
from femurscreen.status import Status

log = logging.getLogger(__name__)

LEADING_COLUMNS: tuple[str, ...] = (
    "case_id",
    "side",
    "status",
    "error",
    "radiomics_params_sha256",
)
MIN_MASK_ML = 1.0


def _versions() -> dict[str, str]:
    import radiomics

    return {"pyradiomics": str(radiomics.__version__), "density": DENSITY_VERSION}


def split_requested(only: Sequence[str] | None) -> tuple[list[str] | None, list[str] | None]:
    """(pyradiomics names, density names) asked for; None means all of that kind."""
    if only is None:
        return None, None
    if isinstance(only, str):  # one name or a comma list, not a sequence of characters
        only = only.split(",")
    names = list(dict.fromkeys(str(n).strip() for n in only if str(n).strip()))
    if not names:
        raise InputError("the requested feature list is empty", "name at least one feature")
    density = [n for n in names if n.startswith("density_")]
    unknown = sorted(set(density) - set(DENSITY_KEYS))
    if unknown:
        raise InputError(
            f"unknown density readout(s): {', '.join(unknown)}",
            f"use one of {', '.join(DENSITY_KEYS)}",
        )
    return [n for n in names if not n.startswith("density_")], density


def _same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-3) -> bool:
    if a.GetSize() != b.GetSize():
        return False
    spacing = np.asarray(a.GetSpacing())
    return (
        np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance * spacing.min())
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance * spacing.min())
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)
    )


def mask_on_ct_grid(ct: sitk.Image, mask: sitk.Image) -> sitk.Image:
    """The label map on the CT's voxel grid (nearest neighbour when the grids differ)."""
    if ct.GetDimension() != 3 or mask.GetDimension() != 3:
        raise InputError(
            f"CT and mask must be 3D images (got {ct.GetDimension()}D and {mask.GetDimension()}D)",
            "pass a volumetric CT and its proximal femur label map",
        )
    if mask.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            "the mask is a multi-component image, not a label map",
            "save the segmentation as a label map (1 = left femur, 2 = right femur)",
        )
    if _same_grid(ct, mask):
        return mask
    log.info("mask grid differs from the CT grid: resampling the labels onto the CT")
    return sitk.Resample(mask, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())


def _side_mask(
    labels: np.ndarray, label: int, reference: sitk.Image
) -> tuple[sitk.Image, np.ndarray]:
    binary = (labels == label).astype(np.uint8)
    image = sitk.GetImageFromArray(binary)
    image.CopyInformation(reference)
    return image, binary


def extract_case_features(
    ct: sitk.Image,
    mask: sitk.Image,
    *,
    case_id: str,
    params: Path | None = None,
    only: Sequence[str] | None = None,
    cache_dir: Path | None = None,
    sides: Sequence[str] = ("left", "right"),
) -> list[dict]:
    """One row per side: case_id, side, status, error, radiomics_params_sha256, features, density.

    ``ct`` is a SimpleITK image in HU; ``mask`` a label map (1 = left, 2 = right proximal femur)
    on the same physical space. ``params`` is the pyradiomics parameter file (the shipped one when
    None). ``only`` restricts the output to these names (pyradiomics names and/or ``density_*``)
    and computes only what they need (the fast path, identical values). ``cache_dir`` enables the
    on-disk cache (None: no cache; see cache.default_cache_dir for the CLI's default).
    """
    params_path = resolve_params(params)
    params_sha = params_sha256(params_path)
    radiomics_names, density_names = split_requested(only)
    if radiomics_names is not None and density_names is not None:  # ``only`` was given
        only = [*radiomics_names, *density_names]
    if radiomics_names:  # fail early, once, on names this parameter file cannot produce
        plan_features(radiomics_names, params_path)
    for side in sides:
        if side not in SIDES:
            raise ValueError(f"unknown side {side!r}; use {tuple(SIDES)}")

    mask = mask_on_ct_grid(ct, mask)
    labels = sitk.GetArrayFromImage(mask)
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    cache = FeatureCache(cache_dir) if cache_dir is not None else None
    ct_sha: str | None = None

    rows = []
    for side in sides:
        row: dict = {
            "case_id": case_id,
            "side": side,
            "status": Status.OK,
            "error": "",
            "radiomics_params_sha256": params_sha,
        }
        try:
            side_mask, binary = _side_mask(labels, SIDES[side], ct)
            volume_ml = float(binary.sum()) * voxel_ml
            if volume_ml < MIN_MASK_ML:
                amount = "empty" if volume_ml == 0 else f"only {volume_ml:.2f} ml (< 1 ml)"
                raise SideError(
                    f"{side} proximal femur mask is {amount}: segment or correct the mask"
                )
            key = full_key = None
            if cache is not None:
                ct_sha = ct_sha or image_digest(ct)
                mask_sha = image_digest(side_mask, binary)
                common: dict[str, Any] = dict(
                    image_sha=ct_sha, mask_sha=mask_sha, params_sha=params_sha
                )
                common.update(side=side, versions=_versions())
                key = cache_key(only=only, **common)
                full_key = cache_key(only=None, **common)
                cached = _from_cache(cache, key, full_key, only)
                if cached is not None:
                    log.debug("%s %s: features from the cache", case_id, side)
                    rows.append({**cached, "case_id": case_id})
                    continue
            row.update(
                _compute_side(ct, side_mask, side, params_path, radiomics_names, density_names)
            )
            if cache is not None and key is not None:
                cache.put(key, row)
        except SideError as exc:
            row.update(status=Status.ERROR, error=str(exc))
        except (InputError, KeyboardInterrupt):
            raise
        except Exception as exc:  # pyradiomics ValueError on a bad ROI, a filter failure...
            log.debug("%s %s failed", case_id, side, exc_info=True)
            row.update(
                status=Status.ERROR,
                error=f"{side} proximal femur: feature extraction failed: "
                f"{type(exc).__name__}: {exc}",
            )
        rows.append(row)
    return rows


def _from_cache(cache: FeatureCache, key: str, full_key: str, only) -> dict | None:
    row = cache.get(key)
    if row is not None or only is None or key == full_key:
        return row
    full = cache.get(full_key)  # a full extraction holds every subset
    if full is None or not all(name in full for name in only):
        return None
    keep = set(LEADING_COLUMNS) | set(only)
    return {name: value for name, value in full.items() if name in keep}


def _compute_side(
    ct: sitk.Image,
    side_mask: sitk.Image,
    side: str,
    params_path: Path,
    radiomics_names: list[str] | None,
    density_names: list[str] | None,
) -> dict:
    """Features (all, or the fast path for a subset) then the density readouts asked for."""
    if radiomics_names is None:
        features = extract_full(ct, side_mask, params_path)
    elif radiomics_names:
        raw = extract_fast(ct, side_mask, params_path, radiomics_names)
        features = {name: float(value) for name, value in raw.items()}
        missing = [n for n in radiomics_names if n not in features]
        if missing:
            raise SideError(
                f"{side} proximal femur: pyradiomics did not compute {', '.join(missing[:6])} "
                "(a filter skipped a too-small ROI): check the mask"
            )
    else:
        features = {}
    check_finite(features, side)
    out = dict(features)
    if density_names is None or density_names:
        density = density_readouts(ct, side_mask, side)
        out.update(
            {k: v for k, v in density.items() if density_names is None or k in density_names}
        )
    return out
