"""Trabecular texture: a periodic tile of band-passed noise, sampled at world positions.

A tile generated once per case (96^3 at 0.5 mm, a few tens of milliseconds with an FFT) can be
looked up at the anatomical position of any voxel, whatever the grid orientation, so the
network of one bone is the same in every orientation of the same case. Thresholding the tile
at the quantile that matches a volume fraction turns it into a network: a lower fraction and a
longer wavelength give the sparser, coarser, less connected network of osteoporotic bone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

TILE_VOXELS = 96
TILE_SPACING_MM = 0.5


@dataclass(frozen=True)
class Tile:
    values: np.ndarray  # (n, n, n) float32, zero mean, unit variance, periodic
    spacing: float
    anisotropy: float  # elongation along z

    def sample(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Nearest-neighbour lookup at points (mm); arrays broadcast like the inputs."""
        n = self.values.shape[0]
        inv = np.float32(1.0 / self.spacing)
        ix = np.floor(x * inv).astype(np.int64) % n
        iy = np.floor(y * inv).astype(np.int64) % n
        iz = np.floor(z * (inv / np.float32(self.anisotropy))).astype(np.int64) % n
        return self.values.ravel()[(ix * n + iy) * n + iz]


def make_tile(rng: np.random.Generator, wavelength_mm: float, anisotropy: float) -> Tile:
    """Band-passed Gaussian noise with its energy around 1 / ``wavelength_mm``."""
    n = TILE_VOXELS
    white = rng.standard_normal((n, n, n), dtype=np.float32)
    spec = np.fft.rfftn(white)
    fx = np.fft.fftfreq(n, d=TILE_SPACING_MM)
    fz = np.fft.rfftfreq(n, d=TILE_SPACING_MM)
    k = np.sqrt(fx[:, None, None] ** 2 + fx[None, :, None] ** 2 + fz[None, None, :] ** 2)
    k0 = 1.0 / wavelength_mm
    band = np.exp(-0.5 * ((k - k0) / (0.45 * k0)) ** 2)
    band[0, 0, 0] = 0.0
    field = np.fft.irfftn(spec * band, s=(n, n, n), axes=(0, 1, 2)).astype(np.float32)
    field -= field.mean()
    field /= field.std() + 1e-12
    return Tile(values=field, spacing=TILE_SPACING_MM, anisotropy=anisotropy)


def network(texture: np.ndarray, fraction: np.ndarray | float, softness: float = 0.45):
    """Bone fraction per voxel (0..1) of a network thresholded to volume fraction ``fraction``.

    The tile is standard normal, so the threshold for a fraction f is the normal quantile
    of 1 - f; the soft ramp of width ``softness`` (in standard deviations) stands in for the
    partial volume of trabeculae much thinner than a voxel.
    """
    f = np.clip(np.asarray(fraction, dtype=np.float32), 0.01, 0.99)
    thr = (-ndtri(f)).astype(np.float32)
    return np.clip((texture - thr) * np.float32(1.0 / softness) + np.float32(0.5), 0.0, 1.0)
