"""Is this image a usable CT? Geometry and Hounsfield-unit checks, and a plain description.

Everything downstream (hip locator, segmentation, radiomics with a 25 HU bin width) silently
produces nonsense on an MR, on raw stored DICOM values or on an image with a broken header, so
these checks refuse such input early, with a message a user can act on.

The checks work on any ``sitk.Image``, also one that did not come from a file (a Slicer volume
converted to SimpleITK): ``validate_ct(image, "CT volume 'Patient 1'")``.

"Is this CT?" rules (min/max over all voxels; fractions over a fixed random sample of at most
4 million voxels, so the check stays cheap: 0.3 s on a 512 x 512 x 300 int16 volume):

1. Every voxel is finite (float images: no NaN, no +-Inf).
2. CT evidence, either of:
   a. Air: at least 0.5 % of voxels lie in -1100..-900 HU (air outside the body, lung, bowel
      gas). A body CT has far more: the sample CT 32 %, the sample DICOM series 61 %. The
      scanner's padding outside the reconstruction circle (-2048, -3024, -32768) does not count:
      it also appears in raw stored values, which must not pass as CT.
   b. A tight crop with almost no air (a box around the hips inside the skin) passes when its
      histogram looks like body tissue: at least 1 % fat (-200..-30 HU), at least 25 % fat or
      soft tissue together (-200..150 HU), and the most frequent value (10 HU bins within
      -1024..3071 HU) lies in -200..150 HU, i.e. fat or muscle rather than bone or an arbitrary
      scale. On the sample CT (3 mm voxels) every one of 3,019 air-free 60 mm cubes and 574
      air-free 120 mm cubes passes, bone-rich and pure-fat ones included.
3. Without that evidence the image is refused, and the message says what it looks like:
   - raw stored DICOM values without the rescale to HU: whole numbers <= 65535 with at least
     15 % of voxels in 900..1200 (soft tissue plus the usual 1024 offset);
   - no negative value at all: MR, PET, a label map or a probability map (CT in HU always has
     air near -1000 or fat near -100);
   - otherwise "no air": values on some other scale (z-scores, 0..1) or not a body CT.

Geometry rules: a 3D scalar image with at least 2 voxels along every axis; spacing finite and
> 0; origin finite; direction matrix finite and orthonormal (|D^T D - I| <= 1e-3).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from femurscreen.errors import InputError

AIR_HU = (-1100.0, -900.0)  # air, lung, bowel gas; not the padding outside the scan circle
MIN_AIR_FRACTION = 0.005
FAT_HU = (-200.0, -30.0)
SOFT_TISSUE_HU = (-30.0, 150.0)
MIN_FAT_FRACTION = 0.01
MIN_BODY_TISSUE_FRACTION = 0.25  # fat + soft tissue, -200..150 HU
MODE_RANGE_HU = (-200.0, 150.0)
RAW_SOFT_TISSUE = (900.0, 1200.0)  # soft tissue as stored with a -1024 rescale intercept
MIN_RAW_SOFT_TISSUE_FRACTION = 0.15
ORTHONORMAL_TOLERANCE = 1e-3
SAMPLE_SIZE = 4_000_000

_SCALAR_TYPES = {
    sitk.sitkInt8,
    sitk.sitkUInt8,
    sitk.sitkInt16,
    sitk.sitkUInt16,
    sitk.sitkInt32,
    sitk.sitkUInt32,
    sitk.sitkInt64,
    sitk.sitkUInt64,
    sitk.sitkFloat32,
    sitk.sitkFloat64,
}
_FLOAT_TYPES = {sitk.sitkFloat32, sitk.sitkFloat64}
_FIX_CT = "Pass a CT volume in Hounsfield units (NIfTI, NRRD, MHA or a DICOM series folder)"


@dataclass(frozen=True)
class HUStats:
    """Intensity evidence used by the CT rules; fractions are of the (sampled) voxels."""

    minimum: float
    maximum: float
    air_fraction: float
    fat_fraction: float
    soft_tissue_fraction: float
    mode_hu: float | None
    raw_soft_tissue_fraction: float  # 900..1200: soft tissue stored without the rescale
    sampled_voxels: int


def validate_ct(image: sitk.Image, path: str | Path | None = None) -> None:
    """Raise InputError unless ``image`` is a 3D CT in HU with sound geometry.

    ``path`` names the input in messages: a file name, or a label such as a Slicer node name.
    """
    where = "the image" if path is None else str(path)
    check_geometry(image, where)
    check_hounsfield(image, where)


def check_geometry(image: sitk.Image, where: str) -> None:
    """Refuse images that are not 3D scalar volumes with usable spacing, origin and axes."""
    dim = image.GetDimension()
    size = image.GetSize()
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetPixelID() not in _SCALAR_TYPES:
        raise InputError(
            f"is a multicomponent image ({image.GetPixelIDTypeAsString()}, "
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel, e.g. RGB or vector); "
            "a CT has one grey value per voxel",
            _FIX_CT,
            where,
        )
    if dim == 2:
        raise InputError(
            f"is a 2D image ({size[0]} x {size[1]}), not a 3D CT volume",
            "Pass the whole CT series or volume, not a single slice or screenshot",
            where,
        )
    if dim != 3:
        raise InputError(
            f"is a {dim}D image (size {' x '.join(map(str, size))}); a CT is a 3D volume",
            "Pass one 3D CT volume (for a 4D series, extract the time point or phase you need)",
            where,
        )
    if min(size) < 2:
        raise InputError(
            f"has a single slice (size {size[0]} x {size[1]} x {size[2]}), not a 3D CT volume",
            "Pass the whole CT series or volume (for DICOM: the folder with all its slices)",
            where,
        )
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(
            f"has invalid voxel spacing {tuple(spacing.tolist())} mm; spacing must be finite "
            "and greater than zero",
            "Re-export the CT with its true voxel spacing in the header",
            where,
        )
    origin = np.asarray(image.GetOrigin(), dtype=float)
    if not np.all(np.isfinite(origin)):
        raise InputError(
            f"has a non-finite origin {tuple(origin.tolist())}",
            "Re-export the CT with a valid position in its header",
            where,
        )
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(direction)):
        raise InputError(
            "has a non-finite direction (orientation) matrix",
            "Re-export the CT; the orientation in its header is damaged",
            where,
        )
    deviation = float(np.abs(direction.T @ direction - np.eye(3)).max())
    if deviation > ORTHONORMAL_TOLERANCE:
        raise InputError(
            "has a degenerate direction (orientation) matrix: its axes are not orthonormal "
            f"(|D^T D - I| = {deviation:.3g}, determinant {np.linalg.det(direction):.3g}), so "
            "voxel positions are sheared or scaled",
            "Re-export the CT; the orientation in its header is damaged",
            where,
        )


def hounsfield_stats(image: sitk.Image) -> HUStats:
    """Min/max over all voxels and tissue fractions over a fixed random sample."""
    array = sitk.GetArrayViewFromImage(image)
    minimum = float(array.min())
    maximum = float(array.max())
    flat = array.reshape(-1)
    if flat.size > SAMPLE_SIZE:
        rng = np.random.default_rng(0)  # fixed seed: the same image always gets the same verdict
        flat = flat[rng.integers(0, flat.size, SAMPLE_SIZE)]
    values = flat.astype(np.float64)
    values = values[np.isfinite(values)]
    n = max(values.size, 1)

    def fraction(low: float, high: float) -> float:
        return float(np.count_nonzero((values >= low) & (values < high)) / n)

    counts, edges = np.histogram(values, bins=np.arange(-1024.0, 3072.0 + 10.0, 10.0))
    mode_hu = None if counts.sum() == 0 else float(edges[int(np.argmax(counts))] + 5.0)
    return HUStats(
        minimum=minimum,
        maximum=maximum,
        air_fraction=fraction(AIR_HU[0], AIR_HU[1] + 1e-9),
        fat_fraction=fraction(*FAT_HU),
        soft_tissue_fraction=fraction(SOFT_TISSUE_HU[0], SOFT_TISSUE_HU[1] + 1e-9),
        mode_hu=mode_hu,
        raw_soft_tissue_fraction=fraction(RAW_SOFT_TISSUE[0], RAW_SOFT_TISSUE[1] + 1e-9),
        sampled_voxels=int(values.size),
    )


def check_hounsfield(image: sitk.Image, where: str) -> None:
    """Refuse images whose values are not finite or not CT Hounsfield units (see module doc)."""
    array = sitk.GetArrayViewFromImage(image)
    if image.GetPixelID() in _FLOAT_TYPES:
        low, high = array.min(), array.max()  # NaN propagates; cheaper than isfinite on all
        if not (np.isfinite(low) and np.isfinite(high)):
            n_nan = int(np.count_nonzero(np.isnan(array)))
            n_inf = int(np.count_nonzero(np.isinf(array)))
            raise InputError(
                f"contains non-finite voxel values ({n_nan} NaN, {n_inf} Inf of {array.size})",
                "Re-export the CT without NaN/Inf (e.g. fill outside the field of view with "
                "-1024 HU)",
                where,
            )
    stats = hounsfield_stats(image)
    if stats.air_fraction >= MIN_AIR_FRACTION or _looks_like_tight_crop(stats):
        return
    value_range = f"range {stats.minimum:g}..{stats.maximum:g}"
    if _looks_raw_stored(image, array, stats):
        raise InputError(
            f"is not in Hounsfield units ({value_range}, "
            f"{100 * stats.raw_soft_tissue_fraction:.0f}% of voxels in 900..1200): it looks like "
            "raw stored values without the rescale to HU (soft tissue near 1024 instead of 0)",
            "Export the CT with rescale slope/intercept applied (Hounsfield units), e.g. "
            "convert the DICOM series with its RescaleSlope/RescaleIntercept tags",
            where,
        )
    if stats.minimum >= 0:
        raise InputError(
            f"does not look like CT (not CT in Hounsfield units): no voxel is below 0 "
            f"({value_range}), but a CT has air near -1000 HU and fat near -100 HU; this looks "
            "like MR, PET, a label map or a probability map",
            _FIX_CT,
            where,
        )
    mode = "none" if stats.mode_hu is None else f"{stats.mode_hu:g} HU"
    raise InputError(
        "does not look like CT (not CT in Hounsfield units): only "
        f"{100 * stats.air_fraction:.2f}% of voxels are air ({AIR_HU[0]:g}..{AIR_HU[1]:g} HU; "
        f"a CT has at least {100 * MIN_AIR_FRACTION:g}%), and the values do not show the fat "
        f"and soft tissue of a tightly cropped CT (fat {100 * stats.fat_fraction:.1f}%, soft "
        f"tissue {100 * stats.soft_tissue_fraction:.1f}%, most frequent value {mode}; "
        f"{value_range})",
        _FIX_CT + "; include the body outline in the field of view and check that the export "
        "applied the rescale slope/intercept",
        where,
    )


def _looks_like_tight_crop(stats: HUStats) -> bool:
    return (
        stats.fat_fraction >= MIN_FAT_FRACTION
        and stats.fat_fraction + stats.soft_tissue_fraction >= MIN_BODY_TISSUE_FRACTION
        and stats.mode_hu is not None
        and MODE_RANGE_HU[0] <= stats.mode_hu <= MODE_RANGE_HU[1]
    )


def _looks_raw_stored(image: sitk.Image, array: np.ndarray, stats: HUStats) -> bool:
    """Whole numbers up to 65535 with much "soft tissue" at 900..1200: stored values, no rescale."""
    if stats.maximum > 65535 or stats.raw_soft_tissue_fraction < MIN_RAW_SOFT_TISSUE_FRACTION:
        return False
    return image.GetPixelID() not in _FLOAT_TYPES or all_integral(array)


def all_integral(array: np.ndarray) -> bool:
    """True when every value is a whole number; slab by slab to keep memory small."""
    return all(np.array_equal(slab, np.rint(slab)) for slab in array)


def orientation_code(direction: tuple[float, ...] | list[float] | np.ndarray) -> str:
    """Closest axis-aligned orientation, e.g. "LPS", "RAS", "LPI".

    Letter k says where voxel axis k (i, j, k) points in the patient: L/R, P/A, S/I. Uses
    SimpleITK's LPS world frame, so the identity direction is "LPS" and diag(-1, -1, 1) is
    "RAS". For oblique images the permutation with the largest total alignment wins, so two axes
    never get the same letter pair.
    """
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    best = max(
        itertools.permutations(range(3)),
        key=lambda perm: sum(abs(matrix[perm[axis], axis]) for axis in range(3)),
    )
    letters = []
    for axis, world in enumerate(best):
        positive, negative = "LPS"[world], "RAI"[world]
        letters.append(positive if matrix[world, axis] >= 0 else negative)
    return "".join(letters)


def obliqueness_degrees(direction: tuple[float, ...] | list[float] | np.ndarray) -> float:
    """Largest angle between a voxel axis and the world axis of its orientation letter."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    code = orientation_code(matrix)
    angles = []
    for axis, letter in enumerate(code):
        world = "LPS".index(letter) if letter in "LPS" else "RAI".index(letter)
        cosine = min(1.0, abs(matrix[world, axis]) / max(np.linalg.norm(matrix[:, axis]), 1e-12))
        angles.append(math.degrees(math.acos(cosine)))
    return float(max(angles))


def describe_ct(image: sitk.Image) -> dict:
    """Geometry and intensity summary of a CT, JSON-serialisable (for ``femurscreen info``).

    Coordinates are SimpleITK's LPS world frame in millimetres.
    """
    size = list(image.GetSize())
    spacing = [float(s) for s in image.GetSpacing()]
    direction = [float(d) for d in image.GetDirection()]
    description: dict = {
        "size": size,
        "spacing_mm": spacing,
        "origin_mm": [float(o) for o in image.GetOrigin()],
        "direction": direction,
        "world_frame": "LPS",
        "pixel_type": image.GetPixelIDTypeAsString(),
        "voxels": int(np.prod(size)),
    }
    if image.GetDimension() == 3:
        description["orientation"] = orientation_code(direction)
        description["oblique_degrees"] = round(obliqueness_degrees(direction), 3)
        description["extent_mm"] = [n * s for n, s in zip(size, spacing, strict=True)]
    if image.GetNumberOfComponentsPerPixel() == 1 and image.GetPixelID() in _SCALAR_TYPES:
        stats = asdict(hounsfield_stats(image))
        description["hu_min"] = stats.pop("minimum")
        description["hu_max"] = stats.pop("maximum")
        description["hu_fractions"] = stats
    return description
