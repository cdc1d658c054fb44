"""Wrong-bone guard: is a side's mask a proximal femur (head, neck, trochanteric region)?

Every engine's mask passes through here after post-processing, so the same anatomical test
protects the classical engine, the VB-Net and anything added later. Grading the wrong bone
(an iliac wing, an acetabulum, a femoral head without its neck) with a confident class is the
worst thing the product can do, so a side is graded only when its mask shows, in world
coordinates (LPS, any direction matrix):

- a **head**: the top of the mask is a solid, sphere-like ball of human size (fitted radius
  ``HEAD_RADIUS_MM``; femoral heads are 18-28 mm, the range is widened by the segmentation's
  own margin on coarse grids). An iliac wing is a plate: its thickest point is far thinner
  than the sphere its surface would fit;
- nothing of the pelvis **above the head**: the acetabular roof lies above the head, so a mask
  that continues more than ``ABOVE_HEAD_MM`` above the fitted sphere into the pelvis has taken
  in the wrong bone (``pelvis_in_mask``);
- a **neck** pointing infero-laterally away from the head toward the shaft, close to the
  coronal plane (femoral anteversion is 5-40 degrees), no wider than the head, and the mask
  reaching laterally well beyond the head (trochanteric region);
- a plausible **extent below the head centre** (``MIN_BELOW_CENTRE_MM``, the neck and the top
  of the trochanteric region). When the scan itself ends before that, the side is
  ``truncated`` ("femoral neck not in view"); when the scan goes on but the mask does not, the
  mask is not a femur;
- when enough shaft is in view, a **neck-shaft angle** and a **head-shaft offset** in human
  ranges (115-145 degrees and 30-55 mm in adults; widened for measurement error).

The mask is first splatted onto a coarse LPS-aligned grid (2-3 mm), so the test costs a few
tens of milliseconds and reads the same for any file orientation or voxel order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

HEAD_RADIUS_MM = (15.0, 32.0)  # human 18-28 mm, widened by the mask's margin on coarse grids
HEAD_FIT_RMS_FRACTION = 0.15  # sphere fit residual (RMS) at most this fraction of the radius
HEAD_SOLID_FRACTION = 0.55  # deepest inscribed ball at least this fraction of the fitted radius
HEAD_SEARCH_MM = 60.0  # the head centre lies within this distance below the mask's top
ABOVE_HEAD_MM = 8.0  # mask this far above the fitted head's top is pelvis, not femur
ABOVE_HEAD_ML = 5.0  # ... and this much of it rejects the mask
MIN_BELOW_CENTRE_MM = 30.0  # head centre to the mask's bottom: neck and trochanteric region
MIN_LATERAL_REACH_MM = 12.0  # beyond the head radius, below the head centre (neck, trochanters)
NECK_SHELL_MM = (4.0, 20.0)  # the neck: mask between these distances outside the head sphere
NECK_PLANE_MM = 6.0  # the neck's width is read this far outside the head sphere
MAX_NECK_RATIO = 1.0  # ... and not wider than the head (human 0.6-0.8; coarse real CT 0.9;
# phantom truth on 2-3 mm grids 0.65-0.73; a mask that misses the head, 1.0-1.04)
MAX_NECK_AP = 0.55  # neck axis near the coronal plane: anteversion up to about 50 degrees
MIN_NECK_LATERAL = 0.3  # neck axis (head -> shaft): lateral component at least this
MAX_NECK_VERTICAL = -0.1  # ... and pointing downward
NECK_SHAFT_ANGLE_DEG = (100.0, 160.0)  # human 115-145 degrees, widened for measurement error
HEAD_SHAFT_OFFSET_MM = (20.0, 70.0)  # human 30-55 mm (head centre to shaft axis)
SHAFT_BELOW_CENTRE_MM = 55.0  # shaft slices start this far below the head centre
MIN_SHAFT_LENGTH_MM = 20.0  # shaft needed to measure the angle and the offset
COVER_FRACTION = 0.35
BOTTOM_TOLERANCE_MM = 4.0  # the mask "reaches the scan's end" within this distance
MIN_SCAN_BELOW_TOP_MM = 60.0  # less room than this below the mask's top: no neck in view


@dataclass
class Anatomy:
    """What the guard measured on one side's mask (world LPS mm) and its verdict."""

    verdict: str = "ok"  # "ok", "not_femur", "neck_not_in_view", "pelvis_in_mask"
    reason: str | None = None
    head_centre: list[float] | None = None
    head_radius_mm: float | None = None
    head_fit_rms_mm: float | None = None
    head_inscribed_mm: float | None = None
    above_head_ml: float | None = None
    below_centre_mm: float | None = None
    scan_below_centre_mm: float | None = None
    scan_height_mm: float = 0.0  # mask top to the scan's end
    lateral_reach_mm: float | None = None
    neck_axis: list[float] | None = None
    neck_ratio: float | None = None  # neck radius / head radius, just outside the head
    neck_shaft_angle_deg: float | None = None
    head_shaft_offset_mm: float | None = None
    checks: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 2 if key == "neck_ratio" else 1)
            elif isinstance(value, list) and key != "checks":
                out[key] = [round(float(v), 2) for v in value]
        return out


@dataclass
class WorldMask:
    """A mask splatted onto an LPS-aligned grid: occupancy (z, y, x) and its geometry."""

    occupied: np.ndarray
    origin: np.ndarray  # world (x, y, z) of voxel (0, 0, 0)
    step: float

    def points(self, mask: np.ndarray | None = None) -> np.ndarray:
        """World (x, y, z) of the voxel centres of ``mask`` (default: the occupancy)."""
        idx = np.argwhere(self.occupied if mask is None else mask)
        return self.origin + idx[:, ::-1] * self.step


def world_mask(
    mask: np.ndarray,
    start_zyx: tuple[int, int, int],
    origin: np.ndarray,
    spacing: np.ndarray,
    direction: np.ndarray,
) -> WorldMask:
    """Splat a mask (array z, y, x within an image box at ``start_zyx``) onto an LPS grid.

    Each voxel is split into sub-points spread over its own extent, so thick slices and
    oblique grids fill the coarse grid without holes (at least 2.5 sub-points per axis and
    coarse voxel); a coarse voxel is occupied when ``COVER_FRACTION`` of it is covered (the
    sub-point count per coarse voxel varies by up to half with the grids' phase).
    """
    spacing = np.asarray(spacing, dtype=float)
    step = float(np.clip(spacing.max(), 2.0, 3.0))
    idx = np.argwhere(mask)[:, ::-1] + np.asarray(start_zyx[::-1])
    subs = [max(1, int(np.ceil(2.5 * s / step))) for s in spacing]
    offsets = np.stack(
        np.meshgrid(*[(np.arange(k) + 0.5) / k - 0.5 for k in subs], indexing="ij"), axis=-1
    ).reshape(-1, 3)
    world = origin + (idx * spacing) @ direction.T  # (n, 3) voxel centres
    shifts = (offsets * spacing) @ direction.T  # (m, 3) sub-point offsets
    reach = np.abs(shifts).max(axis=0)
    lo = world.min(axis=0) - reach - step
    shape_xyz = np.floor((world.max(axis=0) + reach - lo) / step).astype(np.int64) + 2
    strides = np.array([1, shape_xyz[0], shape_xyz[0] * shape_xyz[1]])
    size = int(np.prod(shape_xyz))
    counts = np.zeros(size, dtype=np.int64)
    base = (world - lo) / step
    for shift in shifts / step:  # one pass per sub-point offset keeps memory at n points
        cells = np.floor(base + shift).astype(np.int64)
        counts += np.bincount(cells @ strides, minlength=size)
    cover = counts.reshape(shape_xyz[::-1]) * (float(np.prod(spacing)) / len(shifts) / step**3)
    occupied = ndi.binary_fill_holes(cover >= COVER_FRACTION)
    return WorldMask(occupied=occupied, origin=lo + 0.5 * step, step=step)


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Least-squares sphere through points: centre, radius, RMS of the radial residuals."""
    a = np.column_stack([2.0 * points, np.ones(len(points))])
    b = (points**2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    centre = sol[:3]
    radius = float(np.sqrt(max(sol[3] + centre @ centre, 0.0)))
    rms = float(np.sqrt(np.mean((np.linalg.norm(points - centre, axis=1) - radius) ** 2)))
    return centre, radius, rms


def check_side(
    wm: WorldMask,
    lateral_sign: float,
    scan_bottom_z: float,
    voxel_ml: float | None = None,
    metal: bool = False,
    cut_by_border: bool = False,
) -> Anatomy:
    """Measure head, neck and shaft on one side's world mask and decide whether it is a
    proximal femur. ``lateral_sign``: +1 for the patient's left femur (world +x), -1 for the
    right. ``scan_bottom_z``: world z where the scan ends below the head (at its column).
    ``metal``: the side holds an implant, whose metal (a screw or plate through the neck) is
    part of the mask and widens it, so the neck's width is not judged. ``cut_by_border``:
    the mask touches an edge of the scan (post-processing's ``truncated``): only the head is
    judged, since the neck or the trochanters may lie outside the image; such a side is not
    graded anyway.
    """
    out = Anatomy()
    occ = wm.occupied
    if not occ.any():
        out.verdict, out.reason = "not_femur", "empty mask"
        return out
    step = wm.step
    cell_ml = step**3 / 1000.0 if voxel_ml is None else voxel_ml
    pts = wm.points()
    top = float(pts[:, 2].max())
    bottom = float(pts[:, 2].min())
    out.scan_height_mm = top - scan_bottom_z

    # head: the deepest point of the top part, then a sphere fitted to its surface
    depth = ndi.distance_transform_edt(occ, sampling=step) + 0.5 * step
    z_world = wm.origin[2] + np.arange(occ.shape[0]) * step
    upper = z_world >= top - HEAD_SEARCH_MM
    search = np.where(upper[:, None, None], depth, 0.0)
    # of (near-)equally deep points the highest: the head is the top of a femur mask, and on
    # thick slices distances tie (the real CT at 5 mm: a tie 17 mm lower in the implant-mended
    # neck took the sphere out of the head and called the mask pelvis)
    ties = np.argwhere(search >= float(search.max()) - 0.25 * step)
    deepest = tuple(int(v) for v in ties[int(np.argmax(ties[:, 0]))])
    inscribed = float(search[deepest])
    c0 = wm.origin + np.array(deepest[::-1]) * step
    out.head_inscribed_mm = inscribed
    surface = occ & ~ndi.binary_erosion(occ)
    sp = wm.points(surface)
    rel = sp - c0
    dist = np.linalg.norm(rel, axis=1)
    lateral_part = rel[:, 0] * lateral_sign
    near = (dist <= 1.4 * inscribed + step) & (rel[:, 2] >= -0.25 * inscribed)
    near &= ~((lateral_part > 0.6 * dist) & (rel[:, 2] < 0.3 * inscribed))  # the neck's root
    if near.sum() < 12:
        out.verdict, out.reason = "not_femur", "no femoral head: the mask has no rounded top"
        return out
    centre, radius, rms = fit_sphere(sp[near])
    out.head_centre = [float(v) for v in centre]
    out.head_radius_mm, out.head_fit_rms_mm = radius, rms
    checks = out.checks
    checks["head_size"] = HEAD_RADIUS_MM[0] <= radius <= HEAD_RADIUS_MM[1]
    checks["head_round"] = rms <= HEAD_FIT_RMS_FRACTION * max(radius, 1.0) + 0.5 * step
    checks["head_solid"] = inscribed >= HEAD_SOLID_FRACTION * radius

    if cut_by_border and checks["head_size"] and checks["head_round"] and checks["head_solid"]:
        return out  # a femoral head whose neck or trochanters may be outside the scan

    above = pts[:, 2] > centre[2] + radius + ABOVE_HEAD_MM
    out.above_head_ml = float(above.sum()) * cell_ml
    checks["nothing_above_head"] = out.above_head_ml <= ABOVE_HEAD_ML

    out.below_centre_mm = float(centre[2] - bottom)
    out.scan_below_centre_mm = float(centre[2] - scan_bottom_z)
    checks["reaches_below_head"] = out.below_centre_mm >= MIN_BELOW_CENTRE_MM

    rel = pts - centre
    low = rel[:, 2] < -0.3 * radius
    reach = float((rel[low, 0] * lateral_sign).max()) if low.any() else 0.0
    out.lateral_reach_mm = reach
    checks["reaches_laterally"] = reach >= radius + MIN_LATERAL_REACH_MM

    dist = np.linalg.norm(rel, axis=1)
    shell = (dist >= radius + NECK_SHELL_MM[0]) & (dist <= radius + NECK_SHELL_MM[1])
    shell &= (rel[:, 0] * lateral_sign > 0) & (rel[:, 2] < 0.2 * radius)
    if shell.sum() >= 5:
        neck = rel[shell].mean(axis=0)
        neck /= max(float(np.linalg.norm(neck)), 1e-6)
        out.neck_axis = [float(v) for v in neck]
        checks["neck_infero_lateral"] = bool(
            neck[0] * lateral_sign >= MIN_NECK_LATERAL
            and neck[2] <= MAX_NECK_VERTICAL
            and abs(neck[1]) <= MAX_NECK_AP
        )
        along = rel @ neck
        radial = np.linalg.norm(rel - along[:, None] * neck[None, :], axis=1)
        plane = (np.abs(along - radius - NECK_PLANE_MM) <= step) & (radial <= 1.1 * radius)
        area = float(plane.sum()) * step**2 / 2.0  # a slab two coarse voxels thick
        out.neck_ratio = float(np.sqrt(area / np.pi)) / radius
        checks["neck_narrower_than_head"] = metal or out.neck_ratio <= MAX_NECK_RATIO
    else:
        checks["neck_infero_lateral"] = False

    _shaft(out, pts, centre, step)
    if out.neck_shaft_angle_deg is not None:
        lo, hi = NECK_SHAFT_ANGLE_DEG
        checks["neck_shaft_angle"] = lo <= out.neck_shaft_angle_deg <= hi
    if out.head_shaft_offset_mm is not None:
        lo, hi = HEAD_SHAFT_OFFSET_MM
        checks["head_shaft_offset"] = lo <= out.head_shaft_offset_mm <= hi
    _verdict(out, scan_ends_at_mask=bottom - scan_bottom_z <= BOTTOM_TOLERANCE_MM + step)
    return out


def _shaft(out: Anatomy, pts: np.ndarray, centre: np.ndarray, step: float) -> None:
    """Shaft axis from the centroids of axial slices well below the head, when in view."""
    z = pts[:, 2]
    below = z <= centre[2] - SHAFT_BELOW_CENTRE_MM
    if not below.any() or float(np.ptp(z[below])) < MIN_SHAFT_LENGTH_MM or out.neck_axis is None:
        return
    bins = np.floor((z[below] - z[below].min()) / step).astype(int)
    counts = np.bincount(bins)
    keep = counts > 0
    cx = np.bincount(bins, weights=pts[below, 0])[keep] / counts[keep]
    cy = np.bincount(bins, weights=pts[below, 1])[keep] / counts[keep]
    cz = np.bincount(bins, weights=z[below])[keep] / counts[keep]
    if len(cz) < 4:
        return
    cent = np.column_stack([cx, cy, cz])
    mean = cent.mean(axis=0)
    _, _, vt = np.linalg.svd(cent - mean)
    down = vt[0] if vt[0][2] < 0 else -vt[0]
    to_head = -np.asarray(out.neck_axis)
    cos = float(np.clip(to_head @ down, -1.0, 1.0))
    out.neck_shaft_angle_deg = float(np.degrees(np.arccos(cos)))
    rel = centre - mean
    out.head_shaft_offset_mm = float(np.linalg.norm(rel - (rel @ down) * down))


def _verdict(out: Anatomy, scan_ends_at_mask: bool) -> None:
    """Turn the checks into one verdict with a reason in plain words."""
    c = out.checks
    head = c["head_size"] and c["head_round"] and c["head_solid"]
    if not head:
        short = scan_ends_at_mask and out.scan_height_mm < MIN_SCAN_BELOW_TOP_MM
        out.verdict = "neck_not_in_view" if short else "not_femur"
        if out.verdict == "neck_not_in_view":
            out.reason = "femoral neck not in view: the scan ends at the femoral head"
        else:
            out.reason = (
                "no femoral head: the top of the mask is not a solid ball of human size "
                f"(fitted radius {out.head_radius_mm:.0f} mm, thickest "
                f"{2 * (out.head_inscribed_mm or 0):.0f} mm)"
            )
        return
    if not c["nothing_above_head"]:
        out.verdict = "pelvis_in_mask"
        out.reason = (
            f"the mask continues {out.above_head_ml:.0f} ml above the femoral head into the "
            "pelvis (acetabulum or ilium)"
        )
        return
    if not c["reaches_below_head"]:
        if scan_ends_at_mask:
            out.verdict = "neck_not_in_view"
            out.reason = (
                "femoral neck not in view: the scan ends "
                f"{out.scan_below_centre_mm:.0f} mm below the head centre"
            )
        else:
            out.verdict = "not_femur"
            out.reason = "no femoral neck: the mask stops just below the head"
        return
    if not (c["reaches_laterally"] and c["neck_infero_lateral"]):
        out.verdict = "not_femur"
        out.reason = "no femoral neck reaching infero-laterally from the head to the shaft"
        return
    if not c.get("neck_narrower_than_head", False):
        out.verdict = "not_femur"
        out.reason = (
            "no femoral neck: below the rounded top the mask does not narrow "
            f"(width {out.neck_ratio or 0:.2f} of the head's)"
        )
        return
    for key, words in (
        ("neck_shaft_angle", f"neck-shaft angle {out.neck_shaft_angle_deg or 0:.0f} degrees"),
        ("head_shaft_offset", f"head-shaft offset {out.head_shaft_offset_mm or 0:.0f} mm"),
    ):
        if c.get(key) is False:
            out.verdict = "not_femur"
            out.reason = f"{words} is outside the human range"
            return


def scan_bottom_z(point: np.ndarray, origin, spacing, direction, size) -> float:
    """World z where the scan ends below ``point`` (the lowest face of the slice stack, at the
    point's in-plane position; for an oblique file the end plane is tilted)."""
    direction = np.asarray(direction, dtype=float).reshape(3, 3)
    spacing = np.asarray(spacing, dtype=float)
    index = direction.T @ (np.asarray(point, dtype=float) - np.asarray(origin)) / spacing
    k = int(np.argmax(np.abs(direction[2] * spacing)))
    ends = []
    for end in (-0.5, float(size[k]) - 0.5):
        i = index.copy()
        i[k] = end
        ends.append(float((np.asarray(origin) + direction @ (i * spacing))[2]))
    return min(ends)


def check_labels(
    labels,
    boxes: dict[int, tuple[slice, ...] | None],
    metal: dict[int, bool] | None = None,
    cut_by_border: dict[int, bool] | None = None,
) -> dict[int, Anatomy]:
    """The guard on every side of a 0/1/2 label image (SimpleITK), within each side's box.
    ``metal``, ``cut_by_border``: per side, see ``check_side``."""
    import SimpleITK as sitk

    from femurscreen.labels import LEFT

    array = sitk.GetArrayViewFromImage(labels)
    origin = np.array(labels.GetOrigin())
    spacing = np.array(labels.GetSpacing())
    direction = np.array(labels.GetDirection()).reshape(3, 3)
    out: dict[int, Anatomy] = {}
    for value, box in boxes.items():
        if box is None:
            continue
        mask = np.asarray(array[box]) == value
        if not mask.any():
            continue
        start = tuple(int(b.start) for b in box)
        wm = world_mask(mask, start, origin, spacing, direction)  # type: ignore[arg-type]
        top = wm.points()[:, 2].argmax()
        bottom = scan_bottom_z(wm.points()[top], origin, spacing, direction, labels.GetSize())
        out[value] = check_side(
            wm,
            1.0 if value == LEFT else -1.0,
            bottom,
            metal=bool((metal or {}).get(value)),
            cut_by_border=bool((cut_by_border or {}).get(value)),
        )
    return out
