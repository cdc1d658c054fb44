"""``femurscreen phantom``: write a synthetic CT cohort of the hips with femur labels."""

from __future__ import annotations

import argparse
import os
from collections import Counter

from femurscreen.labels import CLASSES

NAME = "phantom"
HELP = "write a synthetic hip CT cohort (int16 HU) with proximal-femur labels and cohort.csv"
EXAMPLE = "femurscreen phantom output/phantom --cases 20 --seed 1"
ORDER = 90


# kept literal so that `femurscreen --help` does not import the renderer; a test checks
# that they match femurscreen.phantom.grid
SIZES = ("abdomen", "hips")
DIRECTION_MODES = ("lps", "ras", "random", "oblique")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    parser.add_argument(
        "--cases", type=int, default=10, metavar="N", help="number of cases (default: 10)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="master seed; case i depends only on (S, i) (default: 0)",
    )
    parser.add_argument(
        "--size",
        choices=SIZES,
        default="hips",
        help="hips: low-dose CT of the hips, 0.8 x 0.8 x 1.0 mm, field of view "
        "from the iliac crests to below the label cut (default); abdomen: a "
        "512 x 512 x 300 abdominal CT for benchmarks",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("SX", "SY", "SZ"),
        help="voxel spacing in mm along world x, y, z (overrides the spacing of --size; "
        "the field of view stays)",
    )
    parser.add_argument(
        "--implant-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of cases with a metal implant in one femur (default: 0)",
    )
    parser.add_argument(
        "--truncate-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of cases whose field of view cuts one femur (default: 0)",
    )
    parser.add_argument(
        "--direction",
        choices=DIRECTION_MODES,
        default="lps",
        help="image orientation: lps (default), ras, random (one of the 48 "
        "axis flips/permutations per case) or oblique (a few degrees)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        metavar="N",
        help="parallel processes (default: min(2, CPUs))",
    )
    parser.add_argument(
        "--t-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="draw T-scores uniformly in [LO, HI] (default: the three WHO "
        "classes in equal proportion, T in [-4, 1])",
    )
    parser.add_argument(
        "--scanner",
        choices=("identity", "random"),
        default="identity",
        help="identity (default): HU as always; random: a per-case HU scale/offset and "
        "kVp-like contrast, for testing calibrated density (femurscreen bmd)",
    )
    parser.add_argument(
        "--joint",
        choices=("normal", "hard"),
        default="normal",
        help="normal (default); hard: for segmentation training only, a hip joint as hard as "
        "on real CT (gap 0-4 mm, dense acetabular roof, thin subchondral head cortex, pelvic "
        "bone with the femur's density)",
    )
    parser.add_argument(
        "--tissues",
        action="store_true",
        help="also write each case's tissue label map (tissue.nii.gz, a 'tissue' column) for "
        "per-tissue appearance randomisation in train-seg",
    )


def run(args: argparse.Namespace) -> int:
    from femurscreen.errors import InputError
    from femurscreen.phantom import PhantomOptions, make_cohort
    from femurscreen.phantom.cohort_writer import read_cohort

    if args.spacing is not None and min(args.spacing) <= 0:
        raise InputError(
            f"--spacing must be three positive numbers, got {args.spacing}",
            "e.g. --spacing 0.8 0.8 1.0",
        )
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}", "e.g. --workers 2")
    options = PhantomOptions(
        size=args.size,
        spacing=tuple(args.spacing) if args.spacing else None,
        direction=args.direction,
        scanner=args.scanner,
        joint=args.joint,
        tissues=args.tissues,
    )
    path = make_cohort(
        args.out,
        args.cases,
        args.seed,
        options=options,
        implant_fraction=args.implant_fraction,
        truncate_fraction=args.truncate_fraction,
        t_range=tuple(args.t_range) if args.t_range else None,
        workers=args.workers,
    )
    rows = read_cohort(path)
    counts = Counter(r["bone_status"] for r in rows)
    print(f"wrote {len(rows)} cases; table: {path}")
    print("  " + "  ".join(f"{c}: {counts.get(c, 0)}" for c in CLASSES))
    implants = sum(1 for r in rows if r.get("implant_side"))
    truncated = sum(1 for r in rows if r.get("truncated_side"))
    print(f"  implants: {implants}  truncated field of view: {truncated}")
    return 0
