"""Slice pictures of a CT with an optional femur label overlay, in radiological convention.

Pictures are drawn from an LPS-reoriented copy of the image, so that whatever the file's
direction matrix, axial views show the patient's right on the picture's left and anterior at
the top, and coronal views show superior at the top. Pixel aspect follows the true spacing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from femurscreen.io.labelio import same_grid
from femurscreen.labels import LEFT, RIGHT, SIDE_COLORS

WINDOWS: dict[str, tuple[float, float]] = {  # name: (level, width) in HU
    "bone": (400.0, 1800.0),
    "soft": (40.0, 400.0),
}


@dataclass(frozen=True)
class Slice:
    """A 2-D picture ready for imshow: rows top-to-bottom, columns left-to-right."""

    ct: np.ndarray
    labels: np.ndarray | None
    aspect: float  # row spacing / column spacing
    title: str


def to_lps(image: sitk.Image) -> sitk.Image:
    """Reorient to the closest axis-aligned LPS frame (no resampling of values)."""
    return sitk.DICOMOrient(image, "LPS")


def _labels_on_grid(labels: sitk.Image, reference: sitk.Image) -> sitk.Image:
    if same_grid(labels, reference):
        return labels
    return sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


def centre_index(labels: np.ndarray | None, shape: Sequence[int], value: int | None = None):
    """Voxel (z, y, x) at the centroid of a label (or of all labels), else the volume centre."""
    if labels is not None:
        hit = labels == value if value is not None else labels > 0
        if hit.any():
            return tuple(int(round(c)) for c in np.argwhere(hit).mean(axis=0))
    return tuple(s // 2 for s in shape)


def slices_through(
    ct: sitk.Image,
    labels: sitk.Image | None = None,
    *,
    centre: tuple[int, int, int] | None = None,
) -> tuple[Slice, Slice]:
    """Axial and coronal slices through ``centre`` (z, y, x in the LPS-reoriented grid)."""
    ct_lps = to_lps(ct)
    arr = sitk.GetArrayViewFromImage(ct_lps)  # z, y(anterior->posterior), x(right->left)
    lab = None
    if labels is not None:
        lab = sitk.GetArrayFromImage(to_lps(_labels_on_grid(labels, ct)))
    z, y, _ = centre if centre is not None else centre_index(lab, arr.shape)
    sx, sy, sz = ct_lps.GetSpacing()
    axial = Slice(np.array(arr[z]), None if lab is None else lab[z], sy / sx, f"axial (z={z})")
    coronal = Slice(
        np.array(arr[::-1, y, :]),
        None if lab is None else lab[::-1, y, :],
        sz / sx,
        f"coronal (y={y})",
    )
    return axial, coronal


def draw(ax, picture: Slice, window: str = "bone", alpha: float = 0.45) -> None:
    """Draw one slice with its overlay on a matplotlib axis, R/L markers included."""
    level, width = WINDOWS[window]
    ax.imshow(
        picture.ct,
        cmap="gray",
        vmin=level - width / 2,
        vmax=level + width / 2,
        aspect=picture.aspect,
        interpolation="bilinear",
    )
    if picture.labels is not None:
        rgba = np.zeros(picture.labels.shape + (4,), dtype=np.float32)
        for value, side in ((LEFT, "left"), (RIGHT, "right")):
            rgba[picture.labels == value] = (*SIDE_COLORS[side], alpha)
        ax.imshow(rgba, aspect=picture.aspect, interpolation="nearest")
    ax.set_title(picture.title, fontsize=9)
    ax.text(0.01, 0.5, "R", color="yellow", transform=ax.transAxes, va="center", fontsize=10)
    ax.text(0.97, 0.5, "L", color="yellow", transform=ax.transAxes, va="center", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def save_preview(
    ct: sitk.Image,
    out: Path,
    labels: sitk.Image | None = None,
    *,
    title: str = "",
    window: str = "bone",
) -> Path:
    """Write a PNG with an axial and a coronal slice through the femurs (or the centre)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axial, coronal = slices_through(ct, labels)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), facecolor="black")
    for ax, picture in zip(axes, (axial, coronal), strict=True):
        draw(ax, picture, window)
        ax.title.set_color("white")
    if title:
        fig.suptitle(title, color="white")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part.png")
    fig.savefig(tmp, dpi=100, facecolor="black")
    plt.close(fig)
    tmp.replace(out)
    return out
