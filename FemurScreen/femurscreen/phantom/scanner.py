"""The scanner of a phantom case: how physical density becomes the HU written to the file.

Why: calibrated bone density (:mod:`femurscreen.bmd`) must be tested on scans whose HU scale
differs from case to case the way real scanners differ, while the truth stays physical.

Physical model. The painted, noise-free field of a phantom is its *reference* HU ``h``: what an
ideal, water-calibrated 120 kVp scanner reads. It defines each voxel's physical density:
equivalent mineral density ``rho = MG_K2HPO4_PER_HU * h`` (mg/cm^3 of K2HPO4, water = 0), the
quantity a K2HPO4 phantom calibration would report. A :class:`Scanner` maps ``h`` to the HU
it writes, before blur and noise (attenuation is blurred, not HU after a non-linear map):

1. a kVp-like material response, piecewise linear in ``h``: air (-1000) stays, fat (-100)
   is scaled by ``fat_gain``, water (0) stays, soft tissue (60) by ``soft_gain``, and the
   mineral part above soft tissue by ``bone_gain``. Lower kVp makes both fat and bone read
   further from water (photoelectric effect); the gains are interpolated from a small table
   (approximate, of the size dual-energy CT shows: bone about +30 % from 120 to 80 kVp);
2. a miscalibration: ``scale * hu + offset``.

The default :data:`IDENTITY` leaves the field unchanged, so default phantoms are exactly those
made before scanners existed (the case's own small ``hu_scale``/``hu_offset`` stay as they were).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MG_K2HPO4_PER_HU = 0.80  # reference scanner: K2HPO4 calibration slope, water at 0 HU
KVP_TABLE = np.array([80.0, 100.0, 120.0, 140.0])
FAT_GAIN = np.array([1.20, 1.08, 1.00, 0.95])
SOFT_GAIN = np.array([1.06, 1.02, 1.00, 0.99])
BONE_GAIN = np.array([1.32, 1.13, 1.00, 0.92])
REF_AIR, REF_FAT, REF_SOFT = -1000.0, -100.0, 60.0
# random scanners: water reads -15..15 HU and air -1010..-990 HU (daily air/water calibration
# keeps both near their nominal values), the effective kVp 100-140
RANDOM_RANGES = {"water": (-15.0, 15.0), "air": (-1010.0, -990.0), "kvp": (100.0, 140.0)}
STREAM_SCANNER = 7  # a stream of the case seed that no other part of the phantom draws from


@dataclass(frozen=True)
class Scanner:
    """HU scale and offset and a kVp-like bone/soft-tissue contrast (see module docstring)."""

    scale: float = 1.0
    offset: float = 0.0
    kvp: float = 120.0

    def __post_init__(self) -> None:
        if not (0.5 <= self.scale <= 2.0 and abs(self.offset) <= 300.0):
            raise ValueError(f"implausible scanner scale/offset: {self.scale}, {self.offset}")
        if not KVP_TABLE[0] <= self.kvp <= KVP_TABLE[-1]:
            raise ValueError(f"kvp must be within 80-140, got {self.kvp}")

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0 and self.kvp == 120.0

    def gains(self) -> tuple[float, float, float]:
        """(fat, soft, bone) gains at this kVp."""
        return tuple(
            float(np.interp(self.kvp, KVP_TABLE, g)) for g in (FAT_GAIN, SOFT_GAIN, BONE_GAIN)
        )

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
    kvp = float(rng.uniform(*RANDOM_RANGES["kvp"]))
    return Scanner(scale=(water - air) / 1000.0, offset=water, kvp=kvp)


def resolve(choice: str | Scanner, seed: int) -> Scanner:
    """The scanner of option ``choice`` ("identity", "random" or a Scanner) for a case."""
    if isinstance(choice, Scanner):
        return choice
    if choice == "identity":
        return IDENTITY
    if choice == "random":
        return random_scanner(seed)
    raise ValueError(f"scanner must be 'identity', 'random' or a Scanner, got {choice!r}")
