"""Compute only the features a trained model needs, with the same numbers as the full run.

A model uses a few dozen of the ~1,100 features. The extractor is configured with
``enableImageTypes`` (only the filters, and only the LoG sigmas, the names use) and
``enableFeaturesByName`` (only the classes and features used). pyradiomics' own ``execute``
would still run every enabled class on every filtered image, so :func:`extract_planned` walks
the same steps as ``execute`` (load + resample, check the mask, shape, filter, crop, compute) with
pyradiomics' own functions, but gives each filtered image only the classes its names need and
skips wavelet sub-bands nobody asked for (the wavelet transform itself is cheap; the texture
matrices on each sub-band are not). Same functions, same inputs (the same resampled ROI,
see radiomics_extract.prepare_inputs): identical values, which Testing/test_features.py checks
against the full extraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from femurscreen.features.params import FeaturePlan, make_extractor, plan_features
from femurscreen.features.radiomics_extract import prepare_inputs


def make_fast_extractor(params: str | Path, only: Sequence[str]) -> tuple[Any, FeaturePlan]:
    """An extractor enabling only what ``only`` needs, and the per-image plan."""
    extractor = make_extractor(params)
    plan = plan_features(only, params, extractor=extractor)
    extractor.disableAllImageTypes()
    extractor.enableImageTypes(**plan.image_types)
    extractor.disableAllFeatures()
    extractor.enableFeaturesByName(**plan.classes)
    return extractor, plan


def extract_planned(extractor, plan: FeaturePlan, ct: sitk.Image, side_mask: sitk.Image) -> dict:
    """The features of ``plan`` for a binary mask; mirrors ``RadiomicsFeatureExtractor.execute``."""
    from radiomics import imageoperations

    settings = extractor.settings.copy()
    settings["label"] = 1
    tolerance = settings.get("geometryTolerance")
    if tolerance is not None:
        sitk.ProcessObject.SetGlobalDefaultCoordinateTolerance(tolerance)
        sitk.ProcessObject.SetGlobalDefaultDirectionTolerance(tolerance)

    image, mask = extractor.loadImage(ct, side_mask, None, **settings)
    bounding_box, corrected = imageoperations.checkMask(image, mask, **settings)
    if corrected is not None:
        mask = corrected

    resegmented = None
    if settings.get("resegmentRange") is not None:
        resegmented = imageoperations.resegmentMask(image, mask, **settings)
        bounding_box, _ = imageoperations.checkMask(image, resegmented, **settings)
    reseg_shape = settings.get("resegmentShape", False)

    enabled = extractor.enabledFeatures
    result: dict = {}
    try:
        shape = plan.by_image.get("original", {}).get("shape")
        if shape:
            extractor.enabledFeatures = {"shape": list(shape)}
            shape_mask = resegmented if (reseg_shape and resegmented is not None) else mask
            result.update(extractor.computeShape(image, shape_mask, bounding_box, **settings))
        if resegmented is not None:
            mask = resegmented
        for image_type, custom in extractor.enabledImagetypes.items():
            args = {**settings, **(custom or {})}
            generator = getattr(imageoperations, f"get{image_type}Image")(image, mask, **args)
            for filtered, image_name, kwargs in generator:
                wanted = {
                    c: list(f) for c, f in plan.by_image.get(image_name, {}).items() if c != "shape"
                }
                if not wanted:
                    continue
                cropped, cropped_mask = imageoperations.cropToTumorMask(
                    filtered, mask, bounding_box, padDistance=0
                )
                extractor.enabledFeatures = wanted
                result.update(
                    extractor.computeFeatures(cropped, cropped_mask, image_name, **kwargs)
                )
    finally:
        extractor.enabledFeatures = enabled
    return {name: result[name] for name in plan.features if name in result}


def extract_fast(
    ct: sitk.Image, side_mask: sitk.Image, params: str | Path, only: Sequence[str]
) -> dict:
    """Only the features named in ``only`` (pyradiomics names), as raw pyradiomics values."""
    extractor, plan = make_fast_extractor(params, only)
    image, mask, extractor.settings = prepare_inputs(ct, side_mask, extractor.settings)
    return extract_planned(extractor, plan, image, mask)
