"""Per-case anatomy: every size, angle, density and noise level of one phantom patient.

Everything is drawn from the case's random stream and its T-score, so a case is fully
described by (seed, t_score, options). Geometry is expressed in an anatomical frame: LPS
axes, millimetres, origin half-way between the two femoral-head centres. The skeleton is then
placed in the world with a small rotation (pelvic tilt, roll, yaw) and a shift; the body
outline and the table stay level with the world axes, as a patient lies on a CT table.

Density model (the signal the classifier is meant to find, deliberately noisy):
- trabecular mean HU ~ 250 + 45 T + N(0, 30), clipped at 20;
- trabecular volume fraction and texture wavelength fall/grow with lower T (sparser,
  coarser network), each with its own noise;
- cortical thickness ~ 2.5 + 0.35 T + N(0, 0.3) mm (>= 0.8), cortical HU ~ 1350 + 40 T;
- confounders: marrow fat, muscle density, patient size (and with it image noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from femurscreen.phantom.shapes import rotation, unit

SIDE_SIGN = {"left": 1.0, "right": -1.0}  # patient's left is world +x in LPS

# The "proximal femur" label ends at an axial plane this far below the lowest point of the
# lesser trochanter (see femurscreen.phantom's docstring for the full definition).
PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM = 30.0


@dataclass
class Femur:
    """One proximal femur in the anatomical frame, with its derived axes and landmarks."""

    side: str
    head_center: np.ndarray
    head_radius: float
    neck_shaft_angle: float  # degrees between neck axis and shaft axis
    anteversion: float  # degrees, neck rotated anteriorly about the shaft axis
    shaft_tilt: float  # degrees: shaft runs distally-medially in the coronal plane
    flexion: float  # degrees: small hip flexion/extension in the sagittal plane
    offset: float  # mm from the head centre to the shaft axis
    shaft_radius: float
    neck_waist_ratio: float
    gt_up: float
    gt_radii: np.ndarray  # greater trochanter semi-axes (lateral, AP, along shaft)
    lt_down: float
    lt_radii: np.ndarray  # lesser trochanter semi-axes (radial, tangential, along shaft)
    # derived
    u: np.ndarray = field(init=False)  # shaft axis, pointing proximally
    lateral: np.ndarray = field(init=False)
    posterior: np.ndarray = field(init=False)
    n: np.ndarray = field(init=False)  # neck axis, pointing from shaft towards the head
    junction: np.ndarray = field(init=False)  # neck axis meets shaft axis
    neck_length: float = field(init=False)
    gt_center: np.ndarray = field(init=False)
    lt_center: np.ndarray = field(init=False)
    lt_axes: np.ndarray = field(init=False)
    gt_axes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        s = SIDE_SIGN[self.side]
        beta = np.deg2rad(self.shaft_tilt)
        flex = np.deg2rad(self.flexion)
        self.u = unit([s * np.sin(beta), np.sin(flex), np.cos(beta)])
        y = np.array([0.0, 1.0, 0.0])
        self.posterior = unit(y - (y @ self.u) * self.u)
        self.lateral = s * unit(np.cross(self.posterior, self.u))
        th = np.deg2rad(self.anteversion)
        medial = unit(-np.cos(th) * self.lateral - np.sin(th) * self.posterior)
        gamma = np.deg2rad(180.0 - self.neck_shaft_angle)
        self.n = unit(np.cos(gamma) * self.u + np.sin(gamma) * medial)
        self.neck_length = self.offset / np.sin(gamma)
        self.junction = self.head_center - self.neck_length * self.n
        r = self.shaft_radius
        self.gt_axes = np.stack([self.lateral, self.posterior, self.u])
        self.gt_center = (
            self.junction
            + self.gt_up * self.u
            + (r * 1.05 + 4.0) * self.lateral
            + 5.0 * self.posterior
        )
        pm = unit(-0.55 * self.lateral + 0.85 * self.posterior)
        self.lt_center = self.junction - self.lt_down * self.u + (r + 3.0) * pm
        tang = unit(np.cross(self.u, pm))
        self.lt_axes = np.stack([pm, tang, self.u])

    @property
    def sign(self) -> float:
        return SIDE_SIGN[self.side]

    @property
    def shaft_top_radius(self) -> float:
        return 1.32 * self.shaft_radius

    @property
    def lt_level(self) -> float:
        """Shaft coordinate t of the lesser trochanter centre (relative to the junction)."""
        return float((self.lt_center - self.junction) @ self.u)


@dataclass
class AcetabulumSide:
    gap: float  # joint space between head and acetabular bone (mm)
    wall: float  # acetabular wall thickness (mm)
    inclination: float  # degrees of the opening axis from straight down
    anteversion: float  # degrees
    rim: float  # mm the cup extends past the hemisphere

    def opening(self, sign: float) -> np.ndarray:
        """Unit vector out of the cup (lateral, inferior, anterior)."""
        i = np.deg2rad(self.inclination)
        a = np.deg2rad(self.anteversion)
        return unit([sign * np.sin(i) * np.cos(a), -np.sin(i) * np.sin(a), -np.cos(i)])


@dataclass
class Pelvis:
    crest_z: float
    crest_x: float  # lateral reach of the iliac crest
    wing_center: np.ndarray  # for the left side (x mirrored for the right)
    wing_radii: np.ndarray
    wing_thickness: float
    asis_y: float
    si_x: float  # medial limit of the wing (sacroiliac joint)
    sacrum_center: np.ndarray  # (y, z) centre of the sacral arc
    sacrum_radius: float
    sacrum_angles: tuple[float, float]  # degrees, (distal, proximal)
    sacrum_half_width: tuple[float, float]  # (distal, proximal)
    sacrum_half_thickness: tuple[float, float]
    scale: float
    acetabula: dict[str, AcetabulumSide]

    def wing_x(self, y: float, z: float) -> float:
        """Lateral reach |x| of the wing's mid-surface at (y, z) (left side)."""
        c, r = self.wing_center, self.wing_radii
        q = 1 - ((y - c[1]) / r[1]) ** 2 - ((z - c[2]) / r[2]) ** 2
        return float(c[0] + r[0] * np.sqrt(max(q, 0.0)))

    def sacrum_top(self) -> np.ndarray:
        """Centre of the top of the sacral arc, (y, z)."""
        a = np.deg2rad(self.sacrum_angles[1])
        return self.sacrum_center + self.sacrum_radius * np.array([np.cos(a), np.sin(a)])


@dataclass
class Vertebra:
    center: np.ndarray  # centre of the vertebral body
    radii: np.ndarray  # body semi-axes (x, y) and half height
    scale: float


@dataclass
class Body:
    """Trunk and thigh outlines in the (untilted) body frame: functions of z by control points."""

    z: np.ndarray  # control levels
    half_width: np.ndarray  # inner (sub-fascial) compartment half width
    y_post: np.ndarray
    y_ant: np.ndarray
    fat_lat: float
    fat_ant: float
    fat_post: float
    skin: float
    perineum_z: float
    thigh_radius: float
    table_y: float  # table top (posterior limit of the body)
    fat_hu: float
    muscle_hu: float
    skin_hu: float
    visceral_fat_hu: float


@dataclass
class Density:
    t_score: float
    trabecular_hu: float  # target mean HU of femoral trabecular bone
    bvtv: float  # trabecular volume fraction
    wavelength: float  # mm, dominant period of the trabecular texture
    cortex_mm: float
    cortical_hu: float
    marrow_hu: float  # HU of marrow between trabeculae
    canal_hu: float  # HU of the fatty medullary canal in the shaft
    anisotropy: float  # elongation of the texture along z

    @property
    def solid_hu(self) -> float:
        """HU of the trabecular-bone phase so that the mixture has the target mean."""
        f = self.bvtv
        return float(np.clip((self.trabecular_hu - (1 - f) * self.marrow_hu) / f, 150.0, 1500.0))


@dataclass
class Imaging:
    noise_sd: float  # HU, standard deviation of the final image noise
    psf_sigma_mm: float
    hu_scale: float
    hu_offset: float


@dataclass
class Loop:
    """A bowel loop: a chain of capsules with its content."""

    points: np.ndarray  # (n, 3)
    radius: float
    content: str  # "fluid", "gas", "feces"
    fluid_level: float  # y level (supine: gas anterior, i.e. smaller y)
    content_hu: float


@dataclass
class Implant:
    side: str
    kind: str  # "dhs" (lag screw + side plate) or "screws" (three cannulated screws)
    hu: float


@dataclass
class Anatomy:
    seed: int
    scale: float
    femurs: dict[str, Femur]
    pelvis: Pelvis
    vertebrae: list[Vertebra]
    body: Body
    density: Density
    imaging: Imaging
    loops: list[Loop]
    bladder: tuple[np.ndarray, np.ndarray]  # centre, semi-axes
    vessels: dict[str, list[np.ndarray]]
    skeleton_rotation: np.ndarray  # world = R @ anat + shift
    shift: np.ndarray
    implant: Implant | None = None
    truncated_side: str | None = None
    # training-only harder hip joint (PhantomOptions.joint == "hard"): femur-like pelvic
    # bone, a dense sourcil, a thin subchondral head cortex; the joint gap is redrawn 0-4 mm
    hard_joint: bool = False

    # --- frames -----------------------------------------------------------------------
    def to_world(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(p) @ self.skeleton_rotation.T + self.shift

    def lesser_trochanter_lowest_z(self, side: str) -> float:
        """World z of the lowest point of the lesser trochanter (analytic, ellipsoid)."""
        f = self.femurs[side]
        row = self.skeleton_rotation[2]
        cz = float(self.to_world(f.lt_center)[2])
        spread = np.sqrt(
            sum((r * float(row @ ax)) ** 2 for r, ax in zip(f.lt_radii, f.lt_axes, strict=True))
        )
        return cz - float(spread)

    def cut_z(self, side: str) -> float:
        """World z of the axial plane that ends the proximal-femur label of ``side``."""
        return self.lesser_trochanter_lowest_z(side) - PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM

    def head_top_z(self, side: str) -> float:
        f = self.femurs[side]
        return float(self.to_world(f.head_center)[2] + f.head_radius)


# --------------------------------------------------------------------------------------
# sampling


def _clipped_normal(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float):
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def sample_density(rng: np.random.Generator, t: float, size_factor: float) -> Density:
    """Bone density and texture for T-score ``t`` (noisy on purpose, see module docstring)."""
    trab = max(20.0, 250.0 + 45.0 * t + rng.normal(0.0, 30.0))
    bvtv = float(np.clip(0.27 + 0.04 * t + rng.normal(0.0, 0.03), 0.06, 0.45))
    wavelength = float(np.clip(1.9 - 0.18 * t + rng.normal(0.0, 0.15), 1.4, 3.2))
    cortex = max(0.8, 2.5 + 0.35 * t + rng.normal(0.0, 0.3))
    cortical = float(np.clip(1350.0 + 40.0 * t + rng.normal(0.0, 50.0), 950.0, 1700.0))
    # marrow fat rises with age (lower T) and with body fat: a confounder of the bone HU
    canal = float(np.clip(rng.normal(-5.0, 18.0) + 9.0 * t - 10.0 * size_factor, -90.0, 40.0))
    marrow = float(np.clip(canal + rng.normal(25.0, 10.0), -60.0, 60.0))
    return Density(
        t_score=float(t),
        trabecular_hu=float(trab),
        bvtv=bvtv,
        wavelength=wavelength,
        cortex_mm=float(cortex),
        cortical_hu=cortical,
        marrow_hu=marrow,
        canal_hu=canal,
        anisotropy=float(rng.uniform(1.2, 1.8)),
    )


def _sample_femur(rng: np.random.Generator, side: str, base: dict, s: float) -> Femur:
    sign = SIDE_SIGN[side]
    hc = np.array(
        [
            sign * (base["half_width"] + rng.normal(0, 1.5)),
            rng.normal(0, 1.5),
            rng.normal(0, 1.5),
        ]
    )
    r_h = float(np.clip(base["head_radius"] + rng.normal(0, 0.4), 21.0, 27.0))
    return Femur(
        side=side,
        head_center=hc,
        head_radius=r_h,
        neck_shaft_angle=float(np.clip(base["nsa"] + rng.normal(0, 1.5), 120.0, 140.0)),
        anteversion=float(np.clip(base["antev"] + rng.normal(0, 2.0), 5.0, 25.0)),
        shaft_tilt=float(base["tilt"] + rng.normal(0, 0.7)),
        flexion=float(base["flex"] + rng.normal(0, 1.0)),
        offset=float(np.clip(base["offset"] + rng.normal(0, 1.0), 30.0, 52.0)),
        shaft_radius=float(np.clip(base["shaft_r"] + rng.normal(0, 0.3), 11.5, 17.0)),
        neck_waist_ratio=float(np.clip(rng.normal(0.70, 0.025), 0.62, 0.78)),
        gt_up=float(rng.normal(2.0, 2.0) * s),
        gt_radii=np.array([13.0, 19.0, 25.0]) * s * rng.uniform(0.93, 1.07, 3),
        lt_down=float(base["lt_down"] + rng.normal(0, 1.5)),
        lt_radii=np.array([8.5, 10.0, 14.0]) * s * rng.uniform(0.9, 1.1, 3),
    )


def sample_anatomy(seed: int, t_score: float) -> Anatomy:
    """All parameters of one phantom patient from ``seed`` and ``t_score``."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    s = _clipped_normal(rng, 1.0, 0.05, 0.88, 1.12)  # skeletal size
    obesity = float(rng.uniform(0.0, 1.0))

    base = {
        "half_width": 84.0 * s + rng.normal(0, 2.0),
        "head_radius": float(np.clip(23.5 * s + rng.normal(0, 0.9), 21.3, 26.7)),
        "nsa": _clipped_normal(rng, 129.0, 4.5, 121.0, 139.0),
        "antev": _clipped_normal(rng, 14.0, 5.0, 6.0, 24.0),
        "tilt": float(rng.normal(8.0, 1.5)),
        "flex": float(rng.normal(0.0, 3.0)),
        "offset": 38.0 * s + rng.normal(0, 2.5),
        "shaft_r": 14.0 * s + rng.normal(0, 0.7),
        "lt_down": 23.0 * s + rng.normal(0, 2.0),
    }
    femurs = {side: _sample_femur(rng, side, base, s) for side in ("left", "right")}

    acetabula = {
        side: AcetabulumSide(
            gap=float(rng.uniform(1.6, 3.9)),
            wall=float(rng.uniform(8.0, 13.0)),
            inclination=float(rng.uniform(38.0, 50.0)),
            anteversion=float(rng.uniform(12.0, 22.0)),
            rim=float(rng.uniform(0.0, 4.0)),
        )
        for side in ("left", "right")
    }

    crest_z = 112.0 * s + rng.normal(0, 5.0)
    crest_x = 126.0 * s + rng.normal(0, 4.0)
    hw = base["half_width"]
    # the iliac wing is a shell of an ellipsoid centred antero-medially: in axial slices an
    # oblique plate from the sacroiliac joint to the anterior superior iliac spine, concave
    # towards the iliac fossa, flaring laterally up to the crest
    wing_cx, wing_cy, wing_cz = 10.0 * s, -60.0 * s + rng.normal(0, 4.0), crest_z - 8.0
    ax = crest_x - wing_cx
    ay = 140.0 * s + rng.normal(0, 5.0)
    qx = (hw - 5.0 - wing_cx) / ax
    qy = wing_cy / ay
    az = (wing_cz - 33.0 * s) / np.sqrt(max(0.05, 1 - qx * qx - qy * qy))
    pelvis = Pelvis(
        crest_z=crest_z,
        crest_x=crest_x,
        wing_center=np.array([wing_cx, wing_cy, wing_cz]),
        wing_radii=np.array([ax, ay, az]),
        wing_thickness=float(rng.uniform(3.0, 5.0)),
        asis_y=-50.0 * s + rng.normal(0, 3.0),
        si_x=53.0 * s,
        sacrum_center=np.array([-15.0 * s, 25.0 * s]) + rng.normal(0, 3.0, 2),
        sacrum_radius=100.0 * s,
        sacrum_angles=(-25.0, 37.0 + rng.normal(0, 2.0)),
        sacrum_half_width=(13.0 * s, 50.0 * s),
        sacrum_half_thickness=(7.0 * s, 21.0 * s),
        scale=s,
        acetabula=acetabula,
    )

    # lumbar spine: L5 sits on the sacrum, the others stack above it with a lordotic curve
    top = pelvis.sacrum_top()
    vertebrae = []
    zc = top[1] + 9.0 * s + 13.0 * s
    yc = top[0] - 14.0 * s
    for level in range(5):
        vertebrae.append(
            Vertebra(
                center=np.array([0.0, yc, zc]),
                radii=np.array([25.0, 18.0, 13.0]) * s * (1.0 - 0.03 * level),
                scale=s,
            )
        )
        zc += 37.0 * s * (1.0 - 0.02 * level)
        yc -= 6.0 * s * (1.0 - 0.4 * level)

    # body outline: control levels from the thighs to the upper abdomen
    gt_lat = max(
        abs(f.gt_center[0]) + f.gt_radii[0] + 3.0 for f in femurs.values()
    )  # bony hip width
    perineum_z = -78.0 * s + rng.normal(0, 4.0)
    belly = 35.0 * obesity * rng.uniform(0.3, 1.0)
    zs = np.array(
        [
            -400.0,
            perineum_z - 30.0,
            perineum_z,
            -40.0 * s,
            0.0,
            50.0 * s,
            crest_z,
            crest_z + 60.0,
            600.0,
        ]
    )
    glut = rng.uniform(8.0, 18.0)
    half_width = np.array(
        [
            gt_lat + 2.0,
            gt_lat + 4.0,
            gt_lat + 6.0,
            gt_lat + 10.0,
            gt_lat + glut,
            crest_x + 16.0 + glut,
            crest_x + 12.0,
            crest_x + 8.0,
            crest_x + 8.0,
        ]
    )
    y_post = np.array([95, 100, 105, 118, 124, 122, 112, 105, 100], dtype=float) * s
    y_ant = np.array([-70, -72, -76, -82, -84, -92, -95, -100, -100], dtype=float) * s
    y_ant[5:] -= belly
    fat = 6.0 + 34.0 * obesity * rng.uniform(0.7, 1.0)
    body = Body(
        z=zs,
        half_width=half_width,
        y_post=y_post,
        y_ant=y_ant,
        fat_lat=fat * rng.uniform(0.7, 1.1),
        fat_ant=fat * rng.uniform(0.9, 1.4),
        fat_post=fat * rng.uniform(0.9, 1.3) + 4.0,
        skin=float(rng.uniform(1.2, 2.0)),
        perineum_z=perineum_z,
        thigh_radius=float(72.0 * s + 10.0 * obesity + rng.normal(0, 3.0)),
        table_y=0.0,  # set below, from the body's posterior surface
        fat_hu=float(rng.normal(-100.0, 8.0)),
        muscle_hu=float(rng.normal(50.0, 5.0) + 2.0 * t_score),
        skin_hu=float(rng.normal(40.0, 8.0)),
        visceral_fat_hu=float(rng.normal(-95.0, 8.0)),
    )
    body.table_y = float(np.max(y_post[2:7]) * 1.0 + body.fat_post - rng.uniform(4.0, 14.0))

    size_factor = float(((gt_lat + fat) * 2 - 330.0) / 80.0)  # ~0 average, ~1 large patient
    density = sample_density(rng, t_score, size_factor)
    imaging = Imaging(
        noise_sd=float(np.clip(28.0 + 14.0 * size_factor + rng.normal(0, 6.0), 20.0, 60.0)),
        psf_sigma_mm=float(rng.uniform(0.6, 0.9)),
        hu_scale=float(rng.normal(1.0, 0.012)),
        hu_offset=float(rng.normal(0.0, 4.0)),
    )

    loops = _sample_loops(rng, pelvis, body, s)
    fill = rng.uniform(0.0, 1.0)
    b_r = np.array([34.0 + 14.0 * fill, 26.0 + 12.0 * fill, 24.0 + 20.0 * fill]) * s
    bladder = (np.array([rng.normal(0, 4.0), -44.0 * s + b_r[1], -22.0 * s + b_r[2]]), b_r)
    vessels = {}
    for side, sign in SIDE_SIGN.items():
        f = femurs[side]
        hx = abs(f.head_center[0])
        path = [
            np.array([sign * 15.0, 15.0, crest_z + 10.0]) * np.array([1, s, 1]),
            np.array([sign * 45.0 * s, -2.0 * s, 55.0 * s]),
            np.array([sign * (hx - 28.0), -36.0 * s, 12.0 * s]),
            np.array([sign * (hx - 22.0), -44.0 * s, -30.0 * s]),
            np.array([sign * (hx - 12.0), -38.0 * s, -220.0]),
        ]
        vessels[side] = path

    tilt = rotation([1.0, 0.0, 0.0], rng.normal(0.0, 3.0))  # pelvic tilt (sagittal)
    roll = rotation([0.0, 1.0, 0.0], rng.normal(0.0, 1.5))  # obliquity (coronal)
    yaw = rotation([0.0, 0.0, 1.0], rng.normal(0.0, 2.0))  # axial rotation
    shift = np.array([rng.normal(0, 5.0), rng.normal(0, 5.0), rng.uniform(-80.0, 80.0)])

    return Anatomy(
        seed=int(seed),
        scale=s,
        femurs=femurs,
        pelvis=pelvis,
        vertebrae=vertebrae,
        body=body,
        density=density,
        imaging=imaging,
        loops=loops,
        bladder=bladder,
        vessels=vessels,
        skeleton_rotation=yaw @ roll @ tilt,
        shift=shift,
    )


def _sample_loops(rng: np.random.Generator, pelvis: Pelvis, body: Body, s: float) -> list[Loop]:
    """Bowel: random-walk small-bowel loops packed into the lower abdomen and the front of
    the pelvis, the colon along the flanks and the sigmoid above the bladder."""

    def inside(p: np.ndarray) -> bool:
        x, y, z = p
        if z < 0.0 or z > 420.0:
            return False
        lim_x = (pelvis.crest_x - 32.0) if z > 45.0 * s else 50.0 * s
        if abs(x) > lim_x:
            return False
        y_front = np.interp(z, body.z, body.y_ant) + 20.0 * s
        y_back = 25.0 * s if z > 60.0 * s else 10.0 * s
        if abs(x) < 45.0 * s and z > pelvis.crest_z - 30.0:
            y_back = -5.0 * s  # in front of the spine and psoas
        return y_front < y < y_back

    def walk(start: np.ndarray, radius: float, steps: int) -> np.ndarray:
        pts = [start]
        direction = unit(rng.normal(size=3))
        for _step in range(steps):
            for _attempt in range(12):
                d = unit(direction + rng.normal(0, 0.9, 3))
                q = pts[-1] + d * rng.uniform(1.1, 1.8) * radius
                if inside(q):
                    pts.append(q)
                    direction = d
                    break
            else:
                break
        return np.array(pts)

    def content(kind: str | None = None) -> tuple[str, float]:
        kind = kind or str(rng.choice(["fluid", "gas", "feces"], p=[0.5, 0.22, 0.28]))
        return kind, float(rng.normal(22.0, 10.0))

    loops: list[Loop] = []
    # small bowel: dense in the pelvis/lower abdomen (the hips field of view), sparser above
    for z_lo, z_hi, count in ((8.0 * s, pelvis.crest_z + 30.0, 34), (pelvis.crest_z, 420.0, 40)):
        for _ in range(count):
            for _attempt in range(60):
                p = np.array(
                    [
                        rng.uniform(-95, 95) * s,
                        rng.uniform(-100, 25) * s,
                        rng.uniform(z_lo, z_hi),
                    ]
                )
                if inside(p):
                    break
            else:
                continue
            radius = float(rng.uniform(9.0, 14.0) * s)
            pts = walk(p, radius, int(rng.integers(3, 9)))
            if len(pts) < 2:
                continue
            kind, hu = content()
            level = float(pts[:, 1].mean() + rng.uniform(-0.6, 0.5) * radius)
            loops.append(Loop(pts, radius, kind, level, hu))
    # colon: descending on the left flank, ascending with the caecum on the right, sigmoid
    for sign in (1.0, -1.0):
        x = sign * (pelvis.crest_x - 48.0 * s)
        top = np.array([x, -5.0 * s, 420.0])
        bottom = np.array([x - sign * 8.0, -28.0 * s, pelvis.crest_z - 35.0 * s])
        radius = float(rng.uniform(17.0, 23.0) * s)
        pts = np.linspace(top, bottom, 8) + rng.normal(0, 4.0, (8, 3)) * [1, 1, 0]
        kind, hu = content("feces" if rng.random() < 0.7 else "gas")
        loops.append(Loop(pts, radius, kind, float(pts[:, 1].mean() - 0.3 * radius), hu))
    radius = float(rng.uniform(14.0, 19.0) * s)
    sig = np.array(
        [
            [45.0 * s, -20.0 * s, 55.0 * s],
            [20.0 * s, -35.0 * s, 35.0 * s],
            [-15.0 * s, -25.0 * s, 30.0 * s],
            [-10.0 * s, 10.0 * s, 25.0 * s],
            [0.0, 40.0 * s, 20.0 * s],
        ]
    ) + rng.normal(0, 4.0, (5, 3))
    kind, hu = content("feces")
    loops.append(Loop(sig, radius, kind, float(sig[:, 1].mean()), hu))
    return loops
