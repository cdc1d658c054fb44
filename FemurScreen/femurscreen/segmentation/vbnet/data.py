"""Training data: cohort reading, network inputs on world grids, labels, augmentation.

The same functions build the inputs at training and at inference (``coarse_input``,
``fine_grid``), so the networks never see a geometry at inference they were not trained on.

Label convention: 1 = patient's LEFT femur (world +x in LPS), 2 = RIGHT; sides are decided in
world coordinates. The coarse network sees world-aligned grids and predicts sides; mirroring its
input in world x therefore swaps the meaning of 1 and 2 (``flip_world_x``). The fine network
sees one femur at a time, always looking like a left one (right crops are mirrored grids), and
predicts femur vs background.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from femurscreen.errors import InputError
from femurscreen.io.cohort_csv import read_cohort_csv
from femurscreen.labels import LEFT, RIGHT, TISSUES

from .geometry import AIR_HU, Grid, centered_grid, shrink_for, world_grid

log = logging.getLogger(__name__)

COHORT_COLUMNS = ("case_id", "ct", "mask")
_SWAP = np.array([0, RIGHT, LEFT], dtype=np.uint8)  # 0 -> 0, 1 -> 2, 2 -> 1


@dataclass(frozen=True)
class IntensityNorm:
    """HU -> network input: clip to a window that keeps air, soft tissue and bone, then scale."""

    clip_low: float = -1000.0
    clip_high: float = 1800.0
    offset: float = 400.0
    scale: float = 700.0

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        out = np.clip(hu, self.clip_low, self.clip_high, dtype=np.float32)
        out -= self.offset
        out /= self.scale
        return out

    def to_dict(self) -> dict:
        return {"kind": "clip_scale_hu", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> IntensityNorm:
        return cls(*(float(d[k]) for k in ("clip_low", "clip_high", "offset", "scale")))


# ---------------------------------------------------------------- labels and mirroring


def swap_sides(labels: np.ndarray) -> np.ndarray:
    """1 <-> 2: what a world-side label must do when its image is mirrored in world x."""
    return _SWAP[labels]


def flip_world_x(
    image_zyx: np.ndarray, labels_zyx: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mirror arrays on a world-aligned grid in world x, swapping LEFT/RIGHT labels.

    After the mirror the femur at world +x is the one that was at -x, i.e. the former RIGHT
    femur: with labels defined by world side it must now carry LEFT (1), hence the swap.
    Valid only for grids whose direction is the identity (``world_grid``).
    """
    image = np.ascontiguousarray(image_zyx[..., ::-1])
    if labels_zyx is None:
        return image, None
    return image, swap_sides(np.ascontiguousarray(labels_zyx[..., ::-1]))


def labels_on_grid(
    mask: sitk.Image,
    grid: Grid,
    labels: tuple[int, ...],
    transform: sitk.Transform | None = None,
    shrink_to: float | None = None,
) -> np.ndarray:
    """Resample a label map: each label's occupancy linearly, then the winner above 0.5.

    Nearest-neighbour would drop or thicken thin parts (the femoral neck at 5 mm) at random;
    occupancy fractions keep the label where the structure fills most of the voxel.
    Output values are the given ``labels`` (1-based positions map to them), 0 elsewhere.
    """
    fractions = []
    for value in labels:
        binary = sitk.Cast(sitk.Equal(mask, int(value)), sitk.sitkFloat32)
        if shrink_to:
            binary = shrink_for(binary, shrink_to)
        img = grid.resample(binary, sitk.sitkLinear, 0.0, sitk.sitkFloat32, transform)
        fractions.append(sitk.GetArrayFromImage(img))
    stack = np.stack(fractions)
    best = stack.argmax(axis=0)
    out = np.asarray(labels, dtype=np.uint8)[best]
    out[stack.max(axis=0) < 0.5] = 0
    return out


def side_centroid(mask: sitk.Image, side: int) -> np.ndarray | None:
    """World centroid of one label, or None when absent."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask, sitk.sitkUInt8))
    if side not in stats.GetLabels():
        return None
    return np.asarray(stats.GetCentroid(side), float)


# ---------------------------------------------------------------- network inputs


def coarse_grid(image: sitk.Image, spacing: float) -> Grid:
    """The world-aligned coarse grid over a whole CT (sizes multiple of 16)."""
    return world_grid(image, spacing, multiple=16)


def coarse_input(
    image: sitk.Image, spacing: float, grid: Grid | None = None, transform=None
) -> tuple[np.ndarray, Grid]:
    """The whole CT on the coarse world grid, in HU (float32, z-y-x), and that grid."""
    grid = grid or coarse_grid(image, spacing)
    img = grid.resample(shrink_for(image, min(grid.spacing)), transform=transform)
    return sitk.GetArrayFromImage(img), grid


FINE_CROP_XYZ = (112, 96, 160)  # voxels; at 1 mm: femoral head to ~9 cm below the centroid
FINE_CROP_OFFSET_MM = (0.0, 0.0, -10.0)  # the centroid sits high in the proximal femur


def fine_grid(
    center: np.ndarray,
    crop_xyz: tuple[int, int, int],
    spacing: float,
    side: int,
    offset_mm: tuple[float, float, float] = FINE_CROP_OFFSET_MM,
) -> Grid:
    """The fine crop around one hip; mirrored for the RIGHT side so it looks like a left one.

    ``offset_mm`` moves the crop from the femur's centroid, with x measured laterally (toward
    world +x for the left femur, -x for the right one) so both sides get the same crop.
    """
    sign = -1.0 if side == RIGHT else 1.0
    shift = np.array([sign * offset_mm[0], offset_mm[1], offset_mm[2]])
    return centered_grid(
        np.asarray(center, float) + shift, crop_xyz, (spacing,) * 3, mirror=(side == RIGHT)
    )


# ---------------------------------------------------------------- cohort


@dataclass
class Case:
    """One training case held in memory, with what the samplers need precomputed."""

    case_id: str
    ct: sitk.Image
    mask: sitk.Image
    centroids: dict[int, np.ndarray] = field(default_factory=dict)
    femur_points: dict[int, np.ndarray] = field(default_factory=dict)  # world (N, 3)
    # tissue label map (femurscreen.labels.TISSUES) of a phantom, when the cohort
    # has a 'tissue' column: what per-tissue appearance randomisation redraws
    tissue: sitk.Image | None = None
    _binaries: dict[int, sitk.Image] = field(default_factory=dict, repr=False)

    def side_binary(self, side: int) -> sitk.Image:
        """0/1 image of one femur (kept: every crop of the side resamples it)."""
        if side not in self._binaries:
            self._binaries[side] = sitk.Equal(self.mask, int(side))
        return self._binaries[side]


@dataclass
class Cohort:
    path: Path
    rows: list[dict[str, str]]
    synthetic: bool


def read_cohort(csv_path: str | Path) -> Cohort:
    """Rows of a cohort CSV (case_id, ct, mask; paths relative to the CSV's folder).

    A cohort counts as synthetic when it says so: a ``synthetic`` column that is true for every
    row, or a JSON file beside the CSV (same stem, or ``phantoms.json``/``manifest.json``)
    holding ``"synthetic": true``.
    """
    table = read_cohort_csv(csv_path, COHORT_COLUMNS)
    path, columns, rows = table.path, table.columns, table.rows
    synthetic = bool(columns and "synthetic" in columns) and all(
        str(r.get("synthetic", "")).strip().lower() in {"1", "true", "yes"} for r in rows
    )
    for sidecar in (
        path.with_suffix(".json"),
        path.parent / "phantoms.json",
        path.parent / "manifest.json",
    ):
        if not synthetic and sidecar.is_file():
            with contextlib.suppress(ValueError, AttributeError, OSError):
                synthetic = bool(json.loads(sidecar.read_text(encoding="utf-8")).get("synthetic"))
    return Cohort(path, rows, synthetic)


def _read_image(path: Path, what: str) -> sitk.Image:
    if not path.is_file():
        raise InputError(f"{what} file of the cohort not found", "check the cohort CSV", path=path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read the {what} image", "check the file", path=path) from exc


def load_case(row: dict[str, str], base: Path, max_points: int = 4000) -> Case:
    """Read one cohort row and check the mask fits the CT and its sides are world-correct."""
    ct_path, mask_path = base / row["ct"], base / row["mask"]
    ct = _read_image(ct_path, "CT")
    if ct.GetPixelID() not in (sitk.sitkInt16, sitk.sitkFloat32):
        ct = sitk.Cast(ct, sitk.sitkFloat32)
    mask = sitk.Cast(_read_image(mask_path, "mask"), sitk.sitkUInt8)
    if mask.GetSize() != ct.GetSize() or not np.allclose(
        mask.GetSpacing(), ct.GetSpacing(), atol=1e-3
    ):
        raise InputError("mask does not share the CT's grid", "resample the mask", path=mask_path)
    mask.CopyInformation(ct)
    arr = sitk.GetArrayViewFromImage(mask)
    values = set(np.unique(arr).tolist())
    if not values <= {0, LEFT, RIGHT}:
        raise InputError(f"mask values {sorted(values)} are not 0/1/2", "fix the mask", mask_path)
    tissue = None
    if (row.get("tissue") or "").strip():
        tissue_path = base / row["tissue"]
        tissue = sitk.Cast(_read_image(tissue_path, "tissue map"), sitk.sitkUInt8)
        if tissue.GetSize() != ct.GetSize():
            raise InputError(
                "tissue map does not share the CT's grid", "write it with the CT", tissue_path
            )
        tissue.CopyInformation(ct)
    case = Case(row["case_id"], ct, mask, tissue=tissue)
    grid = Grid.of(mask)
    rng = np.random.default_rng(0)
    for side in (LEFT, RIGHT):
        idx = np.argwhere(arr == side)  # z, y, x
        if len(idx) == 0:
            continue
        if len(idx) > max_points:
            idx = idx[rng.choice(len(idx), max_points, replace=False)]
        points = grid.index_to_world(idx[:, ::-1].astype(float))
        case.femur_points[side] = points
        centroid = side_centroid(mask, side)
        assert centroid is not None  # the side has voxels (checked above)
        case.centroids[side] = centroid
    sides = case.centroids
    if LEFT in sides and RIGHT in sides and sides[LEFT][0] <= sides[RIGHT][0]:
        raise InputError(
            "label 1 (patient's left femur) lies at smaller world x than label 2: the mask's "
            "sides are swapped or the CT's direction matrix is wrong",
            "label the patient's left femur 1 (world +x in LPS) and the right one 2",
            path=mask_path,
        )
    return case


# ---------------------------------------------------------------- augmentation


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    a = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_affine(
    rng: np.random.Generator,
    center: np.ndarray,
    max_deg: float,
    scale: tuple[float, float],
    p: float = 0.7,
) -> sitk.AffineTransform | None:
    """Small rotation and isotropic scale about ``center`` (grid -> image), or None."""
    if rng.random() >= p:
        return None
    matrix = _rotation(rng, max_deg) * rng.uniform(*scale)
    t = sitk.AffineTransform(3)
    t.SetMatrix(matrix.ravel().tolist())
    t.SetCenter(tuple(float(c) for c in center))
    return t


def coarser_source(image: sitk.Image, rng: np.random.Generator, xy: tuple, z: tuple) -> sitk.Image:
    """The CT as a scanner with coarser pixels/slices would have given it (spacing jitter)."""
    old = np.asarray(image.GetSpacing())
    new = np.maximum(old, [rng.uniform(*xy), 0.0, rng.uniform(*z)])
    new[1] = max(old[1], new[0] * old[1] / old[0])
    size = np.maximum(1, np.round(np.asarray(image.GetSize()) * old / new)).astype(int)
    src = Grid.of(image)
    first, last = (
        src.index_to_world(np.zeros((1, 3)))[0],
        src.index_to_world((np.asarray(image.GetSize()) - 1)[None, :].astype(float))[0],
    )
    center = (first + last) / 2
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = center - direction @ ((size - 1) / 2 * new)
    grid = Grid.make(size, new, origin, image.GetDirection())
    return grid.resample(shrink_for(image, float(new.min())))


def augment_intensity(
    hu: np.ndarray, rng: np.random.Generator, norm: IntensityNorm, spacing: float
) -> np.ndarray:
    """Domain randomisation in HU: calibration offset/scale, gamma, blur (in mm), noise.

    Real CT differs from the phantoms in scanner calibration (tens of HU), kernel sharpness and
    dose (noise); randomising these keeps the networks from keying on one rendering.
    """
    out = hu.astype(np.float32, copy=True)
    if rng.random() < 0.8:
        out *= rng.uniform(0.9, 1.1)
        out += rng.uniform(-50.0, 50.0)
    if rng.random() < 0.3:
        lo, hi = norm.clip_low, norm.clip_high
        t = np.clip((out - lo) / (hi - lo), 0.0, 1.0)
        out = lo + (hi - lo) * t ** math.exp(rng.uniform(-0.3, 0.3))
    if rng.random() < 0.3:
        sigma_mm = rng.uniform(0.3, 1.5)  # reconstruction kernel: soft to sharp
        if sigma_mm / spacing > 0.2:
            out = ndimage.gaussian_filter(out, sigma_mm / spacing)
    if rng.random() < 0.6:
        out += rng.normal(0.0, rng.uniform(5.0, 60.0), out.shape).astype(np.float32)
    return out


def cut_field_of_view(
    hu: np.ndarray, labels: np.ndarray, rng: np.random.Generator, keep: np.ndarray | None
) -> None:
    """Blank everything outside a random box (air, background): a truncated field of view.

    ``keep`` (a z, y, x voxel) stays inside the box, so most cuts still show a femur.
    """
    shape = np.asarray(hu.shape)
    lo = np.zeros(3, int)
    hi = shape.copy()
    for axis in range(3):
        if rng.random() < 0.5:
            continue
        length = int(shape[axis] * rng.uniform(0.5, 0.9))
        start_max = shape[axis] - length
        if keep is not None:
            k = int(keep[axis])
            start = int(rng.integers(max(0, k - length + 1), min(start_max, k) + 1))
        else:
            start = int(rng.integers(0, start_max + 1))
        lo[axis], hi[axis] = start, start + length
    inside = np.zeros(hu.shape, bool)
    inside[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    hu[~inside] = AIR_HU
    labels[~inside] = 0


def cut_crop_field_of_view(hu: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """A scan that ends inside the femur: below a plane through it (abdominal CT often stops
    at the intertrochanteric level), or lateral of one (a narrow reconstruction circle).

    Works on fine crops, which always look like a LEFT femur: z grows superiorly and x
    laterally, so "below" is low z and "lateral" is high x.
    """
    fg = np.argwhere(labels > 0)
    if len(fg) == 0:
        return
    if rng.random() < 0.7:
        lo, hi = np.percentile(fg[:, 0], [5, 60]).astype(int)
        cut = int(rng.integers(lo, hi + 1))
        hu[:cut] = AIR_HU
        labels[:cut] = 0
    else:
        lo, hi = np.percentile(fg[:, 2], [60, 95]).astype(int)
        cut = int(rng.integers(lo, hi + 1))
        hu[..., cut:] = AIR_HU
        labels[..., cut:] = 0


# ---------------------------------------------------------------- samplers


@dataclass
class CoarseSampler:
    """Whole-CT samples on the coarse world grid, labelled 0 / LEFT / RIGHT."""

    spacing: float = 5.0
    norm: IntensityNorm = field(default_factory=IntensityNorm)

    def pair(self, case: Case, rng: np.random.Generator | None = None):
        """(input z-y-x float32, labels z-y-x uint8); augmented when ``rng`` is given."""
        if rng is None:
            hu, grid = coarse_input(case.ct, self.spacing)
            labels = labels_on_grid(case.mask, grid, (LEFT, RIGHT), shrink_to=self.spacing)
            return self.norm(hu), labels
        source = case.ct
        if rng.random() < 0.3:  # spacing jitter: scanners from 0.7 mm to 5 mm slices
            source = coarser_source(source, rng, (0.7, 3.0), (1.0, 5.0))
        spacing = self.spacing * rng.uniform(0.9, 1.1)
        grid = coarse_grid(case.ct, spacing)
        center = grid.index_to_world((np.asarray(grid.size)[None, :] - 1) / 2)[0]
        transform = random_affine(rng, center, 10.0, (1.0, 1.0))
        hu, _ = coarse_input(source, spacing, grid, transform)
        labels = labels_on_grid(case.mask, grid, (LEFT, RIGHT), transform, shrink_to=spacing)
        hu = augment_intensity(hu, rng, self.norm, spacing)
        if rng.random() < 0.3:
            fg = np.argwhere(labels > 0)
            keep = fg[rng.integers(len(fg))] if len(fg) and rng.random() < 2 / 3 else None
            cut_field_of_view(hu, labels, rng, keep)
        if rng.random() < 0.5:
            hu, flipped = flip_world_x(hu, labels)
            assert flipped is not None  # labels were given
            labels = flipped
        return self.norm(hu), labels


HEAD_TOP_SHARE = 0.2  # FineSampler.head_p: the top fifth of the femur label is the head


@dataclass
class FineSampler:
    """Crops around one proximal femur at ~1 mm, right ones mirrored; labels 0/1 (femur)."""

    crop_xyz: tuple[int, int, int] = FINE_CROP_XYZ
    spacing: float = 1.0
    norm: IntensityNorm = field(default_factory=IntensityNorm)
    offset_mm: tuple[float, float, float] = FINE_CROP_OFFSET_MM
    center_jitter_mm: float = 6.0
    synth_p: float = 0.7  # per-tissue appearance redrawn (cases with a tissue map only)
    deform_p: float = 0.5  # smooth random deformation on top of the affine
    bias_p: float = 0.5  # smooth multiplicative bias field
    coarser_p: float = 0.6  # coarser scanner voxels (partial volume), 1-3.5 mm x 1-5 mm
    # share of crops centred on the femoral head (a femur point in the top HEAD_TOP_SHARE of
    # the femur's height): small fine-tuning crops must hold the joint, where real CT leaks
    head_p: float = 0.0

    def pair(self, case: Case, side: int, rng: np.random.Generator | None = None):
        """(input z-y-x float32, labels z-y-x uint8) for one side of one case."""
        center = case.centroids[side]
        if rng is None:
            return self._sample(case, side, center, None)
        if self.head_p > 0 and rng.random() < self.head_p:
            points = case.femur_points[side]
            top = points[points[:, 2] >= np.quantile(points[:, 2], 1.0 - HEAD_TOP_SHARE)]
            center = top[rng.integers(len(top))] + rng.normal(0.0, self.center_jitter_mm, 3)
            return self._sample(case, side, center, rng)
        u = rng.random()
        if u < 0.5:  # where inference puts it: the coarse centroid, give or take
            center = center + rng.normal(0.0, self.center_jitter_mm, 3)
        elif u < 5 / 6:  # foreground-aware: centred on a random femur voxel
            points = case.femur_points[side]
            center = points[rng.integers(len(points))]
        else:  # anywhere near the hip, femur partly out of the crop
            half = np.asarray(self.crop_xyz) * self.spacing / 3
            center = center + rng.uniform(-half, half)
        return self._sample(case, side, center, rng)

    def _sample(self, case: Case, side: int, center: np.ndarray, rng):
        grid = fine_grid(center, self.crop_xyz, self.spacing, side, self.offset_mm)
        center = grid.index_to_world((np.asarray(grid.size)[None, :] - 1) / 2)[0]
        transform = None if rng is None else random_affine(rng, center, 12.0, (0.9, 1.1))
        warp = None
        if rng is not None and rng.random() < self.deform_p:
            warp = random_warp(grid.shape, rng, self.spacing)
        hu = sitk.GetArrayFromImage(grid.resample(case.ct, transform=transform))
        if warp is not None:
            hu = ndimage.map_coordinates(hu, warp, order=1, mode="nearest")
        synth = False
        if rng is not None and case.tissue is not None and rng.random() < self.synth_p:
            tissue = sitk.GetArrayFromImage(
                grid.resample(case.tissue, sitk.sitkNearestNeighbor, 0.0, sitk.sitkUInt8, transform)
            )
            if warp is not None:
                tissue = ndimage.map_coordinates(tissue, warp, order=0, mode="nearest")
            hu = synth_appearance(hu, tissue, rng)
            synth = True
        if rng is not None and rng.random() < self.bias_p:
            hu = bias_field(hu, rng)
        if rng is not None and rng.random() < self.coarser_p:
            hu = coarser_scan(hu, rng, self.spacing)
        image = grid.resample(
            case.side_binary(side), sitk.sitkLinear, 0.0, sitk.sitkFloat32, transform
        )
        fraction = sitk.GetArrayFromImage(image)
        if warp is not None:
            fraction = ndimage.map_coordinates(fraction, warp, order=1, mode="nearest")
        labels = (fraction >= 0.5).astype(np.uint8)
        if rng is not None:
            hu = augment_intensity(hu, rng, self.norm, self.spacing)
            if not synth and rng.random() < 0.5:
                hu = bone_contrast(hu, rng)
            if rng.random() < 0.2:
                cut_crop_field_of_view(hu, labels, rng)
        return self.norm(hu), labels


def bone_contrast(
    hu: np.ndarray, rng: np.random.Generator, scale: tuple[float, float] = (0.55, 1.1)
) -> np.ndarray:
    """Bone brighter or dimmer than the phantoms' against unchanged soft tissue.

    On the real 3 mm sample CT the femoral cortex reads 200-450 HU where the phantoms' reads
    330-640 (partial volume, kernel, an elderly femur): the network must not need bright cortex
    to tell the femur from the acetabulum.
    """
    soft = 60.0
    out = hu.astype(np.float32, copy=True)
    above = out > soft
    out[above] = soft + (out[above] - soft) * rng.uniform(*scale)
    return out


def coarser_scan(
    hu: np.ndarray,
    rng: np.random.Generator,
    spacing: float,
    in_plane: tuple[float, float] = (1.0, 3.5),
    slices: tuple[float, float] = (1.0, 5.0),
) -> np.ndarray:
    """A crop as a scan with coarser voxels would show it, brought back to the crop grid.

    A scanner's voxel averages its footprint (partial volume) before it is sampled; the real
    sample CT is 3 mm isotropic. Blurring with a Gaussian whose FWHM makes up the difference,
    sampling on the coarse lattice and interpolating linearly back to 1 mm is what inference
    does to such a CT.
    """
    new = np.array([rng.uniform(*slices), rng.uniform(*in_plane), rng.uniform(*in_plane)])
    new = np.maximum(new, spacing)  # z, y, x
    sigma = np.sqrt(np.maximum(new**2 - spacing**2, 0.0)) / 2.355 / spacing
    out = ndimage.gaussian_filter(hu.astype(np.float32, copy=False), sigma, mode="nearest")
    small = np.maximum(2, np.round(np.asarray(hu.shape) * spacing / new)).astype(int)
    low = ndimage.zoom(out, small / np.asarray(hu.shape), order=1, mode="nearest")
    return ndimage.zoom(low, np.asarray(hu.shape) / np.asarray(low.shape), order=1, mode="nearest")


# ---------------------------------------------------------------- appearance randomisation

# Tissue labels of a phantom's tissue map (one table for the renderer and training)
TISSUE_IDS = TISSUES
# mean HU ranges each tissue's intensity is drawn from per case (bone: interior, then the cortex
# above it); wide on purpose: the network must find the femur by shape and context
SYNTH_RANGES_HU = {
    "air": (-1024.0, -900.0),
    "fat": (-200.0, -30.0),
    "soft": (-30.0, 100.0),
    "dense_soft": (60.0, 400.0),
    "trabecular": (30.0, 450.0),
    "cortex_above_trabecular": (60.0, 900.0),
}
SYNTH_CONTRAST = (0.4, 1.6)  # scale of each tissue's own texture about its mean
SYNTH_SAME_BONE_P = 0.6  # pelvis and femur drawn alike (as on real CT) in this share of cases


def _bone_draw(rng: np.random.Generator) -> tuple[float, float, float, float]:
    trab = rng.uniform(*SYNTH_RANGES_HU["trabecular"])
    cortex = trab + rng.uniform(*SYNTH_RANGES_HU["cortex_above_trabecular"])
    return trab, float(rng.uniform(*SYNTH_CONTRAST)), cortex, float(rng.uniform(*SYNTH_CONTRAST))


def synth_appearance(hu: np.ndarray, tissue: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SynthSeg-style appearance (Billot et al. 2023): a random intensity per tissue per case.

    Each tissue's voxels are moved to a mean drawn for this sample and their own texture
    (trabecular network, noise-free partial volume) scaled about it, so the femur and the pelvis
    may look alike, or either brighter, and the network cannot find the joint by intensity.
    Metal keeps its HU. A small blur softens the seams between relabelled tissues; partial
    volume and noise come after (``coarser_scan``, ``augment_intensity``).
    """
    out = hu.astype(np.float32, copy=True)
    femur = _bone_draw(rng)
    pelvis = femur if rng.random() < SYNTH_SAME_BONE_P else _bone_draw(rng)
    spine = _bone_draw(rng)
    draws: dict[int, tuple[float, float]] = {}
    for name in ("air", "fat", "soft", "dense_soft"):
        draws[TISSUE_IDS[name]] = (
            float(rng.uniform(*SYNTH_RANGES_HU[name])),
            float(rng.uniform(*SYNTH_CONTRAST)),
        )
    for bone, d in (("femur", femur), ("pelvis", pelvis), ("spine", spine)):
        draws[TISSUE_IDS[f"{bone}_trabecular"]] = (d[0], d[1])
        draws[TISSUE_IDS[f"{bone}_cortex"]] = (d[2], d[3])
    flat_t = tissue.reshape(-1)
    flat_in = hu.reshape(-1)
    flat_out = out.reshape(-1)
    order = np.argsort(flat_t, kind="stable")
    bounds = np.searchsorted(flat_t[order], np.arange(len(TISSUE_IDS) + 1))
    for label, (mean, contrast) in draws.items():
        idx = order[bounds[label] : bounds[label + 1]]
        if idx.size == 0:
            continue
        values = flat_in[idx]
        flat_out[idx] = np.float32(mean) + np.float32(contrast) * (values - values.mean())
    return ndimage.gaussian_filter(out, float(rng.uniform(0.3, 0.8)), mode="nearest")


def bias_field(
    hu: np.ndarray, rng: np.random.Generator, sd: tuple[float, float] = (0.01, 0.06)
) -> np.ndarray:
    """A smooth multiplicative field on the attenuation (HU + 1000): cupping and beam
    hardening shift soft tissue by tens of HU and bone a little more; air stays air."""
    coarse = rng.normal(0.0, rng.uniform(*sd), (4, 4, 4))
    field_ = _smooth_up(coarse, hu.shape)
    return ((hu + np.float32(1000.0)) * np.exp(field_)) - np.float32(1000.0)


def _smooth_up(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A few control values spread smoothly (linearly) over an array of ``shape``, float32."""
    axes = [
        np.linspace(0.0, n_c - 1.0, n, dtype=np.float32)
        for n_c, n in zip(coarse.shape, shape, strict=True)
    ]
    coords = np.meshgrid(*axes, indexing="ij", sparse=False)
    return ndimage.map_coordinates(coarse.astype(np.float32), coords, order=1, mode="nearest")


def random_warp(
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    spacing: float,
    sd_mm: tuple[float, float] = (1.0, 3.0),
    points: int = 4,
) -> np.ndarray:
    """Sampling coordinates (3, z, y, x) of a smooth random deformation of a crop.

    Displacements of ``points``^3 control values (sd drawn in ``sd_mm``) spread linearly over
    the crop: shapes vary by a few millimetres (head sphericity, neck length, cup depth), so the
    network learns the femur's shape family rather than the phantom's analytic primitives.
    Applied to image, tissue map and label alike (``ndimage.map_coordinates``).
    """
    sd = rng.uniform(*sd_mm) / spacing
    base = np.indices(shape, dtype=np.float32)
    for axis in range(3):
        base[axis] += _smooth_up(rng.normal(0.0, sd, (points,) * 3), shape)
    return base
