"""Picture of the segmentation of the real sample CT, to judge it by eye.

Segments ``FemurScreen/Resources/SampleData/totalseg_example_ct.nii.gz`` (or the CT given)
and writes ``Resources/segmentation_real_ct.png``: axial slices through both hips at three
levels and coronal slices through each femoral head, label outlines and a light fill
(patient's right femur blue, left orange), radiological convention (patient's right on the
picture's left, anterior up in axial views, superior up in coronal views).

    python scripts/overlay_real_ct.py [CT] [--engine classical] [--out PNG]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CT = ROOT / "FemurScreen" / "Resources" / "SampleData" / "totalseg_example_ct.nii.gz"
DEFAULT_OUT = ROOT / "Resources" / "segmentation_real_ct.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ct", nargs="?", type=Path, default=DEFAULT_CT)
    parser.add_argument("--engine", default="classical")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from femurscreen.io.ctio import read_ct
    from femurscreen.labels import LEFT, RIGHT, SIDE_COLORS
    from femurscreen.segmentation import segment

    ct = read_ct(args.ct)
    result = segment(ct, engine=args.engine)
    ct_lps = sitk.DICOMOrient(ct, "LPS")
    lab_lps = sitk.DICOMOrient(result.labels, "LPS")
    image = sitk.GetArrayFromImage(ct_lps).astype(np.float32)  # z (up), y (ant->post), x (R->L)
    labels = sitk.GetArrayFromImage(lab_lps)
    sx, sy, sz = ct_lps.GetSpacing()

    centres = {}
    for value in (RIGHT, LEFT):
        idx = np.argwhere(labels == value)
        if len(idx):
            # the head: centroid of the top 40 mm of the mask
            top = idx[:, 0].max()
            head = idx[idx[:, 0] >= top - 40.0 / sz]
            centres[value] = np.round(head.mean(axis=0)).astype(int)
    if not centres:
        print("no femur found", file=sys.stderr)
        return 1
    z_head = int(np.mean([c[0] for c in centres.values()]))
    levels = [z_head, z_head - int(round(15 / sz)), z_head - int(round(35 / sz))]
    levels = [int(np.clip(z, 0, image.shape[0] - 1)) for z in levels]

    fig, axes = plt.subplots(2, 3, figsize=(15, 9.5), facecolor="black")
    colors = {RIGHT: SIDE_COLORS["right"], LEFT: SIDE_COLORS["left"]}

    def show(ax, ct_slice, lab_slice, aspect, title, zoom=None):
        ax.imshow(ct_slice, cmap="gray", vmin=-250, vmax=1100, aspect=aspect)
        rgba = np.zeros(lab_slice.shape + (4,), dtype=np.float32)
        for value, color in colors.items():
            rgba[lab_slice == value] = (*color, 0.25)
        ax.imshow(rgba, aspect=aspect, interpolation="nearest")
        for value, color in colors.items():
            if (lab_slice == value).any():
                ax.contour(lab_slice == value, [0.5], colors=[color], linewidths=1.2)
        if zoom is not None:
            (r0, r1), (c0, c1) = zoom
            ax.set_xlim(c0, c1)
            ax.set_ylim(r1, r0)
        ax.set_title(title, color="white", fontsize=10)
        ax.text(0.01, 0.97, "R", color="yellow", transform=ax.transAxes, va="top")
        ax.text(0.97, 0.97, "L", color="yellow", transform=ax.transAxes, va="top")
        ax.set_xticks([])
        ax.set_yticks([])

    for ax, z in zip(axes[0], levels, strict=True):
        show(
            ax, image[z], labels[z], sy / sx, f"axial, {(z - z_head) * sz:+.0f} mm from head level"
        )
    for ax, value in zip(axes[1][:2], (RIGHT, LEFT), strict=True):
        if value not in centres:
            ax.axis("off")
            continue
        zc, yc, xc = centres[value]
        half = int(70 / sx)
        zoom = (
            (max(image.shape[0] - 1 - zc - int(60 / sz), 0), image.shape[0] - 1),
            (xc - half, xc + half),
        )
        side = "right" if value == RIGHT else "left"
        show(
            ax,
            image[::-1, yc, :],
            labels[::-1, yc, :],
            sz / sx,
            f"coronal through the {side} head",
            zoom,
        )
    value = RIGHT if RIGHT in centres else LEFT
    zc, yc, xc = centres[value]
    half = int(45 / sx)
    show(
        axes[1][2],
        image[zc],
        labels[zc],
        sy / sx,
        "axial zoom, right head" if value == RIGHT else "axial zoom, left head",
        ((yc - half, yc + half), (xc - half, xc + half)),
    )
    summary = ", ".join(
        f"{name}: {side.status} {side.volume_ml:.0f} ml"
        + (f" [{', '.join(side.flags)}]" if side.flags else "")
        for name, side in result.sides.items()
    )
    fig.suptitle(f"{args.ct.name} - {result.engine} engine - {summary}", color="white", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90, facecolor="black")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
