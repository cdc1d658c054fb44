"""Slice-by-slice pictures of the hip joint on the real sample CT, for the metamorphic variants.

Why: the classical engine's mask on real CT is judged by eye (no reference mask). For each
variant of ``Testing/test_metamorphic.py`` the labels are mapped back onto the CT as shipped
and drawn over it next to the labels of the CT as shipped: axial slices of one hip from above
the head top down through the neck (every 3 mm), and a coronal slice through the head centre.
Base mask: cyan outline; variant: magenta outline (picture's left = patient's right).

    python scripts/look_joint.py [--side right] [--variants rotated+6 oblique10] [--out PNG]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Testing"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("right", "left"), default="right")
    parser.add_argument("--variants", nargs="*", default=["rotated+6", "oblique10", "5mm_slices"])
    parser.add_argument("--above-mm", type=float, default=12.0)
    parser.add_argument("--below-mm", type=float, default=36.0)
    parser.add_argument("--out", type=Path, default=ROOT / "output" / "look_joint.png")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import test_metamorphic as tm
    from femurscreen.labels import LEFT, RIGHT
    from femurscreen.segmentation import segment

    value = RIGHT if args.side == "right" else LEFT
    from femurscreen.io.ctio import read_ct
    from femurscreen.resources import resource_path

    ct = read_ct(resource_path("SampleData", "totalseg_example_ct.nii.gz"))
    base = sitk.GetArrayFromImage(segment(ct, engine="classical").labels)
    rows = [("as shipped", base)]
    for name in args.variants:
        image, transform = tm.VARIANTS[name](ct)
        rows.append(
            (name, tm.to_reference(segment(image, engine="classical").labels, ct, transform))
        )

    # display on the LPS-ordered array (this CT: direction diag(-1, -1, 1) -> flip x and y)
    lps = sitk.DICOMOrient(ct, "LPS")
    flip = [i for i in (2, 1) if np.array(ct.GetDirection()).reshape(3, 3)[2 - i, 2 - i] < 0]
    image = sitk.GetArrayFromImage(lps).astype(np.float32)
    rows = [(n, np.flip(a, axis=flip) if flip else a) for n, a in rows]
    sx, sy, sz = lps.GetSpacing()
    idx = np.argwhere(rows[0][1] == value)
    top = int(idx[:, 0].max())
    head = idx[idx[:, 0] >= top - int(round(40 / sz))]
    zc, yc, xc = np.round(head.mean(axis=0)).astype(int)
    zs = list(range(top + int(round(args.above_mm / sz)), top - int(round(args.below_mm / sz)), -1))
    zs = [z for z in zs if 0 <= z < image.shape[0]]
    half = int(round(40 / sx))
    per_row = 6
    panels = len(zs) + 1
    nrows = -(-panels // per_row)
    fig, axes = plt.subplots(
        len(rows) * nrows, per_row, figsize=(2.6 * per_row, 2.7 * nrows * len(rows))
    )
    axes = np.atleast_2d(axes)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for r, (name, lab) in enumerate(rows):
        for p in range(panels):
            ax = axes[r * nrows + p // per_row, p % per_row]
            if p < len(zs):
                z = zs[p]
                sl = (z, slice(yc - half, yc + half), slice(xc - half, xc + half))
                aspect = sy / sx
                title = f"{name}: axial {(z - top) * sz:+.0f} mm from top"
            else:
                sl = (slice(None, None, -1), yc, slice(xc - half, xc + half))
                aspect = sz / sx
                title = f"{name}: coronal at head"
            ax.imshow(image[sl], cmap="gray", vmin=-250, vmax=1100, aspect=aspect)
            outlines = [(rows[0][1][sl] == value, "cyan")]
            if r > 0:
                outlines.append((lab[sl] == value, "magenta"))
            for mask, color in outlines:
                if mask.any():
                    ax.contour(mask, [0.5], colors=[color], linewidths=0.8)
            if p == len(zs):
                n = image.shape[0] - 1
                ax.set_ylim(n - (top - int(80 / sz)), n - (top + int(15 / sz)))
            ax.set_title(title, fontsize=7)
        for p in range(panels, nrows * per_row):
            axes[r * nrows + p // per_row, p % per_row].axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
