"""Draw a phantom case next to the real sample CT: Resources/phantom_vs_real.png.

Top row: a phantom case at the default `hips` size; bottom row: the real CT shipped in
FemurScreen/Resources/SampleData (TotalSegmentator example, 3 mm). Columns: a coronal slice
through both femoral heads, an axial slice through the heads and an axial slice through the
iliac wings, in a bone window (W 1800 / L 400), radiological orientation (patient's right on
the image left, superior up) with true aspect ratios. The phantom's femur labels are outlined
(yellow: label 1, the patient's left; cyan: label 2, the patient's right).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from femurscreen.phantom import PhantomOptions, make_case, prepare  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL_CT = ROOT / "FemurScreen" / "Resources" / "SampleData" / "totalseg_example_ct.nii.gz"
OUT = ROOT / "Resources" / "phantom_vs_real.png"
WINDOW, LEVEL = 1800.0, 400.0
# World positions (LPS mm) of the femoral heads and the iliac wings in REAL_CT, read off that
# file once (centroids of the heads' bone at HU > 200 in its lowest slices).
REAL_HEADS_Y, REAL_HEADS_Z, REAL_WINGS_Z = -140.3, 127.3, 202.3


def lps(image: sitk.Image) -> sitk.Image:
    return sitk.DICOMOrient(image, "LPS")


def coronal(image: sitk.Image, y: float) -> tuple[np.ndarray, list[float]]:
    """Coronal slice at world y: rows superior->inferior, columns patient right->left."""
    arr = sitk.GetArrayFromImage(image)
    j = int(
        round(
            image.TransformPhysicalPointToContinuousIndex(
                (image.GetOrigin()[0], y, image.GetOrigin()[2])
            )[1]
        )
    )
    j = int(np.clip(j, 0, arr.shape[1] - 1))
    sl = arr[::-1, j, :]
    ox, _, oz = image.GetOrigin()
    sx, _, sz = image.GetSpacing()
    nx, nz = arr.shape[2], arr.shape[0]
    extent = [ox - sx / 2, ox + (nx - 0.5) * sx, oz - sz / 2, oz + (nz - 0.5) * sz]
    return sl, extent


def axial(image: sitk.Image, z: float) -> tuple[np.ndarray, list[float]]:
    """Axial slice at world z: rows anterior->posterior, columns patient right->left."""
    arr = sitk.GetArrayFromImage(image)
    o = image.GetOrigin()
    k = int(round(image.TransformPhysicalPointToContinuousIndex((o[0], o[1], z))[2]))
    k = int(np.clip(k, 0, arr.shape[0] - 1))
    ox, oy, _ = o
    sx, sy, _ = image.GetSpacing()
    ny, nx = arr.shape[1], arr.shape[2]
    extent = [ox - sx / 2, ox + (nx - 0.5) * sx, oy + (ny - 0.5) * sy, oy - sy / 2]
    return arr[k], extent


def show(ax, sl: np.ndarray, extent: list[float], title: str, mask=None) -> None:
    ax.imshow(
        sl,
        cmap="gray",
        vmin=LEVEL - WINDOW / 2,
        vmax=LEVEL + WINDOW / 2,
        extent=extent,
        interpolation="bilinear",
    )
    if mask is not None:
        for value, colour in ((1, "yellow"), (2, "cyan")):
            if (mask == value).any():
                ax.contour(
                    mask == value,
                    levels=[0.5],
                    colors=[colour],
                    linewidths=0.6,
                    extent=extent,
                    origin="upper",
                )
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.01, 0.5, "R", color="w", transform=ax.transAxes, fontsize=9, va="center")
    ax.text(0.97, 0.5, "L", color="w", transform=ax.transAxes, fontsize=9, va="center")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--t-score", type=float, default=-1.2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    anatomy, _ = prepare(args.seed, args.t_score, PhantomOptions())
    ct, mask, info = make_case(args.seed, args.t_score, PhantomOptions())
    ct, mask = lps(ct), lps(mask)
    heads = np.array([info["left_head_center"], info["right_head_center"]])
    necks = np.array(
        [
            anatomy.to_world(f.head_center - 0.5 * f.neck_length * f.n)
            for f in anatomy.femurs.values()
        ]
    )
    # coronal plane through the heads and the middle of the (anteverted) necks
    head_y = float(0.5 * (heads[:, 1].mean() + necks[:, 1].mean()))
    head_z = float(heads[:, 2].mean())
    wings_z = float(anatomy.to_world(np.array([0.0, 0.0, anatomy.pelvis.crest_z - 35.0]))[2])
    real = lps(sitk.ReadImage(str(REAL_CT)))

    fig, axes = plt.subplots(2, 3, figsize=(15, 9.5), facecolor="black")
    panels = [
        (coronal, head_y, REAL_HEADS_Y, "coronal, femoral heads"),
        (axial, head_z, REAL_HEADS_Z, "axial, femoral heads"),
        (axial, wings_z, REAL_WINGS_Z, "axial, iliac wings"),
    ]
    for col, (cut, at_phantom, at_real, name) in enumerate(panels):
        sl, ext = cut(ct, at_phantom)
        msl, _ = cut(mask, at_phantom)
        show(
            axes[0, col],
            sl,
            ext,
            f"PHANTOM: {name}\nseed {args.seed}, T = {args.t_score:+.1f} "
            f"({info['bone_status']}), 0.8 x 0.8 x 1.0 mm",
            mask=msl,
        )
        sl, ext = cut(real, at_real)
        show(axes[1, col], sl, ext, f"REAL CT: {name}\nTotalSegmentator sample, 3 mm")
    for ax in axes.ravel():
        ax.title.set_color("white")
    fig.suptitle(
        f"FemurScreen phantom (top) vs real CT (bottom), bone window W {WINDOW:.0f} / "
        f"L {LEVEL:.0f}, radiological view (patient's right on the image left)\n"
        "outlines: phantom femur labels (yellow = label 1, left; cyan = label 2, right); "
        "the real patient's left femur has a metal implant",
        color="white",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, facecolor="black")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
