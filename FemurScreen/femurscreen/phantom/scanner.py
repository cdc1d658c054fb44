"""The scanner of a phantom case: how physical density becomes the HU written to the file.

Why: calibrated bone density (:mod:`femurscreen.bmd`) must be tested on scans whose HU scale
differs from case to case the way real scanners differ, while the truth stays physical.

Physical model. The painted, noise-free field of a phantom is its *reference* HU ``h``: what an
ideal, water-calibrated 120 kVp scanner reads, at that beam's effective energy ``E_REF_KEV``.
It defines each voxel's physical density: equivalent mineral density
``rho = MG_K2HPO4_PER_HU * h`` (mg/cm^3 of K2HPO4, water = 0), the quantity a K2HPO4 phantom
calibration at 120 kVp would report. Each reference HU is a mixture of two neighbouring
materials, whose attenuation at any energy comes from tabulated mass attenuation coefficients
(NIST, Hubbell & Seltzer, SRD 126 Table 4, and XCOM for K2HPO4):

- ``h`` from -1000 to -100: air and adipose tissue (ICRU-44 composition, at the density that
  reads -100 HU at ``E_REF_KEV``); -100 to 0: adipose tissue and water; 0 to 60: water and
  lean soft tissue (ICRU-44 skeletal muscle composition, at the density that reads 60 HU);
- above 60: that soft tissue plus dissolved K2HPO4, ``(h - 60) * MG_K2HPO4_PER_HU`` mg/cm^3,
  displacing 0.45 cm^3 of water per g (so 1 reference HU of mineral is 0.80 mg/cm^3:
  ``E_REF_KEV`` is the energy where that holds, 65.9 keV).

A :class:`Scanner` of effective energy ``E`` (set by its kVp, :data:`NOMINAL_KEV`, plus a
per-scanner offset for filtration and patient size) writes the HU of those mixtures at ``E``,
then a miscalibration ``scale * hu + offset``, before blur and noise (attenuation is blurred,
not HU after a non-linear map; the map is linear within each material pair). Lower energy makes
fat read lower and bone higher (about +50 % for bone mineral from 140 to 80 kVp).

This module keeps its own copy of the tables: the estimator (:mod:`femurscreen.bmd`) must not
share code with the world it is tested in. The default :data:`IDENTITY` leaves the field
unchanged, so default phantoms are exactly those made before scanners existed (the case's own
small ``hu_scale``/``hu_offset`` stay as they were).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

MG_K2HPO4_PER_HU = 0.80  # reference scanner: K2HPO4 calibration slope, water at 0 HU
# NIST SRD 126 Table 4 (water, adipose ICRU-44, skeletal muscle ICRU-44) and XCOM (K2HPO4),
# mass attenuation with coherent scattering, cm^2/g
_KEV = np.array([30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0])
_MU_RHO = {
    "water": (0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505),
    "adipose": (0.3063, 0.2396, 0.2123, 0.1974, 0.1800, 0.1688, 0.1500),
    "muscle": (0.3783, 0.2685, 0.2262, 0.2048, 0.1823, 0.1693, 0.1492),
    "k2hpo4": (1.975, 0.9327, 0.5573, 0.3890, 0.2508, 0.1972, 0.1480),
}
DISPLACED_WATER_CM3_G = 0.45
REF_AIR, REF_FAT, REF_SOFT = -1000.0, -100.0, 60.0
KVP_TABLE = np.array([80.0, 100.0, 120.0, 140.0])
# random scanners: water reads -15..15 HU and air -1010..-990 HU (daily air/water calibration
# keeps both near their nominal values), kVp 100-140 in steps of 10 (as automatic kV selection
# chooses), the effective energy off its kVp's nominal value by N(0, 1.5) keV (clipped at 3)
RANDOM_RANGES = {"water": (-15.0, 15.0), "air": (-1010.0, -990.0), "kvp": (100.0, 140.0)}
KVP_STEP = 10.0
ENERGY_JITTER_KEV = 1.5
STREAM_SCANNER = 7  # a stream of the case seed that no other part of the phantom draws from


def _mu_rho(material: str, kev: float) -> float:
    table = np.log(np.asarray(_MU_RHO[material]))
    return float(np.exp(np.interp(np.log(kev), np.log(_KEV), table)))


def _mineral_hu_per_mg(kev: float) -> float:
    return _mu_rho("k2hpo4", kev) / _mu_rho("water", kev) - DISPLACED_WATER_CM3_G


E_REF_KEV = float(brentq(lambda e: _mineral_hu_per_mg(e) - 1.0 / MG_K2HPO4_PER_HU, 45.0, 90.0))
NOMINAL_KEV = np.array([52.0, 59.0, E_REF_KEV, 72.0])  # at KVP_TABLE, adult pelvis


def _tissue_hu(material: str, reference_hu: float, kev: float) -> float:
    """HU at ``kev`` of the material whose density makes it read ``reference_hu`` at E_REF."""
    density = (1.0 + reference_hu / 1000.0) * _mu_rho("water", E_REF_KEV)
    density /= _mu_rho(material, E_REF_KEV)
    return 1000.0 * (density * _mu_rho(material, kev) / _mu_rho("water", kev) - 1.0)


@dataclass(frozen=True)
class Scanner:
    """HU scale and offset and the beam's effective energy (see module docstring);
    ``energy_kev`` None: the nominal energy of ``kvp``."""

    scale: float = 1.0
    offset: float = 0.0
    kvp: float = 120.0
    energy_kev: float | None = None

    def __post_init__(self) -> None:
        if not (0.5 <= self.scale <= 2.0 and abs(self.offset) <= 300.0):
            raise ValueError(f"implausible scanner scale/offset: {self.scale}, {self.offset}")
        if not KVP_TABLE[0] <= self.kvp <= KVP_TABLE[-1]:
            raise ValueError(f"kvp must be within 80-140, got {self.kvp}")
        if self.energy_kev is not None and not 40.0 <= self.energy_kev <= 90.0:
            raise ValueError(f"effective energy must be within 40-90 keV, got {self.energy_kev}")

    @property
    def kev(self) -> float:
        """The effective energy (keV) this scanner images at."""
        if self.energy_kev is not None:
            return float(self.energy_kev)
        return float(np.interp(self.kvp, KVP_TABLE, NOMINAL_KEV))

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0 and self.kev == E_REF_KEV

    def gains(self) -> tuple[float, float, float]:
        """(fat, soft, bone) HU at this energy relative to the reference scanner's."""
        e = self.kev
        fat = _tissue_hu("adipose", REF_FAT, e) / REF_FAT
        soft = _tissue_hu("muscle", REF_SOFT, e) / REF_SOFT
        bone = _mineral_hu_per_mg(e) * MG_K2HPO4_PER_HU
        return fat, soft, bone

    def knots(self) -> tuple[np.ndarray, np.ndarray]:
        """Reference HU knots and the HU this scanner writes there (then linear, and above
        the last knot with slope ``scale * bone_gain``)."""
        fat, soft, _bone = self.gains()
        x = np.array([REF_AIR, REF_FAT, 0.0, REF_SOFT])
        y = np.array([REF_AIR, REF_FAT * fat, 0.0, REF_SOFT * soft])
        return x, self.scale * y + self.offset

    def hu(self, reference_hu: np.ndarray | float) -> np.ndarray:
        """HU this scanner writes for reference HU (vectorised; not in place)."""
        h = np.asarray(reference_hu, dtype=np.float64)
        x, y = self.knots()
        _fat, _soft, bone = self.gains()
        out = np.interp(h, x, y)
        out = np.where(h > x[-1], y[-1] + self.scale * bone * (h - x[-1]), out)
        return np.where(h < x[0], y[0] + self.scale * (h - x[0]), out)

    def solution_hu(self, mg_cm3: np.ndarray | float) -> np.ndarray:
        """HU this scanner writes for water with ``mg_cm3`` of K2HPO4 dissolved in it (a
        calibration phantom's rod; water displaced as above): not a reference-HU mixture, so
        not :meth:`hu` (bone there is K2HPO4 in soft tissue, a rod K2HPO4 in water)."""
        c = np.asarray(mg_cm3, dtype=np.float64)
        return self.scale * c * _mineral_hu_per_mg(self.kev) + self.offset

    def apply(self, field: np.ndarray) -> None:
        """Map a float32 reference-HU field in place, slab by slab (memory stays small)."""
        if self.is_identity:
            return
        flat = field.reshape(field.shape[0], -1)
        step = max(1, 4_000_000 // max(1, flat.shape[1]))
        for k in range(0, flat.shape[0], step):
            flat[k : k + step] = self.hu(flat[k : k + step]).astype(np.float32)

    def as_dict(self) -> dict[str, float]:
        fat, soft, bone = self.gains()
        return {
            "scale": round(self.scale, 5),
            "offset": round(self.offset, 3),
            "kvp": round(self.kvp, 2),
            "energy_kev": round(self.kev, 2),
            "fat_gain": round(fat, 4),
            "soft_gain": round(soft, 4),
            "bone_gain": round(bone, 4),
        }


IDENTITY = Scanner()


def random_scanner(seed: int) -> Scanner:
    """A scanner drawn from the case seed alone (its own stream: nothing else changes)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), STREAM_SCANNER]))
    water = float(rng.uniform(*RANDOM_RANGES["water"]))
    air = float(rng.uniform(*RANDOM_RANGES["air"]))
    lo, hi = RANDOM_RANGES["kvp"]
    kvp = float(lo + KVP_STEP * rng.integers(0, int(round((hi - lo) / KVP_STEP)) + 1))
    nominal = float(np.interp(kvp, KVP_TABLE, NOMINAL_KEV))
    jitter = float(np.clip(rng.normal(0.0, ENERGY_JITTER_KEV), -3.0, 3.0))
    return Scanner(scale=(water - air) / 1000.0, offset=water, kvp=kvp, energy_kev=nominal + jitter)


def resolve(choice: str | Scanner, seed: int) -> Scanner:
    """The scanner of option ``choice`` ("identity", "random" or a Scanner) for a case."""
    if isinstance(choice, Scanner):
        return choice
    if choice == "identity":
        return IDENTITY
    if choice == "random":
        return random_scanner(seed)
    raise ValueError(f"scanner must be 'identity', 'random' or a Scanner, got {choice!r}")
