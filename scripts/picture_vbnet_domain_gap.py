"""Picture of why the demo VB-Net does not carry to the real sample CT.

For the patient's right hip of the real sample CT and of the shipped 3 mm phantom, shows the
fine network's 1 mm input crop (coronal and axial through the head) beside its femur
probability. The crop is centred where the classical engine found that femur, so the coarse
pass is out of the picture: what is shown is the fine network alone.

    python scripts/picture_vbnet_domain_gap.py [--out Resources/vbnet_domain_gap.png]
        [--weights DIR]   (another weights folder, e.g. a fine-tune; default: the shipped one)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib
import numpy as np
import SimpleITK as sitk

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from femurscreen.labels import RIGHT  # noqa: E402
from femurscreen.resources import resource_dir  # noqa: E402
from femurscreen.segmentation import segment  # noqa: E402
from femurscreen.segmentation.vbnet import VBNetEngine  # noqa: E402
from femurscreen.segmentation.vbnet.data import fine_grid  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = resource_dir() / "SampleData"
CASES = (
    ("real sample CT (3 mm)", SAMPLES / "totalseg_example_ct.nii.gz"),
    ("shipped phantom (3 mm)", SAMPLES / "femurscreen_phantom_ct.nii.gz"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "Resources" / "vbnet_domain_gap.png")
    parser.add_argument("--weights", type=Path, default=None, help="weights folder")
    args = parser.parse_args(argv)
    engine = VBNetEngine(args.weights, device="cpu")
    s = engine.settings
    fig, axes = plt.subplots(2, 4, figsize=(13, 7.4), facecolor="#303030")
    for row, (name, path) in enumerate(CASES):
        ct = sitk.ReadImage(str(path))
        labels = segment(ct, engine="classical").labels
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(labels)
        center = np.asarray(stats.GetCentroid(RIGHT))
        grid = fine_grid(center, s.crop_xyz, s.fine_spacing, RIGHT, s.crop_offset_mm)
        hu = sitk.GetArrayFromImage(grid.resample(ct))
        prob = engine._forward(engine.fine, s.norm(hu))[1]
        y = hu.shape[1] // 2
        # axial level: 75 % up the femur voxels of the crop (through the head)
        zs = np.nonzero((prob > 0.5).any(axis=(1, 2)))[0]
        z = int(zs.min() + 0.75 * (zs.max() - zs.min())) if len(zs) else hu.shape[0] * 3 // 4
        views = (
            (hu[:, y, :], f"{name}\ncoronal input (1 mm crop)", "gray"),
            (prob[:, y, :], "femur probability", "viridis"),
            (hu[z], "axial input, 3/4 up the predicted femur", "gray"),
            (prob[z], "femur probability", "viridis"),
        )
        for ax, (img, title, cmap) in zip(axes[row], views, strict=True):
            kw = {"vmin": -200, "vmax": 1000} if cmap == "gray" else {"vmin": 0, "vmax": 1}
            ax.imshow(img, origin="lower", cmap=cmap, **kw)
            ax.set_title(title, color="white", fontsize=9)
            ax.axis("off")
    fig.suptitle(
        "Demo VB-Net fine pass on the patient's right hip (crop mirrored: lateral to the right; "
        "black: outside the scan).\nPhantom: the femur. Real CT: the prediction climbs into "
        "the acetabulum and ilium.",
        color="white",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(args.out, dpi=80, facecolor="#303030")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
