"""Reading and writing femur label images (0 background, 1 = left femur, 2 = right femur)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from femurscreen.atomic import atomic_path
from femurscreen.errors import InputError
from femurscreen.labels import LEFT, RIGHT


def read_labels(path: str | Path, reference: sitk.Image | None = None) -> sitk.Image:
    """Read a label image and check it is a 3-D map of 0/1/2 (on ``reference``'s grid if given)."""
    path = Path(path)
    if not path.exists():
        raise InputError("label file not found", "check the path", path=path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(
            f"cannot read the label image ({str(exc).strip().splitlines()[-1][:200]})",
            "write labels as NIfTI, NRRD or MHA",
            path=path,
        ) from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("label image is not a 3-D scalar image", "write a 3-D label map", path)
    values = np.unique(sitk.GetArrayViewFromImage(image))
    if not set(values.tolist()) <= {0, LEFT, RIGHT}:
        raise InputError(
            f"label values {values[:10].tolist()} are not 0/1/2",
            "use 0 = background, 1 = patient's left femur, 2 = patient's right femur",
            path=path,
        )
    image = sitk.Cast(image, sitk.sitkUInt8)
    if reference is not None and not same_grid(image, reference):
        raise InputError(
            "label image does not share the CT's grid (size, origin, spacing or direction)",
            "resample the labels onto the CT or segment this CT again",
            path=path,
        )
    return image


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> bool:
    """True when two images have the same voxel grid in world space."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol * 1e-2)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol * 1e-2)
    )


def write_labels(labels: sitk.Image, path: str | Path) -> Path:
    """Write a uint8 label image atomically (compressed)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(sitk.Cast(labels, sitk.sitkUInt8), str(tmp), True)
    return Path(path)
