"""``femurscreen preview``: a PNG of a CT (and a femur label) for a quick look."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "preview"
HELP = "write a PNG with axial and coronal slices of a CT, femur labels overlaid"
EXAMPLE = "femurscreen preview case/ct.nii.gz --mask case/femur.nii.gz --out case.png"
ORDER = 90


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct", type=Path, help="CT file (NIfTI, NRRD, MHA) or DICOM series folder")
    parser.add_argument("--mask", type=Path, help="label image: 1 = left femur, 2 = right femur")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--window", choices=("bone", "soft"), default="bone")


def run(args: argparse.Namespace) -> int:
    from femurscreen.atomic import check_output_file
    from femurscreen.io.ctio import read_ct
    from femurscreen.io.labelio import read_labels
    from femurscreen.output.render import save_preview

    check_output_file(args.out, (".png",), what="picture")
    ct = read_ct(args.ct)
    labels = read_labels(args.mask) if args.mask else None
    out = save_preview(ct, args.out, labels, title=args.ct.name, window=args.window)
    print(out)
    return 0
