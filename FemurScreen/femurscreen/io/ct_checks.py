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
3. Values stored as HU x 10 are refused first: at least 0.5 % of voxels in -11000..-9000 with
   at least 20 distinct values there (air x 10 is noisy; a padding constant is one value). Such
   a file would otherwise pass rule 2a, because its fat (-1000) lies where air belongs.
4. Without that evidence the image is refused, and the message says what it looks like:
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
AIR_X10_HU = (-11000.0, -9000.0)  # air of a CT stored as HU x 10 (fat then lies near -1000)
MIN_AIR_X10_DISTINCT = 20  # a padding constant is one value; real air has noise
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
    air_x10_fraction: float = 0.0  # -11000..-9000: air of a CT stored as HU x 10
    air_x10_distinct: int = 0  # distinct values there (padding is a single constant)


def validate_ct(image: sitk.Image, path: str | Path | None = None) -> None:
    """Raise InputError unless ``image`` is a 3D CT in HU with sound geometry.

    ``path`` names the input in messages: a file name, or a label such as a Slicer node name.
    """
    where = "the image" if path is None else str(path)
    check_geometry(image, where)
    check_hounsfield(image, where)
    check_orientation(image, where)


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

    air_x10 = values[(values >= AIR_X10_HU[0]) & (values <= AIR_X10_HU[1])]
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
        air_x10_fraction=float(air_x10.size / n),
        air_x10_distinct=int(np.unique(air_x10[:100_000]).size),
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
    value_range = f"range {stats.minimum:g}..{stats.maximum:g}"
    if _looks_scaled_by_ten(stats):
        raise InputError(
            f"is not in Hounsfield units: its values look multiplied by 10 ({value_range}; "
            f"{100 * stats.air_x10_fraction:.1f}% of voxels lie in {AIR_X10_HU[0]:g}.."
            f"{AIR_X10_HU[1]:g}, where nothing but air x 10 can be, and fat would then lie "
            "near -1000, where air belongs)",
            "Export the CT in plain Hounsfield units (air -1000, water 0), or divide the values "
            "by 10 if you know the file was stored as HU x 10",
            where,
        )
    if stats.air_fraction >= MIN_AIR_FRACTION or _looks_like_tight_crop(stats):
        return
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


def _looks_scaled_by_ten(stats: HUStats) -> bool:
    """Much noisy "air" near -10000: a CT stored as HU x 10, not a scanner padding value."""
    return (
        stats.air_x10_fraction >= MIN_AIR_FRACTION
        and stats.air_x10_distinct >= MIN_AIR_X10_DISTINCT
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


# --------------------------------------------------------------------------------------------
# Anatomical orientation: is the header's head-foot and front-back direction believable?

ORIENTATION_GRID_MM = 4.0  # the image is looked at on a world-aligned (LPS) grid this coarse
_BODY_HU = -300.0
_INTERNAL_AIR_HU = -400.0
_BONE_HU = 250.0
_OUTSIDE_HU = -500.0  # table, mattress: dense things outside the body outline
_MIDLINE_MM = 25.0
AIR_VOTE_ML = 20.0  # internal air (lung, bowel gas) at one end to count as a cue
AIR_STRONG_ML = 100.0  # lung-sized: enough on its own
AIR_RATIO = 4.0
AIR_STRONG_RATIO = 10.0
MIDLINE_BONE_VOTE_CM2 = 1.5  # mean midline bone area per slice at one end (spine, sacrum)
MIDLINE_BONE_RATIO = 2.0
POSTERIOR_BONE_MM = 15.0  # bone of the upper half posterior of the body centre (spine, sacrum)
TABLE_VOTE_ML = 30.0
TABLE_RATIO = 4.0


@dataclass(frozen=True)
class OrientationEvidence:
    """Anatomical cues, measured in the world frame the header defines (LPS, z superior).

    ``*_superior``/``*_inferior``: the top and bottom quarter of the body's head-foot extent.
    Each ``*_vote`` is +1 (agrees with the header), -1 (says it is flipped) or 0 (no evidence).
    """

    internal_air_superior_ml: float = 0.0
    internal_air_inferior_ml: float = 0.0
    midline_bone_superior_cm2: float = 0.0
    midline_bone_inferior_cm2: float = 0.0
    midline_bone_posterior_mm: float | None = None
    bone_posterior_mm: float | None = None
    outside_posterior_ml: float = 0.0
    outside_anterior_ml: float = 0.0
    air_vote: int = 0
    midline_vote: int = 0
    air_strong: bool = False
    spine_vote: int = 0
    bone_vote: int = 0
    table_vote: int = 0

    @property
    def head_foot_flipped(self) -> bool:
        """Lungs/bowel gas and spine/sacrum both at the inferior end, or lungs alone there."""
        votes = (self.air_vote, self.midline_vote)
        if 1 in votes:
            return False
        return sum(votes) <= -2 or (self.air_vote == -1 and self.air_strong)

    @property
    def front_back_flipped(self) -> bool:
        """Spine/sacrum and pelvic bone anterior, and the table not behind the patient."""
        bone = (self.spine_vote, self.bone_vote)
        if 1 in bone:
            return False
        return (sum(bone) <= -2 and self.table_vote <= 0) or (
            self.table_vote == -1 and sum(bone) <= -1
        )


def _vote(upper: float, lower: float, minimum: float, ratio: float, smooth: float) -> int:
    """+1 when ``upper`` dominates, -1 when ``lower`` does, 0 when neither is clear."""
    if max(upper, lower) < minimum:
        return 0
    if (upper + smooth) >= ratio * (lower + smooth):
        return 1
    if (lower + smooth) >= ratio * (upper + smooth):
        return -1
    return 0


def _world_grid(image: sitk.Image, step: float) -> np.ndarray:
    """The image resampled onto an axis-aligned LPS grid (z, y, x); -5000 outside the scan."""
    size = np.asarray(image.GetSize())
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint(
                [float((s - 1) * k) for s, k in zip(size, corner, strict=True)]
            )
            for corner in itertools.product((0, 1), repeat=3)
        ]
    )
    low, high = corners.min(0), corners.max(0)
    n = np.maximum(np.floor((high - low) / step).astype(int) + 1, 1)
    reference = sitk.Image([int(v) for v in n], sitk.sitkFloat32)
    reference.SetOrigin(low.tolist())
    reference.SetSpacing([step] * 3)
    resampled = sitk.Resample(
        image, reference, sitk.Transform(), sitk.sitkLinear, -5000.0, sitk.sitkFloat32
    )
    return sitk.GetArrayFromImage(resampled)


def orientation_evidence(image: sitk.Image) -> OrientationEvidence:
    """Measure the cues that tell head from foot and front from back (see ``check_orientation``).

    Works in the world frame, so every axis order of the same scan gives the same evidence.
    """
    from scipy import ndimage

    step = ORIENTATION_GRID_MM
    a = _world_grid(image, step)  # axis 0: inferior -> superior; 1: anterior -> posterior
    in_scan = a > -4000.0
    body = in_scan & (a > _BODY_HU)
    labels, count = ndimage.label(body)
    if count == 0:
        return OrientationEvidence()
    sizes = ndimage.sum_labels(body, labels, np.arange(1, count + 1))
    body = labels == 1 + int(np.argmax(sizes))
    slices = np.flatnonzero(body.sum((1, 2)) * step * step >= 500.0)  # >= 5 cm2 of body
    if slices.size < 8:
        return OrientationEvidence()
    z0, z1 = int(slices[0]), int(slices[-1]) + 1
    quarter = max((z1 - z0) // 4, 2)
    inferior, superior = slice(z0, z0 + quarter), slice(z1 - quarter, z1)
    filled = np.zeros_like(body)
    for k in range(z0, z1):
        filled[k] = ndimage.binary_fill_holes(body[k])
    voxel_ml = step**3 / 1000.0
    air = filled & ~body & in_scan & (a < _INTERNAL_AIR_HU)
    bone = body & (a > _BONE_HU)
    ys = np.arange(a.shape[1], dtype=float)[:, None]
    xs = np.arange(a.shape[2], dtype=float)[None, :]
    midline_area = np.zeros(a.shape[0])
    spine_offsets, bone_offsets = [], []
    posterior = anterior = 0
    middle = (z0 + z1) // 2
    for k in range(z0, z1):
        outline = body[k]
        n = outline.sum()
        if n == 0:
            continue
        cx, cy = (outline * xs).sum() / n, (outline * ys).sum() / n
        midline = bone[k] & (np.abs(xs - cx) * step < _MIDLINE_MM)
        midline_area[k] = midline.sum() * step * step / 100.0
        if k >= middle:
            if midline.sum() >= 2:
                spine_offsets.append(((midline * ys).sum() / midline.sum() - cy) * step)
            if bone[k].sum() >= 3:
                bone_offsets.append(((bone[k] * ys).sum() / bone[k].sum() - cy) * step)
        rows = np.flatnonzero(outline.any(1))
        outside = in_scan[k] & (a[k] > _OUTSIDE_HU) & ~filled[k]
        posterior += int(outside[rows[-1] + 1 :].sum())
        anterior += int(outside[: rows[0]].sum())
    air_up, air_down = float(air[superior].sum() * voxel_ml), float(air[inferior].sum() * voxel_ml)
    mid_up, mid_down = float(midline_area[superior].mean()), float(midline_area[inferior].mean())
    spine = float(np.median(spine_offsets)) if spine_offsets else None
    bone_off = float(np.median(bone_offsets)) if bone_offsets else None
    post_ml, ant_ml = posterior * voxel_ml, anterior * voxel_ml

    def sign(value: float | None, threshold: float) -> int:
        return 0 if value is None or abs(value) < threshold else (1 if value > 0 else -1)

    return OrientationEvidence(
        internal_air_superior_ml=round(air_up, 1),
        internal_air_inferior_ml=round(air_down, 1),
        midline_bone_superior_cm2=round(mid_up, 2),
        midline_bone_inferior_cm2=round(mid_down, 2),
        midline_bone_posterior_mm=None if spine is None else round(spine, 1),
        bone_posterior_mm=None if bone_off is None else round(bone_off, 1),
        outside_posterior_ml=round(post_ml, 1),
        outside_anterior_ml=round(ant_ml, 1),
        air_vote=_vote(air_up, air_down, AIR_VOTE_ML, AIR_RATIO, 1.0),
        air_strong=max(air_up, air_down) >= AIR_STRONG_ML
        and _vote(air_up, air_down, AIR_STRONG_ML, AIR_STRONG_RATIO, 1.0) != 0,
        midline_vote=_vote(mid_up, mid_down, MIDLINE_BONE_VOTE_CM2, MIDLINE_BONE_RATIO, 0.2),
        spine_vote=sign(spine, POSTERIOR_BONE_MM),
        bone_vote=sign(bone_off, POSTERIOR_BONE_MM),
        table_vote=_vote(post_ml, ant_ml, TABLE_VOTE_ML, TABLE_RATIO, 1.0),
    )


def check_orientation(image: sitk.Image, where: str) -> OrientationEvidence:
    """Refuse a CT whose header turns the patient upside down or back to front.

    A flipped header (z direction negated, a negative z spacing in .mha, a y axis inverted by a
    converter) keeps every voxel but moves the anatomy: the iliac wings end up where the
    femurs belong and are graded as femurs. The cues, on a 4 mm world grid: internal air
    (lungs, bowel gas) lies at the superior end; the spine and sacrum put midline bone at the
    superior end and behind the body centre; the table lies behind the patient. A CT is refused
    only when the cues agree (see ``OrientationEvidence``); weak or conflicting cues (a tight
    crop, a prone patient) refuse nothing. Left and right cannot be told from anatomy.
    """
    evidence = orientation_evidence(image)
    if evidence.head_foot_flipped:
        raise InputError(
            "looks upside down: its header puts the patient's head at the foot end (large "
            f"internal air such as lungs or bowel gas: {evidence.internal_air_inferior_ml:g} ml "
            f"in the lowest quarter vs {evidence.internal_air_superior_ml:g} ml in the highest; "
            f"midline bone such as spine or sacrum: {evidence.midline_bone_inferior_cm2:g} cm2 "
            f"per slice in the lowest quarter vs {evidence.midline_bone_superior_cm2:g} cm2 in "
            "the highest), so the iliac wings would be taken for femurs; the z direction of the "
            "header is probably inverted (or a negative z spacing)",
            "Check the CT in a viewer (a coronal view must show the head at the top) and "
            "export it again with a correct orientation, e.g. convert the original DICOM "
            "series with dcm2niix",
            where,
        )
    if evidence.front_back_flipped:
        raise InputError(
            "looks back to front: its header puts the spine and sacrum in front of the body "
            f"centre (midline bone {evidence.midline_bone_posterior_mm} mm, all bone of the "
            f"upper half {evidence.bone_posterior_mm} mm posterior; negative = anterior) and "
            f"the table is not behind the patient ({evidence.outside_posterior_ml:g} ml behind, "
            f"{evidence.outside_anterior_ml:g} ml in front); the anterior-posterior direction "
            "of the header is probably inverted",
            "Check the CT in a viewer (an axial view must show the spine at the back) and "
            "export it again with a correct orientation, e.g. convert the original DICOM "
            "series with dcm2niix",
            where,
        )
    return evidence
