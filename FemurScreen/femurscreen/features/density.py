"""Trabecular HU readouts in the femoral head, neck and intertrochanteric region of one side.

Why: mean cancellous HU in the proximal femur is the simplest opportunistic density measure
(Comp2Comp reports it per ROI and side) and a sanity check beside the radiomics model.

How the ROIs are built (all geometry in world millimetres, so any voxel spacing and any
direction matrix give the same ROIs; superior is +z in LPS, medial is -x for the patient's left
femur and +x for the right one):

1. Depth: the Euclidean distance (mm, using the voxel spacing) from each mask voxel to the
   nearest voxel outside the mask. The *eroded* mask keeps voxels deeper than ``erosion_mm``
   (3 mm): the cortical shell and partial-volume rim are excluded, trabecular bone remains.
2. Femoral head: the apex is the mask voxel furthest along (superior + 0.5 x medial); the head
   centre is the deepest mask voxel within ``head_search_mm`` (35 mm, more than an adult head
   radius of 20-27 mm) of the apex, i.e. the centre of the largest inscribed sphere of the head,
   and its depth is the head radius r_h. Head ROI = eroded mask within r_h of the centre.
3. Intertrochanteric region: the centroid of the mask voxels lateral to the head centre and
   from r_h to r_h + ``it_window_mm`` (60 mm) below it (below the neck, above the lesser
   trochanter; the window keeps a long shaft from pulling the centroid down), moved to the
   nearest eroded voxel. ROI = eroded mask within ``it_radius_mm`` (15 mm) of that point.
4. Neck: a cylinder of radius ``neck_radius_mm`` (10 mm) along the head-centre to
   intertrochanteric-centre axis, between the head sphere and the intertrochanteric ROI,
   intersected with the eroded mask.
5. Whole: every voxel of the mask, cortex included (the total proximal-femur mean).

Readouts are the mean and the sample SD of HU on the CT's own grid (no resampling) and the ROI
volume in ml. An ROI that comes out empty raises SideError: the mask is not a proximal femur
(a fragment, or far too thin) and must be corrected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from femurscreen.features.radiomics_extract import SideError

DENSITY_VERSION = "femurscreen-density-v1"
ROIS: tuple[str, ...] = ("head", "neck", "intertroch", "whole")
STATS: tuple[str, ...] = ("mean_hu", "sd_hu", "ml")
DENSITY_KEYS: tuple[str, ...] = tuple(f"density_{r}_{s}" for r in ROIS for s in STATS)


def _world_points(image: sitk.Image, zyx: np.ndarray) -> np.ndarray:
    """World (LPS, mm) coordinates of voxel indices given as (z, y, x) rows."""
    ijk = zyx[:, ::-1].astype(float)
    spacing = np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (ijk * spacing) @ direction.T


def _stats(values: np.ndarray, voxel_ml: float) -> tuple[float, float, float]:
    sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), sd, values.size * voxel_ml


@dataclass
class DensityRois:
    """Where the ROIs of one side are (world LPS mm) and which mask voxels they hold."""

    head_centre: np.ndarray
    head_radius_mm: float
    intertroch_centre: np.ndarray
    rois: dict[str, np.ndarray]  # ROI name -> boolean over the mask voxels (``zyx`` order)
    zyx: np.ndarray  # voxel indices (z, y, x) of the mask voxels on the CT grid
    values: np.ndarray  # HU of the mask voxels

    def label_image(self, reference: sitk.Image) -> sitk.Image:
        """ROIs as labels on ``reference``'s grid (1 head, 2 neck, 3 intertroch), for QA views."""
        array = np.zeros(tuple(reversed(reference.GetSize())), np.uint8)
        for value, name in enumerate(ROIS[:3], start=1):
            z, y, x = self.zyx[self.rois[name]].T
            array[z, y, x] = value
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(reference)
        return image


def density_rois(
    ct: sitk.Image,
    side_mask: sitk.Image,
    side: str,
    *,
    erosion_mm: float = 3.0,
    head_search_mm: float = 35.0,
    neck_radius_mm: float = 10.0,
    it_radius_mm: float = 15.0,
    it_window_mm: float = 60.0,
) -> DensityRois:
    """Build the head, neck, intertrochanteric and whole ROIs (see the module doc)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    mask = sitk.GetArrayViewFromImage(side_mask) > 0
    if not mask.any():
        raise SideError(f"{side} proximal femur mask is empty: segment or correct the mask")
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    box_mask = np.pad(mask[box], 1)
    hu = np.pad(sitk.GetArrayViewFromImage(ct)[box].astype(np.float64), 1)
    offset = np.array([s.start for s in box]) - 1

    spacing_zyx = tuple(reversed(ct.GetSpacing()))
    depth = ndimage.distance_transform_edt(box_mask, sampling=spacing_zyx)

    zyx = np.argwhere(box_mask) + offset
    points = _world_points(ct, zyx)
    values = hu[box_mask]
    deep = depth[box_mask]
    eroded = deep > erosion_mm
    superior = points[:, 2]
    medial = -points[:, 0] if side == "left" else points[:, 0]

    # 2. head: apex, then the deepest voxel near it.
    apex = int(np.argmax(superior + 0.5 * medial))
    near_apex = np.linalg.norm(points - points[apex], axis=1) <= head_search_mm
    head_idx = int(np.flatnonzero(near_apex)[np.argmax(deep[near_apex])])
    head_centre, head_radius = points[head_idx], float(deep[head_idx])
    to_head = np.linalg.norm(points - head_centre, axis=1)
    head = eroded & (to_head <= head_radius)

    # 3. intertrochanteric region: centroid below the head, snapped into the eroded mask.
    drop = superior[head_idx] - superior
    below = (drop >= head_radius) & (drop <= head_radius + it_window_mm)
    window = below & (medial < medial[head_idx])
    if not window.any():
        window = below
    if not window.any() or not eroded.any():
        raise SideError(
            f"{side} proximal femur: no intertrochanteric region below the femoral head (the "
            "mask does not reach below the head, or is too thin): correct the mask"
        )
    centroid = points[window].mean(axis=0)
    eroded_idx = np.flatnonzero(eroded)
    it_idx = eroded_idx[np.argmin(np.linalg.norm(points[eroded_idx] - centroid, axis=1))]
    it_centre = points[it_idx]
    to_it = np.linalg.norm(points - it_centre, axis=1)
    intertroch = eroded & (to_it <= it_radius_mm)

    # 4. neck: cylinder along the head-intertrochanteric axis, between the two ROIs.
    axis = it_centre - head_centre
    length = float(np.linalg.norm(axis))
    neck = np.zeros_like(eroded)
    if length > 0:
        axis = axis / length
        rel = points - head_centre
        along = rel @ axis
        radial = np.linalg.norm(rel - along[:, None] * axis, axis=1)
        neck = (
            eroded
            & (radial <= neck_radius_mm)
            & (along >= head_radius)
            & (along <= length)
            & (to_it > it_radius_mm)
        )
    for name, roi in (("head", head), ("neck", neck), ("intertroch", intertroch)):
        if not roi.any():
            raise SideError(
                f"{side} proximal femur: the {name} ROI is empty after a {erosion_mm:g} mm "
                "erosion (the mask is too thin or not a proximal femur there): correct the mask"
            )
    rois = {"head": head, "neck": neck, "intertroch": intertroch}
    rois["whole"] = np.ones_like(eroded)
    return DensityRois(head_centre, head_radius, it_centre, rois, zyx, values)


def density_readouts(
    ct: sitk.Image, side_mask: sitk.Image, side: str, **options: float
) -> dict[str, float]:
    """``density_<roi>_{mean_hu,sd_hu,ml}`` for one side's binary mask on the CT's grid.

    ``options`` are density_rois' keyword arguments (erosion_mm, head_search_mm...).
    """
    found = density_rois(ct, side_mask, side, **options)
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    readouts: dict[str, float] = {}
    for name in ROIS:
        mean, sd, ml = _stats(found.values[found.rois[name]], voxel_ml)
        readouts.update(
            {f"density_{name}_mean_hu": mean, f"density_{name}_sd_hu": sd, f"density_{name}_ml": ml}
        )
    return readouts
