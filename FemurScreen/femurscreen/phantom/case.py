"""One phantom case: anatomy -> grid -> painted, blurred, noisy CT and its femur labels."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from femurscreen.labels import bone_status
from femurscreen.phantom import bone_paint, soft
from femurscreen.phantom.anatomy import (
    PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM,
    SIDE_SIGN,
    Anatomy,
    Implant,
    sample_anatomy,
)
from femurscreen.phantom.bones import femur_prims, pelvis_prims, vertebra_prims
from femurscreen.phantom.grid import DIRECTION_MODES, SIZES, Grid, direction_for, grid_around
from femurscreen.phantom.scanner import Scanner
from femurscreen.phantom.scanner import resolve as resolve_scanner
from femurscreen.phantom.texture import make_tile
from femurscreen.phantom.truth import side_truth
from femurscreen.phantom.voxelize import Painter, finish, slabs, tissue_map

# independent random streams of a case, so that changing one (say the grid orientation)
# never changes the others (the patient, the noise)
STREAM_ANATOMY, STREAM_GRID, STREAM_TEXTURE, STREAM_NOISE, STREAM_OPTIONS = range(5)
JOINT_MODES = ("normal", "hard")
HARD_JOINT_GAP_MM = (0.0, 4.0)  # real joints at 3 mm often show no gap at all
_HARD_JOINT_STREAM = 4243  # its own stream: the default anatomy draws nothing more


@dataclass(frozen=True)
class PhantomOptions:
    """How a case is imaged. ``direction`` is a mode of ``--direction`` or an explicit
    row-major 3x3 direction matrix; ``implant``/``truncate`` are False, True (side drawn
    from the case seed) or a side name; ``fov`` replaces the field of view by a world box
    ((x0, y0, z0), (x1, y1, z1)) in mm, e.g. to render only one hip in a test.
    ``scanner``: "identity" (default: HU exactly as before scanners existed), "random" (drawn
    from the case seed, see :mod:`femurscreen.phantom.scanner`) or a Scanner.
    ``joint``: "normal" (default) or "hard", a joint as hard to segment as on real CT, for
    training segmentation only (gap 0-4 mm, dense sourcil, thin subchondral head cortex,
    pelvic bone with the femur's density). ``tissues``: also return/write the tissue label
    map (:data:`femurscreen.labels.TISSUES`) that appearance randomisation needs.
    Neither changes the default CT."""

    size: str = "hips"
    spacing: tuple[float, float, float] | None = None
    direction: str | tuple[float, ...] = "lps"
    implant: bool | str = False
    truncate: bool | str = False
    noise: bool = True
    fov: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    scanner: str | Scanner = "identity"
    joint: str = "normal"
    tissues: bool = False

    def __post_init__(self) -> None:
        if self.joint not in JOINT_MODES:
            raise ValueError(f"joint must be one of {', '.join(JOINT_MODES)}, got {self.joint!r}")
        if not isinstance(self.scanner, Scanner) and self.scanner not in ("identity", "random"):
            raise ValueError(f"scanner must be 'identity' or 'random', got {self.scanner!r}")
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if isinstance(self.direction, str) and self.direction not in DIRECTION_MODES:
            raise ValueError(
                f"direction must be one of {', '.join(DIRECTION_MODES)}, got {self.direction!r}"
            )
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise ValueError(f"spacing must be three positive numbers, got {self.spacing!r}")


def streams(seed: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]


def _side(choice: bool | str, rng: np.random.Generator) -> str | None:
    if choice is False or choice is None:
        return None
    if choice is True:
        return "left" if rng.random() < 0.5 else "right"
    if choice not in SIDE_SIGN:
        raise ValueError(f"side must be 'left' or 'right', got {choice!r}")
    return str(choice)


def prepare(seed: int, t_score: float, options: PhantomOptions) -> tuple[Anatomy, Grid]:
    """The case's anatomy (with implant/truncation decided) and its image grid, without
    rendering: cheap, so tests and planners can inspect the geometry of any case."""
    anatomy = sample_anatomy(seed, t_score)
    rngs = streams(seed)
    opt_rng = rngs[STREAM_OPTIONS]
    implant_side = _side(options.implant, opt_rng)
    if implant_side:
        anatomy.implant = Implant(
            side=implant_side,
            kind="dhs" if opt_rng.random() < 0.6 else "screws",
            hu=float(opt_rng.uniform(2900.0, 3071.0)),
        )
    anatomy.truncated_side = _side(options.truncate, opt_rng)
    if options.joint == "hard":
        anatomy.hard_joint = True
        jrng = np.random.default_rng(np.random.SeedSequence([int(seed), _HARD_JOINT_STREAM]))
        for side in ("left", "right"):
            anatomy.pelvis.acetabula[side].gap = float(jrng.uniform(*HARD_JOINT_GAP_MM))
    return anatomy, case_grid(anatomy, options, rngs[STREAM_GRID])


def body_extent(anatomy: Anatomy, z_lo: float, z_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """World box of the skin between world heights z_lo and z_hi (coarse 3 mm sampling)."""
    b = anatomy.body
    sh = anatomy.shift
    zs = np.arange(z_lo, z_hi + 3.0, 3.0, dtype=np.float32) - np.float32(sh[2])
    xs = np.arange(-330, 331, 3.0, dtype=np.float32)
    ys = np.arange(-330, b.table_y + 3.0, 3.0, dtype=np.float32)
    d_out, _ = soft.body_fields(anatomy, xs[None, None, :], ys[None, :, None], zs[:, None, None])
    inside = d_out < 0
    xi = xs[np.any(inside, axis=(0, 1))]
    yi = ys[np.any(inside, axis=(0, 2))]
    lo = np.array([xi.min() - 2.0, yi.min() - 2.0, z_lo]) + [sh[0], sh[1], 0]
    hi = np.array([xi.max() + 2.0, b.table_y, z_hi]) + [sh[0], sh[1], 0]
    return lo, hi


def case_grid(anatomy: Anatomy, options: PhantomOptions, rng: np.random.Generator) -> Grid:
    """The field of view: iliac crests to below the label cut, skin to table (``hips``), or a
    fixed 512 x 512 x 300 block from the same bottom upward (``abdomen``)."""
    preset = SIZES[options.size]
    spacing = tuple(options.spacing) if options.spacing else preset["spacing"]
    direction = (
        direction_for(options.direction, rng)
        if isinstance(options.direction, str)
        else tuple(float(v) for v in options.direction)
    )
    p = anatomy.pelvis
    crest_top = max(
        float(anatomy.to_world(np.array([s * p.crest_x * 0.85, p.wing_center[1], p.crest_z]))[2])
        for s in (1.0, -1.0)
    )
    z_hi = crest_top + float(rng.uniform(4.0, 12.0))
    z_lo = min(anatomy.cut_z(s) for s in SIDE_SIGN) - float(rng.uniform(15.0, 28.0))
    lo, hi = body_extent(anatomy, z_lo, z_hi)
    lo[0] -= rng.uniform(3.0, 15.0)
    hi[0] += rng.uniform(3.0, 15.0)
    lo[1] -= rng.uniform(5.0, 20.0)
    hi[1] += 12.0  # the top of the table
    if anatomy.truncated_side:
        f = anatomy.femurs[anatomy.truncated_side]
        edge = anatomy.to_world(f.gt_center + f.gt_radii[0] * f.lateral)[0]
        depth = float(rng.uniform(14.0, 30.0))
        if f.sign > 0:
            hi[0] = edge - depth
        else:
            lo[0] = edge + depth
    if options.fov is not None:
        lo = np.asarray(options.fov[0], dtype=np.float64)
        hi = np.asarray(options.fov[1], dtype=np.float64)
        return grid_around(lo, hi, spacing, direction)
    counts = preset["counts"]
    if counts is not None:
        # a fixed field of view (counts x the preset's spacing), whatever the spacing
        extent = np.asarray(counts) * np.asarray(preset["spacing"])
        counts = tuple(int(round(e / s)) for e, s in zip(extent, spacing, strict=True))
        return grid_around(lo, hi, spacing, direction, counts, ("center", "center", "low"))
    return grid_around(lo, hi, spacing, direction)


def make_case(
    seed: int, t_score: float, options: PhantomOptions | None = None
) -> tuple[sitk.Image, sitk.Image, dict]:
    """Render one case. Returns the CT (int16 HU), the femur label map (uint8: 0 background,
    1 patient's left, 2 patient's right, same geometry) and a dict describing the case."""
    ct, mask, _, info = make_case_tissues(seed, t_score, options)
    return ct, mask, info


def make_case_tissues(
    seed: int, t_score: float, options: PhantomOptions | None = None
) -> tuple[sitk.Image, sitk.Image, sitk.Image | None, dict]:
    """``make_case`` plus the tissue label map (uint8, same grid) when ``options.tissues``
    (else None): what per-tissue appearance randomisation of segmentation training reads."""
    options = options or PhantomOptions()
    start = time.perf_counter()
    anatomy, grid = prepare(seed, t_score, options)
    rngs = streams(seed)
    den = anatomy.density
    tile = make_tile(rngs[STREAM_TEXTURE], den.wavelength, den.anisotropy)
    painter = Painter(grid, anatomy, tile, tissues=options.tissues)

    f_prims = {side: femur_prims(f) for side, f in anatomy.femurs.items()}
    p_prims = pelvis_prims(anatomy)
    s_prims = [vertebra_prims(v) for v in anatomy.vertebrae]
    implant = None
    if anatomy.implant:
        f = anatomy.femurs[anatomy.implant.side]
        i_prims = bone_paint.implant_prims(f, anatomy.implant.kind)
        srng = rngs[STREAM_OPTIONS]
        implant = (
            i_prims,
            {
                "a": anatomy.to_world(f.head_center),
                "b": anatomy.to_world(f.junction - 30.0 * f.n),
                "n": int(srng.integers(3, 7)),
                "phase": float(srng.uniform(0, np.pi)),
                "amp": float(srng.uniform(150.0, 350.0)),
            },
        )

    for chunk in slabs(grid):
        painter.chunk = chunk
        soft.paint_table(painter)
        soft.paint_body(painter)
        soft.paint_muscles(painter)
        soft.paint_cavity(painter)
        soft.paint_psoas(painter)
        soft.paint_vessels(painter)
        soft.paint_joint_and_spine_soft(painter)
        bone_paint.paint_skeleton(painter, f_prims, p_prims, s_prims)
        if implant is not None:
            assert anatomy.implant is not None  # ``implant`` is built from it
            bone_paint.paint_implant(painter, implant[0], anatomy.implant.hu, implant[1])
        painter.scratch.clear()

    tissue_image = grid.image(tissue_map(painter)) if options.tissues else None
    # the truth is read from the physical (reference-HU) field before scanner, blur and noise
    truth = density_truth(anatomy, grid, painter)
    scanner = resolve_scanner(options.scanner, seed)
    scanner.apply(painter.hu)
    if not options.noise:
        anatomy.imaging.noise_sd = 0.0
    ct = finish(painter, rngs[STREAM_NOISE])
    ct_image = grid.image(ct)
    mask_image = grid.image(painter.label)
    info = case_info(anatomy, grid)
    info["scanner"] = scanner.as_dict()
    info.update(truth)
    if anatomy.hard_joint:
        info["joint"] = "hard"
    info["render_seconds"] = round(time.perf_counter() - start, 3)
    return ct_image, mask_image, tissue_image, info


def density_truth(anatomy: Anatomy, grid: Grid, painter: Painter) -> dict:
    """True femoral-neck and total-hip aBMD per side (``true_fn_abmd_<side>_g_cm2``...),
    None for a side with an implant (its label holds metal) or a field of view that cuts it."""
    out: dict = {}
    origin = np.asarray(grid.origin, dtype=np.float64)
    for side in anatomy.femurs:
        got = None
        if side not in (anatomy.implant.side if anatomy.implant else "", anatomy.truncated_side):
            value = bone_paint.LABEL_OF_SIDE[side]
            got = side_truth(
                anatomy, side, painter.hu, painter.label, value, grid.matrix, origin, grid.spacing
            )
        for key in ("fn_abmd", "th_abmd"):
            v = None if got is None else round(got[f"{key}_g_cm2"], 5)
            out[f"true_{key}_{side}_g_cm2"] = v
    return out


def case_info(anatomy: Anatomy, grid: Grid) -> dict:
    """Parameters and landmarks of a case (world coordinates, LPS mm)."""
    d = anatomy.density
    info: dict = {
        "seed": anatomy.seed,
        "t_score": round(d.t_score, 4),
        "bone_status": bone_status(d.t_score),
        "size": list(grid.size),
        "spacing": list(grid.spacing),
        "origin": [round(v, 4) for v in grid.origin],
        "direction": [round(v, 6) for v in grid.direction],
        "implant_side": anatomy.implant.side if anatomy.implant else "",
        "implant_kind": anatomy.implant.kind if anatomy.implant else "",
        "truncated_side": anatomy.truncated_side or "",
        "trabecular_hu": round(d.trabecular_hu, 2),
        "bvtv": round(d.bvtv, 4),
        "texture_wavelength_mm": round(d.wavelength, 3),
        "cortex_mm": round(d.cortex_mm, 3),
        "cortical_hu": round(d.cortical_hu, 1),
        "marrow_hu": round(d.marrow_hu, 1),
        "canal_hu": round(d.canal_hu, 1),
        "noise_sd": round(anatomy.imaging.noise_sd, 2),
        "psf_sigma_mm": round(anatomy.imaging.psf_sigma_mm, 3),
        "cut_below_lesser_trochanter_mm": PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM,
    }
    for side, f in anatomy.femurs.items():
        info[f"{side}_head_center"] = [round(v, 3) for v in anatomy.to_world(f.head_center)]
        info[f"{side}_head_radius"] = round(f.head_radius, 3)
        info[f"{side}_joint_gap_mm"] = round(anatomy.pelvis.acetabula[side].gap, 3)
        info[f"{side}_neck_shaft_angle"] = round(f.neck_shaft_angle, 2)
        info[f"{side}_anteversion"] = round(f.anteversion, 2)
        info[f"{side}_lesser_trochanter_z"] = round(anatomy.lesser_trochanter_lowest_z(side), 3)
        info[f"{side}_cut_z"] = round(anatomy.cut_z(side), 3)
    return info


def phantom_grid(seed: int, t_score: float, options: PhantomOptions | None = None) -> Grid:
    """The image geometry ``make_case`` would produce, without rendering (milliseconds)."""
    return prepare(seed, t_score, options or PhantomOptions())[1]
