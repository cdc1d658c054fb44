"""One proximal femur from a crop around its head: bone mask, then femur-versus-pelvis split.

Three ideas, each for a reason:
- The head is the fitted ball. At 3 mm the joint space is about one voxel and often invisible,
  so intensity cannot say where the head ends; the sphere fit (to the steepest intensity drop
  on 256 rays) can, and femoral heads are spheres to within about a millimetre. On coarse
  grids (>= ``COARSE_SPACING_MM``) the fit itself is less certain (and arthritic heads are
  less round), so only the ball's core is forced and the joint-space prior is softer.
- Just outside the ball on the socket side (up to 10 mm; on coarse grids also the ball's
  forced-core margin), a minimum cut (Krčah et al. 2011) has the last word on femur versus
  pelvis: the boundary is the cheapest surface, cheap in soft tissue and along dark plates
  (the joint space, by Hessian sheetness), dear through bone, with a weak pull toward the
  sphere. The ball itself stays femur: letting the cut trim it too scored better on phantoms
  but once thinned a head so much that the wrong-bone guard took the trochanter for the head
  and the femur was lost. Not where metal is in the crop (its streaks are plates of their own).
- Outside the ball, a seeded watershed splits femur from pelvis. Femur seeds: the ball, bone
  along the neck axis just outside it, bone well lateral and below it (trochanters, shaft).
  Pelvis seeds: bone beside the ball away from the neck (acetabulum), above it and medial to
  it. The landscape is high in thin or dark bone, so remaining contacts (the acetabular rim
  touching the head-neck junction) are cut where they are thinnest.
- The outer surface is placed at half maximum: a voxel is bone when it is brighter than half
  way between the nearby cortical peak and soft tissue. A fixed threshold would move the
  surface with cortical thickness and slice thickness; half maximum is where a blurred edge
  really is, which matters at 3 mm where one voxel layer is a third of the femur's volume.
  The marrow space inside the cortex is then filled (fatty marrow can be darker than muscle).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from femurscreen.hu import METAL_HU
from femurscreen.segmentation.classical.grid import Grid
from femurscreen.segmentation.classical.heads import HeadSphere
from femurscreen.segmentation.postprocess import CUT_BELOW_LESSER_TROCHANTER_MM

DOMAIN_HU = 120.0  # liberal bone threshold: what the femur-pelvis split works on
MIN_BONE_HU = 150.0  # the half-maximum threshold never goes below this
SOFT_TISSUE_HU = 40.0  # muscle level used for the half-maximum surface
SMOOTH_SIGMA_MM = 0.5
LT_BELOW_HEAD_CENTRE_MM = 100.0
IMPLANT_MEND_MM = 12.0
MAX_HOLE_AREA_MM2 = 2500.0  # per-slice holes in the bone domain (the pelvic cavity is larger)
MAX_MARROW_AREA_MM2 = 5000.0  # per-slice holes in the femur mask alone
PEAK_RADIUS_MM = 3.0  # the cortical peak is looked for this far around a voxel
FINE_SURFACE_SPACING_MM = 1.5  # at or below: the surface is the half-maximum
COARSE_SURFACE_FRACTION = 0.65  # at 3 mm and above (blurred thin cortex), see surface_fraction
PEEL_DEPTH_MM = 3.0  # the half-maximum surface moves the liberal surface in by at most this
NECK_SEED_ANGLE_DEG = 30.0
ACETABULUM_SEED_ANGLE_DEG = 70.0
RIDGE_HEIGHT = 6.0  # landscape bump just outside the ball: leaving the head costs this much
COARSE_SPACING_MM = 2.5  # at or above: the sphere is less certain, force only its core
COARSE_CORE_MARGIN_MM = 3.0  # forced femur core: the ball minus this
COARSE_RIDGE_HEIGHT = 4.0  # a softer joint-space prior
JOINT_OFFSET_MM = 1.5
# the min-cut at the joint (``joint_mincut``, Krčah et al. 2011): a band around the ball's socket
# side. Measured with and without it (issue 11): phantoms with no joint space at 3 mm Dice
# 0.909 -> 0.916, 20 held-out phantoms unchanged, the real CT's metamorphic variants >= 0.90
JOINT_MINCUT = True
CUT_BAND_IN_MM = 5.0  # the band's inner edge (the fitted ball itself stays femur, see above)
CUT_BAND_OUT_MM = 10.0  # the ball plus this on the socket side is the band's outer edge
CUT_SOCKET_COS = -0.2  # band: directions within about 100 degrees of the socket axis
CUT_EPS = 0.02  # cost of cutting between soft-tissue voxels (bone costs 1)
CUT_SHEET_GAIN = 0.9  # a dark sheet (joint space) lowers the cost by up to this fraction
CUT_PRIOR = 0.5  # pull toward the fitted sphere per voxel (per mm of spacing)
CUT_PRIOR_RAMP_MM = 3.0  # the pull grows over this depth from the sphere (+ JOINT_OFFSET_MM)


def crop_box(head: HeadSphere) -> tuple[np.ndarray, np.ndarray]:
    """World box around one proximal femur: medial acetabulum to greater trochanter, head top
    to below the anatomical cut (the lowest point of the lesser trochanter lies at most about
    ``LT_BELOW_HEAD_CENTRE_MM`` below the head centre), with room for the shaft profile."""
    c, r, lat = head.centre, head.radius, head.lateral
    medial, lateral = r + 30.0, 95.0
    x_lo, x_hi = (c[0] - medial, c[0] + lateral) if lat > 0 else (c[0] - lateral, c[0] + medial)
    below = LT_BELOW_HEAD_CENTRE_MM + CUT_BELOW_LESSER_TROCHANTER_MM + 25.0
    lo = np.array([x_lo, c[1] - 65.0, c[2] - below])
    hi = np.array([x_hi, c[1] + 65.0, c[2] + r + 20.0])
    return lo, hi


def fill_slice_holes(
    mask: np.ndarray, max_area_vox: float | None = None, axis: int = 0
) -> np.ndarray:
    """Fill 2-D holes (up to ``max_area_vox`` voxels) in every slice across ``axis``.

    One labelling pass for all slices: the structuring element connects voxels only within a
    slice. The size limit keeps the pelvic cavity (a closed bony ring in axial slices) empty
    while the marrow space of a femoral cross-section is filled.
    """
    structure = np.zeros((3, 3, 3), dtype=bool)
    index: list[slice | int] = [slice(None)] * 3
    index[axis] = 1
    structure[tuple(index)] = ndi.generate_binary_structure(2, 1)
    holes, n = ndi.label(~mask, structure=structure)
    if n == 0:
        return mask
    fill = np.ones(n + 1, dtype=bool)
    if max_area_vox is not None:
        fill &= np.bincount(holes.ravel(), minlength=n + 1) <= max_area_vox
    fill[0] = False
    for other in range(3):  # a hole that reaches the in-plane border of its slice is outside
        if other == axis:
            continue
        for end in (0, -1):
            fill[np.unique(np.take(holes, end, axis=other))] = False
    return mask | fill[holes]


def smooth_hu(array: np.ndarray, spacing: float) -> np.ndarray:
    """Metal-clipped HU, lightly smoothed (0.5 mm; nothing on a coarse grid).

    More smoothing lowers the peak of a thin cortex and so moves the half-maximum surface
    outward (measured on phantoms: +0.3 mm of surface bias per 0.3 mm of extra blur).
    """
    clipped = np.clip(array, -200.0, 1500.0).astype(np.float32)
    sigma = SMOOTH_SIGMA_MM / spacing
    return ndi.gaussian_filter(clipped, sigma) if sigma > 0.2 else clipped


def surface_fraction(spacing: float) -> float:
    """Where between soft tissue (0) and the cortical peak (1) the bone surface is put.

    Half way is right for a sharp image. On a coarse grid the thin cortex is blurred over
    several millimetres and its half-maximum lies outside the true surface: on 10 phantoms
    resampled to 3 mm, half way gave +16 % volume; 0.8 gave +7 % and the best Dice, but made the
    real CT's right femur less stable under 3 degree rotations (Dice with the unrotated mask
    0.867 -> 0.845); 0.65 keeps it (0.856) at +12 % volume, Dice 0.927.
    """
    t = float(np.clip((spacing - FINE_SURFACE_SPACING_MM) / 1.5, 0.0, 1.0))
    return 0.5 + (COARSE_SURFACE_FRACTION - 0.5) * t


def half_max_bone(smooth: np.ndarray, spacing: float) -> np.ndarray:
    """Voxels brighter than the surface level between the local cortical peak and soft
    tissue (half way on fine grids, see ``surface_fraction``)."""
    size = max(3, 2 * int(round(PEAK_RADIUS_MM / spacing)) + 1)
    peak = ndi.maximum_filter(smooth, size=size)
    fraction = surface_fraction(spacing)
    level = np.maximum(MIN_BONE_HU, SOFT_TISSUE_HU + fraction * (peak - SOFT_TISSUE_HU))
    return smooth > level


def peel_to_half_max(
    mask: np.ndarray, bone: np.ndarray, spacing: float, outside: np.ndarray | None = None
) -> np.ndarray:
    """Move the outer surface of ``mask`` inward to the half-maximum surface ``bone``.

    Only a thin outer layer (about 3 mm) is peeled, through voxels that are not ``bone``, so
    a gap in a thin cortical ring cannot drain the marrow space behind it. Nothing is peeled
    from ``outside`` (beyond the scan): marrow cut by the field of view's edge stays.
    """
    soft = mask & ~bone
    reached = ~mask if outside is None else ~mask & ~outside
    for _ in range(max(1, int(round(PEEL_DEPTH_MM / spacing)))):
        grown = ndi.binary_dilation(reached) & soft
        if not (grown & ~reached).any():
            break
        reached |= grown
    return mask & ~reached


def fill_femur(femur: np.ndarray, spacing: float, outside: np.ndarray | None = None) -> np.ndarray:
    """Close one-voxel gaps in the cortical shell and fill the marrow space.

    ``outside``: crop voxels beyond the CT's field of view. Where the scan's edge cuts the
    femur obliquely (a tilted gantry, an oblique grid) the marrow space is open toward it in
    world-axial slices and would stay empty; the field of view's wall closes it instead.
    """
    padded = np.pad(femur, 2)
    closed = ndi.binary_closing(padded, ndi.generate_binary_structure(3, 1))[2:-2, 2:-2, 2:-2]
    closed |= femur
    return _fill_holes(closed, MAX_MARROW_AREA_MM2 / spacing**2, outside)


def _fill_holes(mask: np.ndarray, max_area: float, outside: np.ndarray | None) -> np.ndarray:
    """Slice holes (up to ``max_area`` voxels) and 3-D holes, with ``outside`` as a wall."""
    walled = mask if outside is None else mask | outside
    for axis in (0, 1, 2):
        walled = fill_slice_holes(walled, max_area, axis)
    walled = ndi.binary_fill_holes(walled)
    return walled if outside is None else walled & ~outside


def _head_frame(grid: Grid, head: HeadSphere):
    """Per voxel offsets from the head centre: (dx, dy, dz) broadcastable arrays, distance."""
    zs, ys, xs = grid.axes_world()
    c = head.centre
    dz = (zs - c[2])[:, None, None]
    dy = (ys - c[1])[None, :, None]
    dx = (xs - c[0])[None, None, :]
    return dx, dy, dz, np.sqrt(dz**2 + dy**2 + dx**2)


def neck_axis(domain: np.ndarray, grid: Grid, head: HeadSphere) -> np.ndarray | None:
    """Unit vector from the head centre along the neck: mean direction of the bone just outside
    the ball on its lateral-inferior side (inside the acetabular opening only the neck lies)."""
    dx, dy, dz, dist = _head_frame(grid, head)
    r = head.radius
    sel = (
        domain & (dist >= r + 3.0) & (dist <= r + 20.0) & (dx * head.lateral > 0.25 * r) & (dz < 0)
    )
    if sel.sum() < 5:
        return None
    vec = np.array(
        [
            np.broadcast_to(dx, dist.shape)[sel].sum(),
            np.broadcast_to(dy, dist.shape)[sel].sum(),
            np.broadcast_to(dz, dist.shape)[sel].sum(),
        ]
    )
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else None


def segment_femur(
    array: np.ndarray, grid: Grid, head: HeadSphere, outside: np.ndarray | None = None
) -> np.ndarray:
    """Boolean femur mask (z, y, x) on the crop grid ``grid`` (isotropic).

    ``outside``: crop voxels beyond the CT's field of view (see ``fill_femur``).
    """
    spacing = float(grid.spacing[0])
    smooth = smooth_hu(array, spacing)
    domain = _fill_holes(smooth > DOMAIN_HU, MAX_HOLE_AREA_MM2 / spacing**2, None)

    dx, dy, dz, dist = _head_frame(grid, head)
    r = head.radius
    lateral = dx * head.lateral
    ball = dist <= r - (COARSE_CORE_MARGIN_MM if spacing >= COARSE_SPACING_MM else 0.0)
    domain |= ball

    femur_seed = ball | (domain & (lateral > 25.0) & (dz < -30.0))
    pelvis_seed = (
        domain
        & (dist >= r + max(5.0, 1.5 * spacing))
        & (((dz > 0.3 * r) & (lateral < 30.0)) | (lateral < -(r + 8.0)))
    )
    axis = neck_axis(domain, grid, head)
    if axis is not None:
        cos = (dx * axis[0] + dy * axis[1] + dz * axis[2]) / np.maximum(dist, 1e-6)
        near = (dist > r) & (dist <= r + 20.0)
        femur_seed |= domain & near & (cos >= np.cos(np.deg2rad(NECK_SEED_ANGLE_DEG)))
        shell = (dist >= r + spacing) & (dist <= r + 25.0)
        pelvis_seed |= domain & shell & (cos <= np.cos(np.deg2rad(ACETABULUM_SEED_ANGLE_DEG)))
    pelvis_seed &= ~femur_seed

    thickness = sitk.GetArrayFromImage(
        sitk.SignedMaurerDistanceMap(
            grid.image(domain.astype(np.uint8)),
            insideIsPositive=True,
            squaredDistance=False,
            useImageSpacing=True,
        )
    )
    ridge = (COARSE_RIDGE_HEIGHT if spacing >= COARSE_SPACING_MM else RIDGE_HEIGHT) * np.exp(
        -0.5 * ((dist - r - JOINT_OFFSET_MM) / max(1.5, 0.5 * spacing)) ** 2
    )
    landscape = -np.minimum(thickness, 8.0) / 2.0 - smooth / 150.0 + ridge
    landscape = np.where(domain, landscape, landscape.max() + 100.0).astype(np.float32)
    markers = np.zeros(domain.shape, dtype=np.uint8)
    markers[pelvis_seed] = 2
    markers[femur_seed] = 1
    flooded = sitk.GetArrayFromImage(
        sitk.MorphologicalWatershedFromMarkers(
            grid.image(landscape),
            grid.image(markers),
            markWatershedLine=False,
            fullyConnected=False,
        )
    )
    region = domain & (flooded == 1)
    pelvis = domain & (flooded == 2)
    metal = array > METAL_HU
    # not beside metal: its streaks draw bright and dark plates of their own
    cut = JOINT_MINCUT and not metal.any()
    if cut:
        region = joint_mincut(smooth, domain, region, pelvis, femur_seed, pelvis_seed, grid, head)
        pelvis = domain & ~region
    region = _component_with(region, ball)
    filled = fill_femur(region, spacing, outside)
    femur = peel_to_half_max(filled, half_max_bone(smooth, spacing), spacing, outside)
    femur = _component_with(femur | ball, ball)
    # implants: metal touching the femur is part of the femur as it lies in the scan
    if metal.any():
        femur = _with_implant(femur, metal, pelvis, spacing, outside)
    return femur if outside is None else femur & ~outside


def sheetness(smooth: np.ndarray, spacing: float, where: np.ndarray | None = None) -> np.ndarray:
    """Krčah's sheetness (Krčah et al. 2011) of ``smooth``: +1 in bright plates (cortex),
    -1 in dark plates (the joint space between head and acetabulum), near 0 elsewhere.

    Hessian eigenvalues at one scale (1 mm, at least 0.6 voxel) sorted by magnitude
    |l1| <= |l2| <= |l3|; a plate has one large eigenvalue. ``where``: the voxels that need
    it (0 elsewhere); the eigen-decomposition is most of the cost. The noise scale is the
    Hessian's norm over the whole array, so it does not depend on ``where``.
    """
    sigma = max(1.0 / spacing, 0.6)
    where = np.ones(smooth.shape, dtype=bool) if where is None else where
    hess = np.empty((int(where.sum()), 3, 3), dtype=np.float32)
    norm2 = np.zeros(smooth.shape, dtype=np.float32)
    for i in range(3):
        for j in range(i, 3):
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            d = ndi.gaussian_filter(smooth, sigma, order=order)
            norm2 += d * d * (1.0 if i == j else 2.0)
            hess[:, i, j] = hess[:, j, i] = d[where]
    gamma = max(float(np.percentile(np.sqrt(norm2), 95)) * 0.5, 1e-6)
    lam = np.linalg.eigvalsh(hess)
    lam = np.take_along_axis(lam, np.argsort(np.abs(lam), axis=-1), axis=-1)
    l1, l2, l3 = np.abs(lam[:, 0]), np.abs(lam[:, 1]), lam[:, 2]
    a3 = np.maximum(np.abs(l3), 1e-6)
    r_sheet = l2 / a3
    r_tube = l1 / np.maximum(l2 * a3, 1e-6) ** 0.5
    noise2 = norm2[where]
    out = np.zeros(smooth.shape, dtype=np.float32)
    out[where] = (
        -np.sign(l3)
        * np.exp(-(r_sheet**2) / (2 * 0.5**2))
        * np.exp(-(r_tube**2) / (2 * 0.5**2))
        * (1.0 - np.exp(-noise2 / (2 * gamma**2)))
    )
    return out


def joint_mincut(
    smooth: np.ndarray,
    domain: np.ndarray,
    femur: np.ndarray,
    pelvis: np.ndarray,
    femur_seed: np.ndarray,
    pelvis_seed: np.ndarray,
    grid: Grid,
    head: HeadSphere,
) -> np.ndarray:
    """Re-split femur from pelvis where the head meets the acetabulum by a minimum cut.

    Krčah et al. 2011: the cut between two touching bones is cheap where the image shows a
    dark plate (the joint space, negative sheetness) and in soft tissue, dear through bright
    bone. The graph is a crop around the ball's socket side (a band from ``CUT_BAND_IN_MM``
    inside the fitted sphere to ``CUT_BAND_OUT_MM`` outside it); outside the band the
    watershed's split stands and is the cut's boundary condition. The femur seeds (the ball,
    or on coarse grids its core) stay femur, so the cut decides only outside them. Edge costs
    are per face and the sphere prior per voxel times the spacing, so the balance is the same
    on every grid. Only the band's bounding box becomes a graph (about 10^5 nodes per side at
    1.2 mm). Returns the new femur.
    """
    import maxflow  # type: ignore[import-untyped]

    spacing = float(grid.spacing[0])
    dx, dy, dz, dist = _head_frame(grid, head)
    r = head.radius
    axis = np.array([-head.lateral, 0.0, 1.0]) / np.sqrt(2.0)
    cos = (dx * axis[0] + dz * axis[2]) / np.maximum(dist, 1e-6)
    band = (dist >= r - CUT_BAND_IN_MM) & (dist <= r + CUT_BAND_OUT_MM) & (cos > CUT_SOCKET_COS)
    if not (band & domain).any():
        return femur
    idx = np.argwhere(band)
    lo = np.maximum(idx.min(axis=0) - 1, 0)
    hi = np.minimum(idx.max(axis=0) + 2, np.array(band.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    b_band, b_domain = band[box], domain[box]
    b_dist = np.broadcast_to(dist, band.shape)[box]
    b_smooth = smooth[box]
    sheet = sheetness(b_smooth, spacing, ndi.binary_dilation(b_band) & b_domain)
    cost = np.where(
        b_domain, CUT_EPS + 1.0 - CUT_SHEET_GAIN * np.maximum(-sheet, 0.0), CUT_EPS
    ).astype(np.float64)
    graph = maxflow.Graph[float]()
    nodes = graph.add_grid_nodes(cost.shape)
    for k in range(3):
        structure = np.zeros((3, 3, 3))
        structure[tuple(2 if i == k else 1 for i in range(3))] = 1.0
        nxt = np.roll(cost, -1, axis=k)
        graph.add_grid_edges(nodes, weights=0.5 * (cost + nxt), structure=structure, symmetric=True)
    big = 1e9
    # femur: the ball (its core on coarse grids), its seeds, the watershed's femur outside
    source = (b_dist < r - CUT_BAND_IN_MM) | femur_seed[box] | (femur[box] & ~b_band)
    sink = (pelvis_seed[box] | (pelvis[box] & ~b_band)) & ~source
    depth = (b_dist - r - JOINT_OFFSET_MM) / CUT_PRIOR_RAMP_MM
    prior = np.where(b_band & b_domain, CUT_PRIOR * spacing, 0.0)
    graph.add_grid_tedges(
        nodes,
        np.where(source, big, prior * np.clip(-depth, 0.0, 1.0)),  # cost of "pelvis"
        np.where(sink, big, prior * np.clip(depth, 0.0, 1.0)),  # cost of "femur"
    )
    graph.maxflow()
    femur_side = ~graph.get_grid_segments(nodes)
    out = femur.copy()
    out[box] = np.where(b_band, femur_side & b_domain, femur[box])
    return out


def _with_implant(
    femur: np.ndarray,
    metal: np.ndarray,
    pelvis: np.ndarray,
    spacing: float,
    outside: np.ndarray | None = None,
) -> np.ndarray:
    """Add the metal that touches the femur, and mend the bone around it.

    Streak artefacts next to metal cut dark bands through the bone, which leave the mask
    ragged there; a closing (5 mm) limited to within 12 mm of the metal, never into bone
    the watershed gave to the pelvis, mends it.
    """
    metal_lab, _ = ndi.label(metal)
    touching = np.unique(metal_lab[ndi.binary_dilation(femur, iterations=2) & metal])
    touching = touching[touching > 0]
    if touching.size == 0:
        return femur
    implant = np.isin(metal_lab, touching)
    femur = femur | implant
    near = ndi.distance_transform_edt(~implant, sampling=spacing) <= IMPLANT_MEND_MM
    radius = max(1, int(round(5.0 / spacing)))
    ball = ndi.generate_binary_structure(3, 1)
    closed = ndi.binary_closing(np.pad(femur, radius + 1), ball, iterations=radius)
    closed = closed[(slice(radius + 1, -radius - 1),) * 3]
    femur |= closed & near & ~pelvis
    return fill_femur(femur, spacing, outside)


def _component_with(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The connected component of ``mask`` that overlaps ``seed`` most."""
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    overlap = np.bincount(lab[seed & mask], minlength=n + 1)
    overlap[0] = 0
    if overlap.max() == 0:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        return lab == int(np.argmax(sizes))
    return lab == int(np.argmax(overlap))
