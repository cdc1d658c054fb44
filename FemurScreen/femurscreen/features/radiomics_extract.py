"""Full pyradiomics extraction of one side's binary mask, exactly as pyradiomics runs it.

This is the reference: ``extractor.execute`` with the versioned parameter file, unchanged,
on the ROI resampled from a crop (:func:`prepare_inputs`: pyradiomics' grid and values, less
work). The fast path (fast_path.py) gets the same input and must give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from femurscreen.features.params import make_extractor


class SideError(Exception):
    """One side cannot be computed; the message is written into that side's ``error`` column."""


def clean_features(result: Mapping) -> dict[str, float]:
    """pyradiomics output without ``diagnostics_*`` keys, values as plain floats."""
    out: dict[str, float] = {}
    for name, value in result.items():
        if name.startswith("diagnostics_"):
            continue
        out[name] = float(value)
    return out


def check_finite(features: Mapping[str, float], side: str) -> None:
    """Refuse NaN/inf values: pyradiomics writes NaN when a feature fails on a degenerate ROI."""
    bad = [name for name, value in features.items() if not math.isfinite(value)]
    if bad:
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        raise SideError(
            f"{side} proximal femur: pyradiomics returned NaN/inf for {len(bad)} feature(s) "
            f"({shown}); the ROI is degenerate (uniform intensity or too few voxels): check "
            "the mask and the CT"
        )


# Cubic B-spline prefiltering runs over the whole input; its boundary effect decays by 0.268
# per voxel, so 10 mm beyond the resampled region leaves < 2e-6 of it (< 0.01 HU) at 1 mm.
BSPLINE_MARGIN_MM = 10.0


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    )


def bounding_box(mask: sitk.Image) -> tuple[np.ndarray, np.ndarray] | None:
    """(lower index, size) in x, y, z of the non-zero voxels; None for an empty mask.

    Same box as SimpleITK's LabelShapeStatistics, from three numpy projections (10x faster).
    """
    array = sitk.GetArrayViewFromImage(mask)
    lower, size = [], []
    for axis in range(array.ndim - 1, -1, -1):  # numpy is z, y, x; SimpleITK x, y, z
        other = tuple(a for a in range(array.ndim) if a != axis)
        hits = np.flatnonzero(array.any(axis=other))
        if hits.size == 0:
            return None
        lower.append(int(hits[0]))
        size.append(int(hits[-1] - hits[0] + 1))
    return np.array(lower), np.array(size)


def prepare_inputs(
    ct: sitk.Image, side_mask: sitk.Image, settings: Mapping
) -> tuple[sitk.Image, sitk.Image, dict]:
    """CT, mask and settings for pyradiomics, resampled as pyradiomics would, from a crop.

    Why: pyradiomics runs its mask checks (a cast to UInt32, ``numpy.unique``, label
    statistics) on the *whole* mask and prefilters the *whole* CT for B-spline resampling: on a
    0.8 mm pelvis CT that costs more than all the texture features of a model. Here the CT and
    the mask are cut to the ROI's bounding box plus ``padDistance`` resampled voxels and a
    10 mm B-spline margin, and resampled onto exactly the grid pyradiomics'
    ``imageoperations.resampleImage`` computes from the whole mask (same origin, size, spacing,
    direction, interpolators, pixel types). pyradiomics then gets the resampled pair with
    resampling and pre-cropping switched off, which is the state its own ``loadImage`` hands on.
    The result equals pyradiomics on the whole CT (all 1,130 features bit-identical on the
    phantom; the prefilter's boundary effect is below 0.01 HU and int16 output rounds it away),
    and full and fast paths get the same input. Normalisation (statistics over the whole image),
    no resampling, or a mask on another grid: the inputs are returned unchanged.
    """
    settings = dict(settings)
    spacing_setting = settings.get("resampledPixelSpacing")
    interpolator = settings.get("interpolator")
    if (
        not spacing_setting
        or interpolator is None
        or settings.get("normalize")
        or not _same_grid(ct, side_mask)
    ):
        return ct, side_mask, settings
    box = bounding_box(side_mask)
    if box is None:
        return ct, side_mask, settings
    bb_lo, bb_size = box
    mask_spacing = np.asarray(side_mask.GetSpacing())
    mask_size = np.asarray(side_mask.GetSize())
    pad = settings.get("padDistance", 5)

    # The grid of imageoperations.resampleImage (pyradiomics 3.0.1), from the whole mask.
    target = np.asarray(spacing_setting, dtype=float)
    target = np.where(target == 0, mask_spacing, target)
    target = np.where(bb_size != 1, target, mask_spacing)
    if np.allclose(np.asarray(ct.GetSpacing()), target):
        grid = None  # pyradiomics only re-grids the mask and crops: an integer crop keeps that
    else:
        ratio = mask_spacing / target
        lower = np.floor((bb_lo - 0.5) * ratio - pad)
        upper = np.ceil((bb_lo + bb_size - 0.5) * ratio + pad)
        lower = np.where(lower < 0, 0, lower)
        upper = np.where(
            upper > np.ceil(mask_size * ratio) - 1, np.ceil(mask_size * ratio) - 1, upper
        )
        size = np.array(upper - lower + 1, dtype="int").tolist()
        origin_index = 0.5 * (target - mask_spacing) / mask_spacing + lower / ratio
        origin = side_mask.TransformContinuousIndexToPhysicalPoint(origin_index.tolist())
        grid = (target.tolist(), size, origin, side_mask.GetDirection())

    margin_mm = float(pad) * float(target.max()) + BSPLINE_MARGIN_MM
    margin = np.ceil(margin_mm / mask_spacing).astype(int) + 2
    lo = np.maximum(bb_lo - margin, 0)
    hi = np.minimum(bb_lo + bb_size + margin, mask_size)
    crop_size, crop_index = (hi - lo).tolist(), lo.tolist()
    ct_crop = sitk.RegionOfInterest(ct, crop_size, crop_index)
    mask_crop = sitk.RegionOfInterest(side_mask, crop_size, crop_index)
    if grid is None:
        return ct_crop, mask_crop, settings

    if isinstance(interpolator, str):
        interpolator = getattr(sitk, interpolator, sitk.sitkBSpline)
    resample = sitk.ResampleImageFilter()
    resample.SetOutputSpacing(grid[0])
    resample.SetSize(grid[1])
    resample.SetOutputOrigin(grid[2])
    resample.SetOutputDirection(grid[3])
    resample.SetOutputPixelType(ct_crop.GetPixelID())
    resample.SetInterpolator(interpolator)
    image = resample.Execute(ct_crop)
    resample.SetOutputPixelType(mask_crop.GetPixelID())
    resample.SetInterpolator(sitk.sitkNearestNeighbor)
    mask = resample.Execute(mask_crop)
    settings.update(resampledPixelSpacing=None, preCrop=False)
    return image, mask, settings


def extract_full(ct: sitk.Image, side_mask: sitk.Image, params: str | Path) -> dict[str, float]:
    """Every feature the parameter file enables, for a binary mask (1 = ROI) on the CT."""
    extractor = make_extractor(params)
    image, mask, extractor.settings = prepare_inputs(ct, side_mask, extractor.settings)
    return clean_features(extractor.execute(image, mask, label=1))
