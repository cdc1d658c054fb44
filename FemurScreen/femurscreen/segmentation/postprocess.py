"""Post-processing shared by every engine: one clean component per side, cut at a fixed level.

Per side (1 = patient's left, 2 = patient's right):
1. keep the largest connected component (face connectivity);
2. fill holes, in 3-D and in every axial slice (the marrow space belongs to the femur);
3. add metal that lies in or against the femur: the label covers the femur as it is in the
   scan, implant included (the ``implant`` flag then keeps it from being graded);
4. cut at the anatomical level of the label definition: the proximal femur runs from the top of
   the femoral head to an axial plane ``CUT_BELOW_LESSER_TROCHANTER_MM`` below the lowest
   point of the lesser trochanter. Without the cut, two scans of one patient with different
   fields of view would give different regions of interest.

Finding the lesser trochanter from a mask: the axial cross-sectional area profile (world z,
smoothed with sigma 2 mm, as in FEMURA). Below the trochanters the femur is a shaft whose area
changes slowly; the lesser trochanter adds a bump on its postero-medial side. A straight line
fitted to the lowest 20 mm of the profile is the shaft baseline; going up from there, the first
level where the area rises clearly above that baseline (by 12 % of the shaft area, and stays
above it up to the trochanteric region) is the bottom of the lesser trochanter.

Field of view (see ``flags`` for how these become a side's status):
- ``truncated``: the mask touches the image border where it matters: the top face (head cut
  off), any in-plane face (part of the femur outside the reconstructed field), or the bottom
  face within ``HEAD_NECK_EXTENT_MM`` of the head top (the scan ends inside the head or neck);
- ``distal_fov_short``: the scan ends below the head and neck but above the cut level, so the
  anatomical cut cannot be made and nothing is cut. The head, neck and trochanteric region
  are in view, so this side can still be graded; its ROI is shorter than the definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from femurscreen.hu import METAL_HU
from femurscreen.labels import SIDE_NAMES

METAL_MARGIN_MM = 15.0  # an implant may reach this far beyond the femur mask's box
HEAD_NECK_EXTENT_MM = 50.0  # a bottom border closer than this to the head top cuts head/neck
PROFILE_SIGMA_MM = 2.0
BASELINE_LENGTH_MM = 20.0
LT_EXCESS_FRACTION = 0.12  # area above the shaft baseline that marks the lesser trochanter
MIN_LT_BELOW_TOP_MM = 45.0  # the lesser trochanter lies well below the head top
MAX_PROFILE_MM = 170.0  # head top to lesser trochanter is about 80-110 mm


def _cut_distance() -> tuple[float, str]:
    """The label definition's cut distance, shared with the phantom generator when present."""
    for module in ("femurscreen.phantom", "femurscreen.phantom.anatomy"):
        try:
            mod = __import__(module, fromlist=["PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM"])
            return float(mod.PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM), module
        except (ImportError, AttributeError):
            continue
    return 50.0, "default"


CUT_BELOW_LESSER_TROCHANTER_MM, CUT_SOURCE = _cut_distance()


@dataclass
class SideGeometry:
    """What post-processing learned about one side (world z in mm, LPS)."""

    found: bool = False
    head_top_z: float | None = None
    lesser_trochanter_z: float | None = None  # lowest point (estimate)
    cut_z: float | None = None  # the plane actually applied, None when nothing was cut
    touches: list[str] = field(default_factory=list)  # "top", "bottom", "in_plane"
    flags: list[str] = field(default_factory=list)  # "truncated", "distal_fov_short"
    metal_added_ml: float = 0.0
    box: tuple[slice, ...] | None = None  # index box (z, y, x) that holds the side's voxels
    voxels: int = 0


def postprocess(
    labels: sitk.Image, ct: sitk.Image | None = None
) -> tuple[sitk.Image, dict[int, SideGeometry]]:
    """Clean, complete and cut each side of a 0/1/2 label image (same geometry in and out).

    Work happens in each side's bounding box (plus a margin for implants), so a
    512 x 512 x 300 label map costs little more than its two femurs.
    """
    array = sitk.GetArrayViewFromImage(labels)
    ct_array = None if ct is None else sitk.GetArrayViewFromImage(ct)
    frame = _Frame(labels)
    out = np.zeros(array.shape, dtype=np.uint8)
    info: dict[int, SideGeometry] = {}
    margin = [int(np.ceil(METAL_MARGIN_MM / s)) for s in frame.spacing[::-1]]
    for value in SIDE_NAMES:
        geo = SideGeometry()
        info[value] = geo
        box = bounding_box(array == value, margin)
        if box is None:
            continue
        sub = np.asarray(array[box]) == value
        sub = largest_component(sub)
        sub = fill_holes(sub, frame.slice_axis)
        if ct_array is not None:
            before = int(sub.sum())
            sub = add_adjacent_metal(sub, np.asarray(ct_array[box]) > METAL_HU)
            geo.metal_added_ml = (int(sub.sum()) - before) * frame.voxel_ml
        sub &= out[box] == 0
        _cut(sub, box, frame, geo)
        if sub.any():
            geo.found = True
            geo.box = box
            geo.voxels = int(sub.sum())
            out[box][sub] = value
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(labels)
    return result, info


def bounding_box(mask: np.ndarray, margin: list[int] | int = 0) -> tuple[slice, ...] | None:
    """Index box (z, y, x slices) around a mask, widened by ``margin`` voxels; None if empty."""
    if isinstance(margin, int):
        margin = [margin] * mask.ndim
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        lo = max(int(hit[0]) - margin[axis], 0)
        hi = min(int(hit[-1]) + margin[axis] + 1, mask.shape[axis])
        box.append(slice(lo, hi))
    return tuple(box)


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray, slice_axis: int) -> np.ndarray:
    """3-D hole filling, then 2-D filling in every slice across ``slice_axis`` (axial)."""
    from femurscreen.segmentation.classical.femur import fill_slice_holes

    return fill_slice_holes(ndi.binary_fill_holes(mask), None, slice_axis)


def add_adjacent_metal(mask: np.ndarray, metal: np.ndarray) -> np.ndarray:
    """Add metal components that lie mostly in or against the femur (within two voxels)."""
    if not metal.any():
        return mask
    lab, n = ndi.label(metal, structure=np.ones((3, 3, 3), dtype=bool))
    near = ndi.binary_dilation(mask, iterations=2)
    total = np.bincount(lab.ravel(), minlength=n + 1)
    close = np.bincount(lab[near], minlength=n + 1)
    keep = (close >= 0.2 * total) & (close > 0)
    keep[0] = False
    return mask | keep[lab] if keep.any() else mask


class _Frame:
    """World z of voxels and the array axis closest to world z, for any direction matrix."""

    def __init__(self, image: sitk.Image) -> None:
        self.direction = np.array(image.GetDirection()).reshape(3, 3)
        self.spacing = np.array(image.GetSpacing())
        self.origin = np.array(image.GetOrigin())
        self.size = np.array(image.GetSize())
        self.voxel_ml = float(np.prod(self.spacing)) / 1000.0
        # world z = origin_z + sum_i D[2, i] * spacing_i * index_i   (i over x, y, z index)
        self.z_step = self.direction[2] * self.spacing  # per index step along x, y, z
        k = int(np.argmax(np.abs(self.z_step)))  # image axis (x=0, y=1, z=2) most along world z
        self.slice_axis = 2 - k  # numpy axis (z, y, x order)
        self.slice_step_mm = float(abs(self.z_step[k]))
        self.up = bool(self.z_step[k] > 0)  # index increases toward the head

    def world_z(self, zyx: np.ndarray) -> np.ndarray:
        """World z of array indices (n, 3: z, y, x)."""
        return self.origin[2] + zyx[:, ::-1] @ self.z_step

    @property
    def voxel_area_mm2(self) -> float:
        return float(np.prod(self.spacing)) / self.slice_step_mm


def area_profile(
    z: np.ndarray, frame: _Frame, bin_mm: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Axial cross-sectional area (mm^2) per world-z bin, smoothed with sigma 2 mm.

    ``z``: world z of the mask's voxels. Returns (bin centres z, area). Works for oblique
    files: voxels are binned by world z and a voxel's volume spread over its own slice step,
    so the profile does not depend on the file's slice thickness or direction matrix.
    """
    step = max(bin_mm, 1e-3)
    lo, hi = float(z.min()) - frame.slice_step_mm, float(z.max()) + frame.slice_step_mm
    edges = np.arange(lo, hi + step, step)
    # spread each voxel evenly over [z - step/2, z + step/2] by sub-sampling its extent
    subs = max(1, int(np.ceil(frame.slice_step_mm / step)))
    offsets = (np.arange(subs) + 0.5) / subs - 0.5
    counts = np.zeros(len(edges) - 1)
    for off in offsets:
        counts += np.histogram(z + off * frame.slice_step_mm, bins=edges)[0]
    vol_mm3 = counts / subs * float(np.prod(frame.spacing))
    area = vol_mm3 / step
    area = ndi.gaussian_filter1d(area, PROFILE_SIGMA_MM / step, mode="constant")
    return 0.5 * (edges[:-1] + edges[1:]), area


def lesser_trochanter_bottom(z: np.ndarray, area: np.ndarray, head_top: float) -> float | None:
    """World z of the lesser trochanter's lowest point from an area profile, or None.

    Only the top ``MAX_PROFILE_MM`` of the femur are looked at, so that a mask reaching down
    the shaft (or to the knee) still has its baseline on the proximal shaft.
    """
    present = (area > 0.05 * area.max()) & (z >= head_top - MAX_PROFILE_MM)
    if present.sum() < 10:
        return None
    zs, a = z[present], area[present]
    bottom = float(zs.min()) + 2.0 * PROFILE_SIGMA_MM  # the smoothed profile's fading edge
    base = (zs >= bottom) & (zs <= bottom + BASELINE_LENGTH_MM)
    if base.sum() < 5 or head_top - bottom < MIN_LT_BELOW_TOP_MM + BASELINE_LENGTH_MM:
        return None
    slope, intercept = np.polyfit(zs[base], a[base], 1)
    shaft = float(np.median(a[base]))
    if shaft <= 0:
        return None
    excess = a - (slope * zs + intercept)
    above = (zs > bottom + BASELINE_LENGTH_MM) & (zs <= head_top - MIN_LT_BELOW_TOP_MM)
    high = above & (excess > LT_EXCESS_FRACTION * shaft)
    if not high.any():
        return None
    # lowest level from which the excess stays high all the way up the search range
    order = np.where(above)[0]
    run_start = None
    for i in order[::-1]:
        if high[i]:
            run_start = i
        elif run_start is not None:
            break
    return float(zs[run_start]) if run_start is not None else None


def _touches(
    mask: np.ndarray, box: tuple[slice, ...], frame: _Frame, geo: SideGeometry
) -> np.ndarray | None:
    """Record which image faces the mask touches; returns world z of bottom-face contacts."""
    bottom_z = None
    full_shape = tuple(int(n) for n in frame.size[::-1])
    for axis in range(3):
        for end, at_face in ((0, box[axis].start == 0), (-1, box[axis].stop == full_shape[axis])):
            if not at_face:
                continue
            index = mask.shape[axis] - 1 if end == -1 else 0
            face = np.take(mask, index, axis=axis)
            if not face.any():
                continue
            if axis != frame.slice_axis:
                if "in_plane" not in geo.touches:
                    geo.touches.append("in_plane")
                continue
            if (end == -1) == frame.up:
                geo.touches.append("top")
            else:
                geo.touches.append("bottom")
                idx = np.insert(np.argwhere(face), axis, index, axis=1)
                bottom_z = frame.world_z(idx + _starts(box))
    return bottom_z


def _starts(box: tuple[slice, ...]) -> np.ndarray:
    return np.array([b.start for b in box])


def _cut(mask: np.ndarray, box: tuple[slice, ...], frame: _Frame, geo: SideGeometry) -> None:
    """Apply the anatomical cut in place (``mask`` is the side's box) and set FOV flags.

    Border contacts are judged on what is kept: a shaft that leaves the image below the cut
    level does not make the region of interest incomplete.
    """
    if not mask.any():
        return
    zyx = np.argwhere(mask)
    vz = frame.world_z(zyx + _starts(box))
    geo.head_top_z = float(vz.max())
    z, area = area_profile(vz, frame)
    lt = lesser_trochanter_bottom(z, area, geo.head_top_z)
    geo.lesser_trochanter_z = lt
    if lt is not None:
        cut = lt - CUT_BELOW_LESSER_TROCHANTER_MM
        if cut > float(vz.min()) + 0.5 * frame.slice_step_mm:
            geo.cut_z = cut
            mask[tuple(zyx[vz < cut].T)] = False
    bottom_contacts = _touches(mask, box, frame, geo)
    if "top" in geo.touches or "in_plane" in geo.touches:
        geo.flags.append("truncated")
    elif bottom_contacts is not None:
        if bottom_contacts.max() > geo.head_top_z - HEAD_NECK_EXTENT_MM:
            geo.flags.append("truncated")  # the scan ends inside the head or neck
        elif geo.cut_z is None:
            geo.flags.append("distal_fov_short")
