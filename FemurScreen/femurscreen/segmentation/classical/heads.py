"""Find the femoral heads: the one nearly spherical bone surface lateral to the pelvis.

Why a sphere: at 3 mm slices the hip joint space is about one voxel wide and the head and the
acetabulum blur into one bright blob; what survives is geometry. The femoral head is a ball of
radius 20-27 mm whose surface is brighter than what lies just outside it (cartilage, joint
space, capsule), and both sides sit 55-130 mm from the body midline. Vertebrae, the sacrum and
ribs are not balls lateral to the midline, so an abdomen-only scan yields no head.

Two steps on the coarse (3 mm) grid:
1. Gradient-ray voting: every strong edge votes along its gradient (toward brighter tissue) at
   the distances a head centre could be; a ball's votes meet at its centre, a cylinder's
   (vertebral body) spread along its axis, a plate's scatter.
2. Sphere fit: from each candidate centre, rays in 256 directions find the first strong drop of
   intensity (the head's outer surface); a robust least-squares fit gives centre and radius, and
   the fraction of rays that agree with the sphere (``support``) scores the candidate. Where
   that first drop lies inside the ball (coarse trabecular texture), the radius most rays see
   a drop at is taken instead (``surface_scan``).
Then each candidate is refitted on a fine crop (``verify``): the surface scan from several
nearby starts, combined as the median of the near-best fits (``consensus_fit``; the best one
alone is a draw between fits a few rays apart), and
3. Roof check (``below_roof``): at 3 mm the joint space is invisible and those fits take the
   acetabular roof plate for the head's top; rays looking up from the centre find the plate
   (a bright ridge) and the sphere is moved down until the plate lies outside it. On the real
   sample CT this moved the right head 4.8 mm down (label top from the roof apex slice to two
   slices below it) and made the head fit agree across resamplings (1, 1.5 mm, 5 mm slices).
Of two verified balls on one side that overlap, the lateral one is the head (the acetabulum
lies medial to it). A pair of heads is scored as a mirror image about the body midline; a scan
that shows one hip only (the body cut by the field of view) has its midline at that border.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from femurscreen.hu import METAL_HU
from femurscreen.labels import LEFT, RIGHT
from femurscreen.segmentation.classical.grid import Grid, lattice_grid, resample

HEAD_RADIUS_MM = (17.5, 31.0)  # accepted fine radius (adult femoral heads: about 19-27 mm)
COARSE_RADIUS_MM = (17.5, 34.0)  # coarse fits may lock onto the acetabulum's outer surface
COARSE_SPACING_MM = 3.0
MAX_PEAKS = 40
VOTE_DISTANCES_MM = (14.0, 30.0)  # distances along the gradient at which edges vote
MIN_MIDLINE_OFFSET_MM = 45.0  # head centres lie 55-130 mm from the midline
MAX_MIDLINE_OFFSET_MM = 160.0
MIN_SUPPORT = 0.35  # fraction of rays whose surface point agrees with the fitted sphere
MIN_INTERIOR_HU = 60.0  # mean HU inside the inner 60 % of the ball: bone (or metal); an
# osteoporotic head blurred to 3 mm measured 70-79 (80 rejected it), muscle is 40-60
EDGE_CLIP_HU = (-200.0, 800.0)  # metal and dense cortex clipped so they do not dominate edges
CANDIDATES_PER_SIDE = 3
MIN_FINE_SUPPORT = 0.3
MIN_SOCKET = 0.2
SOCKET_BONE_HU = 300.0
SCAN_SIGMA_MM = 0.4  # more smoothing erases a 2 mm joint space
SCAN_STARTS_MM = np.array(
    [[0, 0, 0], [3, 0, 0], [-3, 0, 0], [0, 3, 0], [0, -3, 0], [0, 0, 3], [0, 0, -3]], dtype=float
)
OUTER_LOCK_MM = 0.8  # free-band surface this far inside the scanned sphere: wrong sphere
# the whole head and the start of the neck must be in the scan: a scan that ends inside the
# head cannot be graded, and the bone above such a scan's floor (acetabular roof, ilium) can
# look like a head
FOV_BELOW_HEAD_MM = 6.0
MAX_METAL_FRACTION = 0.12
PAIR_MAX_DZ_MM = 30.0
PAIR_SEARCH_MM = 25.0  # the other head lies this close to the anchor's mirror image
PAIR_STARTS_MM = np.array([[0, 0, 0], [0, 0, 6], [0, 0, -6], [0, 6, 0], [0, -6, 0]], dtype=float)
PAIR_MAX_DR_MM = 5.0
MIDLINE_MM = 10.0  # a pair's midpoint this far from the body midline costs one point
PAIR_SCAN_DR_MM = 3.0  # the other head is looked for with a radius this close to the anchor
PAIR_DISTANCE_MM = (140.0, 260.0)  # head centres: adults 150-210 mm apart; a pair 137 mm
# apart on the real CT resampled to 1.5 mm was the two anterior acetabular walls
SURFACE_DROP_HU = 50.0  # a ray "sees" the head surface when intensity falls this much across it
DELTA_SPACINGS = 0.5  # the drop is measured this many voxels either side of the surface
INNER_TOLERANCE = 0.97  # radii seen by this fraction of the best count count as near-best
# the acetabular roof: a bright plate (subchondral bone, "sourcil") capping the head
ROOF_CONE_COS = 0.3  # rays within about 73 degrees of the socket axis (upward-medial)
ROOF_HU = 350.0  # a roof ridge is a local maximum above this ...
ROOF_RISE_HU = 100.0  # ... rising this much above the darkest point nearer the centre
ROOF_DIP_HU = 150.0  # a dip this deep right outside a first ridge: a visible joint space
ROOF_GAP_MM = 3.5  # head surface to the middle of a merged roof plate (cartilage, plate)
ROOF_MIN_RAYS = 8
ROOF_MAX_SHIFT_MM = 9.0
ROOF_MIN_DEPTH_MM = 1.5  # a plate less deep inside the sphere is left alone (phantoms: 0.5-1)


@dataclass(frozen=True)
class HeadSphere:
    """A fitted femoral head in world coordinates (LPS, mm)."""

    centre: np.ndarray  # (x, y, z)
    radius: float
    support: float  # 0..1, fraction of surface rays consistent with the sphere
    label: int  # LEFT (world +x of the midline) or RIGHT

    @property
    def lateral(self) -> float:
        """+1 when lateral is world +x (patient's left side), -1 for the right side."""
        return 1.0 if self.label == LEFT else -1.0


def edge_image(array: np.ndarray, spacing: float, sigma_mm: float = 1.5) -> np.ndarray:
    """Clipped, smoothed intensities: the image that edges and surface drops are read from."""
    clipped = np.clip(array, *EDGE_CLIP_HU).astype(np.float32)
    return ndi.gaussian_filter(clipped, sigma_mm / spacing)


def body_midline_x(
    array: np.ndarray,
    grid: Grid,
    z_mm: float,
    half_height_mm: float = 60.0,
    *,
    cut_is_midline: bool = True,
) -> float:
    """World x of the body's centre (soft tissue above -400 HU) in slices near ``z_mm``.

    ``cut_is_midline``: a body cut by one x border of the grid is taken as a one-hip scan (the
    midline at that border); False takes the centroid anyway (a scan cut laterally, through
    one femur's trochanter: both hips in view). ``find_heads`` tries both when in doubt.
    """
    zs, _, xs = grid.axes_world()
    rows = np.abs(zs - z_mm) <= half_height_mm
    if not rows.any():
        rows = np.ones_like(zs, dtype=bool)
    body = array[rows] > -400.0
    per_x = body.sum(axis=(0, 1)).astype(float)
    if per_x.sum() == 0:
        return float(xs.mean())
    cut = _body_cut_side(body) if cut_is_midline else 0
    if cut != 0:
        # the field of view ends inside the body on one side (a one-hip scan cut at or near
        # the midline): the body's centroid would lie in the visible hip, so the midline is
        # taken at that border; everything in view is then on one side of it
        return float(xs[-1] if cut > 0 else xs[0])
    return float((per_x * xs).sum() / per_x.sum())


BODY_CUT_FRACTION = 0.5  # an x border crossing the body over this much of its depth cuts it


def _body_cut_side(body: np.ndarray) -> int:
    """+1 / -1 when the body is cut by the high / low x border of the grid (only one), else 0.

    ``body`` (z, y, x): soft tissue mask of some slices. The table and a stray arm reach the
    border over a few millimetres; a body cut by the field of view crosses it over most of its
    depth (y extent).
    """
    depth = body.any(axis=2).sum(axis=1)  # per slice, body extent along y (voxels)
    ok = depth > 0
    if not ok.any():
        return 0
    low = np.median(body[ok][:, :, 0].sum(axis=1) / depth[ok])
    high = np.median(body[ok][:, :, -1].sum(axis=1) / depth[ok])
    cut_low, cut_high = low >= BODY_CUT_FRACTION, high >= BODY_CUT_FRACTION
    if cut_low == cut_high:
        return 0
    return 1 if cut_high else -1


def vote_centres(smooth: np.ndarray, spacing: float) -> np.ndarray:
    """Accumulator of gradient-ray votes (same shape as ``smooth``)."""
    grads = np.gradient(smooth, spacing)
    mag = np.sqrt(grads[0] ** 2 + grads[1] ** 2 + grads[2] ** 2)
    edge = mag > 20.0  # HU/mm
    # keep edges whose bright side is bone-like
    points = np.argwhere(edge).astype(np.float32)
    unit = np.stack([g[edge] for g in grads], axis=1) / mag[edge][:, None]
    shape = np.array(smooth.shape)
    inner = np.clip(np.rint(points + unit * (1.5 / spacing + 0.5)).astype(int), 0, shape - 1)
    keep = smooth[inner[:, 0], inner[:, 1], inner[:, 2]] > 120.0
    points, unit = points[keep], unit[keep]
    weight = np.minimum(mag[edge][keep], 60.0) / 60.0
    acc = np.zeros(smooth.size, dtype=np.float64)
    for dist in np.arange(VOTE_DISTANCES_MM[0], VOTE_DISTANCES_MM[1] + 1e-6, spacing / 2):
        centre = np.rint(points + unit * (dist / spacing)).astype(int)
        inside = np.all((centre >= 0) & (centre < shape), axis=1)
        flat = np.ravel_multi_index(centre[inside].T, smooth.shape)
        acc += np.bincount(flat, weights=weight[inside], minlength=smooth.size)
    return ndi.gaussian_filter(acc.reshape(smooth.shape).astype(np.float32), 1.0)


def fibonacci_directions(n: int = 256) -> np.ndarray:
    """Nearly uniform unit vectors (n, 3: x, y, z)."""
    i = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * i / n)
    azimuth = np.pi * (1 + 5**0.5) * i
    return np.stack(
        [np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1
    )


def _sample(smooth: np.ndarray, grid: Grid, points: np.ndarray) -> np.ndarray:
    idx = grid.world_to_array(points.reshape(-1, 3)).T
    values = ndi.map_coordinates(smooth, idx, order=1, mode="nearest")
    return values.reshape(points.shape[:-1])


def surface_points(
    smooth: np.ndarray,
    grid: Grid,
    centre: np.ndarray,
    radius: float,
    directions: np.ndarray,
    *,
    drop: float = 15.0,
) -> np.ndarray:
    """Per direction, distance of the first strong intensity drop near ``radius`` (NaN if none).

    The head surface is where intensity falls going outward; the acetabulum's outer surface,
    a few mm further out, is the next drop, so the first one inside the window is taken.
    """
    step = min(0.75, min(grid.spacing) / 3)
    rho = np.arange(0.55 * radius, 1.45 * radius + step, step)
    prof = _sample(smooth, grid, centre + directions[:, None, :] * rho[None, :, None])
    deriv = np.gradient(prof, step, axis=1)
    is_min = np.zeros_like(deriv, dtype=bool)
    is_min[:, 1:-1] = (deriv[:, 1:-1] <= deriv[:, :-2]) & (deriv[:, 1:-1] < deriv[:, 2:])
    is_min &= deriv < -drop
    first = np.argmax(is_min, axis=1)
    found = is_min[np.arange(len(first)), first]
    # refine to sub-step precision with a parabola through the derivative minimum
    j = np.clip(first, 1, len(rho) - 2)
    rows = np.arange(len(j))
    a, b, c = deriv[rows, j - 1], deriv[rows, j], deriv[rows, j + 1]
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-6, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    dist = rho[j] + np.clip(shift, -1, 1) * step
    return np.where(found, dist, np.nan)


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Algebraic least-squares sphere through points (n, 3)."""
    a = np.column_stack([2 * points, np.ones(len(points))])
    b = (points**2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    centre = sol[:3]
    radius = float(np.sqrt(max(sol[3] + centre @ centre, 1e-6)))
    return centre, radius


def refine_sphere(
    smooth: np.ndarray,
    grid: Grid,
    centre: np.ndarray,
    radius: float = 23.0,
    iterations: int = 5,
) -> tuple[np.ndarray, float, float]:
    """Robust sphere fit to the first-drop surface points; returns (centre, radius, support)."""
    directions = fibonacci_directions()
    centre = np.asarray(centre, dtype=float)
    tol = max(3.0, 0.75 * max(grid.spacing))
    for _ in range(iterations):
        dist = surface_points(smooth, grid, centre, radius, directions)
        ok = np.isfinite(dist)
        if ok.sum() < 20:
            return centre, radius, 0.0
        pts = centre + directions[ok] * dist[ok, None]
        # robust: drop points far from the current sphere, then fit again
        for _ in range(3):
            new_c, new_r = fit_sphere(pts)
            resid = np.abs(np.linalg.norm(pts - new_c, axis=1) - new_r)
            keep = resid <= max(tol, 2.5 * np.median(resid))
            if keep.sum() < 20:
                break
            pts = pts[keep]
        moved = np.linalg.norm(new_c - centre)
        centre, radius = new_c, float(np.clip(new_r, 12.0, 36.0))
        if moved < 0.3:
            break
    dist = surface_points(smooth, grid, centre, radius, directions)
    support = float(np.mean(np.abs(dist - radius) <= tol))
    return centre, radius, support


def surface_scan(
    smooth: np.ndarray,
    grid: Grid,
    centre: np.ndarray,
    *,
    radii: tuple[float, float] = (16.0, 31.0),
    windows_mm: tuple[float, ...] = (3.5, 2.5, 1.5, 1.0),
) -> tuple[np.ndarray, float, float]:
    """Refit a head on a fine grid: the sphere on which (almost) every ray sees a drop.

    Why a second fit: with a joint space of 2-4 mm, the head's cortex, the joint space and
    the acetabular wall blur into one bright band on a coarse grid, and a first-drop fit can
    lock onto the acetabulum's outer surface. On a fine grid the head's surface is the one
    sphere where intensity falls in nearly every direction (into the joint space under the
    acetabulum, into soft tissue elsewhere); the acetabulum's outer surface does so only on
    its own half. For each candidate radius, count the rays with a drop of more than
    ``SURFACE_DROP_HU`` within a window (which tolerates an imprecise centre); take the
    radius seen by most rays (the inner one on a near tie), fit a sphere to those drops, and
    repeat with narrower windows. Returns (centre, radius, support).
    """
    directions = fibonacci_directions()
    delta = max(1.0, DELTA_SPACINGS * min(grid.spacing))
    step = 0.5
    rho = np.arange(radii[0] - windows_mm[0], radii[1] + windows_mm[0] + step, step)
    centre = np.asarray(centre, dtype=float)
    radius = float(np.mean(radii))
    support = 0.0
    for w in windows_mm:
        inner = _sample(
            smooth, grid, centre + directions[:, None, :] * (rho - delta)[None, :, None]
        )
        outer = _sample(
            smooth, grid, centre + directions[:, None, :] * (rho + delta)[None, :, None]
        )
        drop = inner - outer  # (n, len(rho))
        seen = drop > SURFACE_DROP_HU
        half = int(round(w / step))
        # rays seeing a drop within +-w of each radius: a running "any" over the window
        padded = np.pad(seen, ((0, 0), (half, half)))
        csum = np.concatenate([np.zeros((len(seen), 1)), np.cumsum(padded, axis=1)], axis=1)
        window_hits = (csum[:, 2 * half + 1 :] - csum[:, : -2 * half - 1]) > 0
        counts = window_hits.mean(axis=0)
        valid = (rho >= radii[0]) & (rho <= radii[1])
        counts = np.where(valid, counts, -1.0)
        best = counts.max()
        k = int(np.argmax(counts >= INNER_TOLERANCE * best))  # the innermost near-best radius
        r_k = float(rho[k])
        # per ray: the strongest drop inside the window around r_k
        near = np.abs(rho - r_k) <= w
        masked = np.where(near[None, :] & seen, drop, -np.inf)
        j = np.argmax(masked, axis=1)
        ok = np.isfinite(masked[np.arange(len(j)), j])
        if ok.sum() < 20:
            break
        pts = centre + directions[ok] * rho[j[ok], None]
        for _ in range(3):
            new_c, new_r = fit_sphere(pts)
            resid = np.abs(np.linalg.norm(pts - new_c, axis=1) - new_r)
            keep = resid <= max(w, 2.5 * float(np.median(resid)))
            if keep.sum() < 20 or keep.all():
                break
            pts = pts[keep]
        if not radii[0] - 3 <= new_r <= radii[1] + 3 or np.linalg.norm(new_c - centre) > 10:
            break
        centre, radius = new_c, float(new_r)
        support = float(ok.mean())
    inside = _sample(smooth, grid, centre + directions * (radius - delta))
    outside = _sample(smooth, grid, centre + directions * (radius + delta))
    support = float(np.mean(inside - outside > SURFACE_DROP_HU))
    return centre, radius, support


def free_band_fit(
    smooth: np.ndarray,
    grid: Grid,
    centre: np.ndarray,
    radius: float,
    lateral: float,
    iterations: int = 2,
) -> tuple[np.ndarray, float, float]:
    """Sphere through the head surface where no acetabulum covers it.

    On thick slices the joint space under the acetabulum can vanish, and every fit that
    counts rays is then drawn to the acetabulum's outer surface, 5-9 mm outside the head.
    Rays that leave the head downward and away from the socket (not along the neck) meet
    soft tissue right at the head surface; the steepest drop along them marks it. Returns
    (centre, radius, median steepest-drop radius of those rays around the input sphere).
    """
    directions = fibonacci_directions()
    socket_axis = np.array([-lateral, 0.0, 1.0]) / np.sqrt(2.0)
    neck_axis = np.array([lateral, 0.0, -1.0]) / np.sqrt(2.0)
    free = (directions @ socket_axis < -0.2) & (directions @ neck_axis < 0.7)
    dirs = directions[free]
    step = 0.5
    first_median = None
    centre = np.asarray(centre, dtype=float)
    for _ in range(iterations):
        rho = np.arange(0.6 * radius, radius + 2.0, step)
        prof = _sample(smooth, grid, centre + dirs[:, None, :] * rho[None, :, None])
        steepest = rho[np.argmin(np.gradient(prof, step, axis=1), axis=1)]
        if first_median is None:
            first_median = float(np.median(steepest))
        pts = centre + dirs * steepest[:, None]
        c, r = fit_sphere(pts)
        for _ in range(3):
            resid = np.abs(np.linalg.norm(pts - c, axis=1) - r)
            keep = resid <= max(2.0, 2.5 * float(np.median(resid)))
            if keep.sum() < 12 or keep.all():
                break
            pts = pts[keep]
            c, r = fit_sphere(pts)
        centre, radius = c, float(r)
    return centre, radius, radius if first_median is None else first_median


def roof_ridges(
    smooth: np.ndarray,
    grid: Grid,
    centre: np.ndarray,
    radius: float,
    lateral: float,
    *,
    raw: np.ndarray | None = None,
    step: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each upward-medial ray from a head centre meets the acetabular plate.

    Returns (directions (n, 3), distance to the plate's brightest point, NaN where no plate,
    whether a dark joint space separates a head cortex from the plate on that ray). When a
    ray first crosses a bright ridge, then a dip of ``ROOF_DIP_HU``, then a second ridge, the
    first is the head's own cortex and the second the plate; a single ridge is head and plate
    blurred together (3 mm slices, or a head without subchondral cortex). With ``raw`` (the
    unclipped HU), rays that cross metal before their ridge see an implant, not a plate: NaN.
    """
    directions = fibonacci_directions()
    socket_axis = np.array([-lateral, 0.0, 1.0]) / np.sqrt(2.0)
    dirs = directions[directions @ socket_axis > ROOF_CONE_COS]
    rho = np.arange(0.4 * radius, radius + 10.0 + step, step)
    prof = _sample(smooth, grid, centre + dirs[:, None, :] * rho[None, :, None])
    is_max = np.zeros(prof.shape, dtype=bool)
    is_max[:, 1:-1] = (prof[:, 1:-1] >= prof[:, :-2]) & (prof[:, 1:-1] > prof[:, 2:])
    darkest = np.minimum.accumulate(prof, axis=1)
    ridge = is_max & (prof > ROOF_HU) & (prof - darkest > ROOF_RISE_HU)
    if raw is not None:
        metal = _sample(raw, grid, centre + dirs[:, None, :] * rho[None, :, None]) > METAL_HU
        ridge &= ~np.logical_or.accumulate(metal, axis=1)
    dist = np.full(len(dirs), np.nan)
    joint = np.zeros(len(dirs), dtype=bool)
    for i in np.flatnonzero(ridge.any(axis=1)):
        ks = np.flatnonzero(ridge[i])
        # one merged plate: its brightest ridge within 8 mm of the first (a shoulder on the
        # rising edge is not the plate's middle)
        near = ks[rho[ks] - rho[ks[0]] <= 8.0]
        dist[i] = rho[int(near[np.argmax(prof[i, near])])]
        # a joint space anywhere on the ray (a dip between two ridges): the inner ridge is the
        # head's cortex, and ridges nearer the centre are the head's own dense trabeculae
        # (phantoms: a first ridge 5-10 mm inside the sphere moved true-centred heads down)
        for a, inner in enumerate(ks):
            for k in ks[a + 1 :]:
                if rho[k] - rho[inner] > 8.0:
                    break
                if prof[i, inner:k].min() < min(prof[i, inner], prof[i, k]) - ROOF_DIP_HU:
                    dist[i], joint[i] = rho[inner], True
                    break
            if joint[i]:
                break
    return dirs, dist, joint


def below_roof(
    smooth: np.ndarray,
    grid: Grid,
    centre: np.ndarray,
    radius: float,
    lateral: float,
    *,
    raw: np.ndarray | None = None,
) -> np.ndarray:
    """Move a head sphere out of the acetabular roof (same radius, centre shifted).

    At 3 mm the joint space is invisible and every edge-based fit can take the roof plate
    for the head's top: the sphere then holds the plate and misses the head's medial-inferior
    part (seen on the real sample CT: head top 3-4 slices too high). Where rays see one merged
    ridge, the head surface lies ``ROOF_GAP_MM`` inside it; where a joint space shows, at the
    head's own cortex (the first ridge). The centre is moved down (at most
    ``ROOF_MAX_SHIFT_MM``) until the median of those surface points on the rays that look up
    lies on the sphere; only moves
    out of the roof are made, a sphere already below it is kept.
    """
    start = centre = np.asarray(centre, dtype=float)
    for _ in range(4):
        dirs, dist, joint = roof_ridges(smooth, grid, centre, radius, lateral, raw=raw)
        ok = np.isfinite(dist)
        if ok.sum() < ROOF_MIN_RAYS:
            break
        surface = np.where(joint, dist + 0.5 * min(grid.spacing), dist - ROOF_GAP_MM)
        excess = surface[ok] - radius  # < 0: the plate lies inside the sphere
        if np.median(excess) >= -ROOF_MIN_DEPTH_MM:
            break
        # move down, away from the roof, by the median depth to which the plate enters the
        # sphere along the rays that look up; sideways the fit is not biased by the roof (a
        # move along the rays' mean direction pushed heads laterally, out of the medial part)
        mean = np.array([0.0, 0.0, 1.0])
        along = dirs[ok] @ mean
        use = along > 0.5
        if use.sum() < ROOF_MIN_RAYS:
            break
        depth = float(np.median(-excess[use] / along[use]))
        shift = -max(depth, 0.0) * mean
        centre = centre + shift
        if np.linalg.norm(shift) < 0.3:
            break
    moved = centre - start
    norm = float(np.linalg.norm(moved))
    if norm > ROOF_MAX_SHIFT_MM:
        centre = start + moved * (ROOF_MAX_SHIFT_MM / norm)
    return centre


def metal_fraction(array: np.ndarray, grid: Grid, centre: np.ndarray, radius: float) -> float:
    """Fraction of a ball's voxels that are metal. A lag screw through a head fills a few per
    cent; a ball centred on a nail, a barrel or a plate is mostly metal, round by accident."""
    zs, ys, xs = grid.axes_world()
    dist2 = (
        (zs[:, None, None] - centre[2]) ** 2
        + (ys[None, :, None] - centre[1]) ** 2
        + (xs[None, None, :] - centre[0]) ** 2
    )
    inside = dist2 <= radius**2
    return float((array[inside] > METAL_HU).mean()) if inside.any() else 0.0


def interior_mean(array: np.ndarray, grid: Grid, centre: np.ndarray, radius: float) -> float:
    """Mean HU (metal clipped to 1500) inside the inner 60 % of a ball."""
    pts = (
        centre
        + fibonacci_directions(64)[:, None, :] * (radius * np.array([0.0, 0.3, 0.6]))[None, :, None]
    )
    values = _sample(np.asarray(array), grid, pts)
    return float(np.clip(values, -1024, 1500).mean())


@dataclass(frozen=True)
class _Candidate:
    centre: np.ndarray
    radius: float
    support: float
    label: int
    votes: float  # gradient-ray votes at the centre, relative to the strongest peak


def coarse_candidates(
    array: np.ndarray, grid: Grid, *, cut_is_midline: bool = True
) -> list[_Candidate]:
    """Ball-like bone lateral to the midline on the coarse grid, strongest vote first."""
    spacing = float(grid.spacing[0])
    smooth = edge_image(array, spacing)
    acc = vote_centres(smooth, spacing)
    top = max(float(acc.max()), 1e-6)
    peaks = (acc == ndi.maximum_filter(acc, size=5)) & (acc > 0.2 * top)
    idx = np.argwhere(peaks)
    order = np.argsort(-acc[tuple(idx.T)])[:MAX_PEAKS]
    found: list[_Candidate] = []
    for k in order:
        centre0 = grid.array_to_world(idx[k])
        mid = body_midline_x(array, grid, centre0[2], cut_is_midline=cut_is_midline)
        offset = centre0[0] - mid
        if not MIN_MIDLINE_OFFSET_MM - 10 <= abs(offset) <= MAX_MIDLINE_OFFSET_MM + 10:
            continue
        centre, radius, support = refine_sphere(smooth, grid, centre0)
        if radius < COARSE_RADIUS_MM[0]:
            # the first drop was inside the ball: coarse trabecular texture (the bundled 3 mm
            # phantom's heads all collapsed to 12 mm, so only the trochanters were left);
            # the radius most rays see a drop at does not stop at the first one
            centre, radius, support = surface_scan(smooth, grid, centre0)
        offset = centre[0] - mid
        if (
            COARSE_RADIUS_MM[0] <= radius <= COARSE_RADIUS_MM[1]
            and MIN_MIDLINE_OFFSET_MM <= abs(offset) <= MAX_MIDLINE_OFFSET_MM
            and np.sign(offset) == np.sign(centre0[0] - mid)
            and support >= MIN_SUPPORT
            and _inside_fov(grid, centre, radius)
            and interior_mean(array, grid, centre, radius) >= MIN_INTERIOR_HU
        ):
            label = LEFT if offset > 0 else RIGHT
            found.append(
                _Candidate(centre, radius, support, label, float(acc[tuple(idx[k])]) / top)
            )
    return found


def socket_fraction(
    array: np.ndarray, grid: Grid, centre: np.ndarray, radius: float, lateral: float
) -> float:
    """Fraction of upward-medial rays that meet bone just outside the ball: the acetabulum.

    A femoral head sits in a socket; the ischial tuberosity, the greater trochanter and
    vertebral bodies, which can look just as round, do not.
    """
    directions = fibonacci_directions()
    axis = np.array([-lateral, 0.0, 1.0]) / np.sqrt(2.0)
    sel = directions @ axis > 0.35
    rho = np.arange(radius + 1.5, radius + 14.0, 1.0)
    values = _sample(array, grid, centre + directions[sel][:, None, :] * rho[None, :, None])
    return float(np.mean(values.max(axis=1) > SOCKET_BONE_HU))


CONSENSUS_SUPPORT = 0.06  # fits this close to the best support ...
CONSENSUS_MM = 4.0  # ... and this close to the best fit's centre are one head


def consensus_fit(
    fits: list[tuple[np.ndarray, float, float]],
) -> tuple[np.ndarray, float, float]:
    """One sphere from the surface scans of several nearby starts: the median of those that
    agree with the best one (centre, radius), with the best support.

    The support of neighbouring starts differs by a few rays (0.43-0.49), so the best one alone
    is a draw: on the real CT at 3 mm its radius ranged 18.5-20.3 mm over the seven starts, and
    a grid turned by 10 degrees picked a fit 1.8 mm larger than the CT as shipped did.
    """
    best = max(fits, key=lambda fit: fit[2])
    near = [
        fit
        for fit in fits
        if fit[2] >= best[2] - CONSENSUS_SUPPORT
        and np.linalg.norm(fit[0] - best[0]) <= CONSENSUS_MM
    ]
    centre = np.median(np.array([fit[0] for fit in near]), axis=0)
    radius = float(np.median([fit[1] for fit in near]))
    return centre, radius, best[2]


def verify(
    image: sitk.Image,
    cand: _Candidate,
    fine_spacing: float,
    *,
    starts: list[np.ndarray] | None = None,
    radii: tuple[float, float] = (16.0, 31.0),
) -> tuple[HeadSphere, float] | None:
    """Refit a candidate on a fine crop; (head, score) when it looks like a femoral head.

    ``starts``: centres to start the surface scan from (default: the candidate's centre);
    each is tried with small shifts, since the fit is sharp and a coarse centre is rough.
    Score: fine support (seen all round) + socket fraction + half the relative vote strength.
    """
    starts = [cand.centre] if starts is None else starts
    lo = np.min(starts, axis=0) - 45.0
    hi = np.max(starts, axis=0) + 45.0
    grid = lattice_grid(image, fine_spacing, (lo, hi))
    crop = resample(image, grid)
    smooth = ndi.gaussian_filter(np.clip(crop, *EDGE_CLIP_HU), SCAN_SIGMA_MM / fine_spacing)
    fits = [
        surface_scan(smooth, grid, start + shift, radii=radii)
        for start in starts
        for shift in SCAN_STARTS_MM
    ]
    centre, radius, support = consensus_fit(fits)
    lateral = 1.0 if cand.label == LEFT else -1.0
    c_free, r_free, free_median = free_band_fit(smooth, grid, centre, radius, lateral)
    if (
        radius - free_median > OUTER_LOCK_MM
        and max(HEAD_RADIUS_MM[0], radii[0]) <= r_free < radius
        and np.linalg.norm(c_free - centre) <= 8.0
    ):
        # the scan had locked onto the acetabulum: the free band gives the radius; its centre
        # (from one hemisphere) and the scan's (pulled toward the socket) err in different
        # directions, so take their mean
        centre, radius = 0.5 * (centre + c_free), r_free
    centre = below_roof(smooth, grid, centre, radius, lateral, raw=crop)
    socket = socket_fraction(crop, grid, centre, radius, lateral)
    if not (
        _in_image(image, centre - np.array([0.0, 0.0, radius + FOV_BELOW_HEAD_MM]))
        and HEAD_RADIUS_MM[0] <= radius <= HEAD_RADIUS_MM[1]
        and support >= MIN_FINE_SUPPORT
        and socket >= MIN_SOCKET
        and metal_fraction(crop, grid, centre, radius) <= MAX_METAL_FRACTION
    ):
        return None
    return HeadSphere(centre, radius, support, cand.label), support + socket + 0.5 * cand.votes


def complete_pair(
    image: sitk.Image,
    anchor: HeadSphere,
    others: list[_Candidate],
    midline_x: float,
    fine_spacing: float,
) -> tuple[HeadSphere, float] | None:
    """The other head, given one: near the anchor's mirror image, with a similar radius.

    The two femoral heads of one pelvis are nearly mirror images across the midline; a
    search there, with the radius held within ``PAIR_MAX_DR_MM`` of the anchor's, cannot lock
    onto the acetabulum's outer surface (5-9 mm larger) or onto the ilium above the joint.
    """
    label = RIGHT if anchor.label == LEFT else LEFT
    mirror = anchor.centre.copy()
    mirror[0] = 2.0 * midline_x - anchor.centre[0]
    starts = [mirror + shift for shift in PAIR_STARTS_MM] + [
        c.centre for c in others if np.linalg.norm(c.centre - mirror) <= PAIR_SEARCH_MM
    ]
    seed = _Candidate(mirror, anchor.radius, 0.0, label, 0.0)
    radii = (anchor.radius - PAIR_SCAN_DR_MM, anchor.radius + PAIR_SCAN_DR_MM)
    result = verify(image, seed, fine_spacing, starts=starts, radii=radii)
    if result is None or not _pair_consistent(anchor, result[0]):
        return None
    if np.linalg.norm(result[0].centre - mirror) > PAIR_SEARCH_MM:
        return None
    return result


def _pair_consistent(left: HeadSphere, right: HeadSphere) -> bool:
    """Two heads of one pelvis: similar height and size, a plausible distance apart."""
    gap = float(np.linalg.norm(left.centre - right.centre))
    return (
        abs(left.centre[2] - right.centre[2]) <= PAIR_MAX_DZ_MM
        and abs(left.radius - right.radius) <= PAIR_MAX_DR_MM
        and PAIR_DISTANCE_MM[0] <= gap <= PAIR_DISTANCE_MM[1]
    )


def _asymmetry(a: HeadSphere, b: HeadSphere, midline_x: float) -> float:
    """Penalty for a pair that is not a near mirror image (height, depth, size, and the
    midpoint's distance from the body's midline: on the real CT a wrong ball on one side,
    14-18 mm medial and anterior of the head, was otherwise as good a mirror of the other)."""
    d = np.abs(a.centre - b.centre)
    off_mid = abs(0.5 * (a.centre[0] + b.centre[0]) - midline_x)
    return float(d[2] / 20.0 + d[1] / 30.0 + abs(a.radius - b.radius) / 8.0 + off_mid / MIDLINE_MM)


def find_heads(image: sitk.Image, fine_spacing: float) -> dict[int, HeadSphere]:
    """Femoral heads of a CT: {LEFT: ..., RIGHT: ...} (a side is missing when not found).

    Coarse candidates (3 mm grid, strongest votes first, up to ``CANDIDATES_PER_SIDE`` per
    side) are verified on a fine crop. The best-scoring left/right pair that is anatomically
    consistent wins; otherwise each side's best candidate.
    """
    grid = lattice_grid(image, COARSE_SPACING_MM)
    array = resample(image, grid)
    heads = _find_heads(image, fine_spacing, grid, array, cut_is_midline=True)
    if len(heads) == 2 or _body_cut_side(array > -400.0) == 0:
        return heads
    # the body is cut by one side of the field of view: a one-hip scan cut near the midline,
    # or a scan cut laterally through one femur (a truncated side) with both hips in view,
    # whose midline is the body's centroid. Taking every cut for a one-hip scan lost both
    # heads of such a phantom (all lay too far from, or too close to, the border). A
    # consistent pair about the centroid settles it; a one-hip scan cannot show one.
    both = _find_heads(image, fine_spacing, grid, array, cut_is_midline=False)
    return both if len(both) == 2 or not heads else heads


def _find_heads(
    image: sitk.Image, fine_spacing: float, grid: Grid, array: np.ndarray, *, cut_is_midline: bool
) -> dict[int, HeadSphere]:
    """``find_heads`` with the midline taken one way (see ``body_midline_x``)."""
    verified: dict[int, list[tuple[HeadSphere, float]]] = {LEFT: [], RIGHT: []}
    tried = {LEFT: 0, RIGHT: 0}
    candidates = coarse_candidates(array, grid, cut_is_midline=cut_is_midline)
    for cand in candidates:
        if tried[cand.label] >= CANDIDATES_PER_SIDE:
            continue
        tried[cand.label] += 1
        result = verify(image, cand, fine_spacing)
        if result is not None:
            verified[cand.label].append(result)
    verified = {label: lateral_of_overlaps(items) for label, items in verified.items()}

    def midline(a: HeadSphere, b: HeadSphere) -> float:
        z = 0.5 * (a.centre[2] + b.centre[2])
        return body_midline_x(array, grid, z, cut_is_midline=cut_is_midline)

    pairs = [
        (
            s_left + s_right - _asymmetry(left, right, midline(left, right)),
            {LEFT: left, RIGHT: right},
        )
        for left, s_left in verified[LEFT]
        for right, s_right in verified[RIGHT]
        if _pair_consistent(left, right)
    ]
    singles = [item for items in verified.values() for item in items]
    if not singles:
        return {}
    anchor, anchor_score = max(singles, key=lambda item: item[1])
    others = [c for c in candidates if c.label != anchor.label]
    mid = body_midline_x(array, grid, anchor.centre[2], cut_is_midline=cut_is_midline)
    completed = complete_pair(image, anchor, others, mid, fine_spacing)
    if completed is not None:
        other = completed[0]
        score = anchor_score + completed[1] - _asymmetry(anchor, other, midline(anchor, other))
        pairs.append((score, {anchor.label: anchor, other.label: other}))
    if pairs:
        return max(pairs, key=lambda item: item[0])[1]
    best: dict[int, HeadSphere] = {}
    for label, items in verified.items():
        if items:
            best[label] = max(items, key=lambda item: item[1])[0]
    return best


OVERLAP_RADII = 1.25  # two balls on one side closer than this many radii: one bone
OVERLAP_MEDIAL_MM = 5.0


def lateral_of_overlaps(
    items: list[tuple[HeadSphere, float]],
) -> list[tuple[HeadSphere, float]]:
    """Of two verified balls on one side that overlap, keep the lateral one.

    The acetabulum and the pelvic wall lie medial to the femoral head, and a ball fitted
    there (the socket's wall with the head's medial half) overlaps the head. On the real CT
    rotated by 6 degrees such a ball, 20 mm medial and 10 mm anterior of the left head, made
    a better mirror of the right head (the body's midline moves with the table) and won.
    A ball lateral to the head and overlapping it would lie in the neck, which is no head.
    """
    kept = []
    for head, score in items:
        shadowed = any(
            np.linalg.norm(other.centre - head.centre)
            < OVERLAP_RADII * max(other.radius, head.radius)
            and (other.centre[0] - head.centre[0]) * other.lateral > OVERLAP_MEDIAL_MM
            for other, _ in items
            if other is not head
        )
        if not shadowed:
            kept.append((head, score))
    return kept


def _in_image(image: sitk.Image, point: np.ndarray) -> bool:
    """Whether a world point lies inside the image's voxel grid (any direction matrix)."""
    index = np.array(image.TransformPhysicalPointToContinuousIndex([float(v) for v in point]))
    return bool(np.all(index >= -0.5) and np.all(index <= np.array(image.GetSize()) - 0.5))


def _inside_fov(grid: Grid, centre: np.ndarray, radius: float) -> bool:
    """The centre and at least half the ball lie in the field of view (in z: above the floor)."""
    lo = np.asarray(grid.origin)
    hi = lo + (np.array(grid.size) - 1) * np.asarray(grid.spacing)
    return bool(np.all(centre >= lo) and np.all(centre <= hi) and centre[2] + 0.5 * radius <= hi[2])
