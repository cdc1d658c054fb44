"""``femurscreen evaluate-seg``: Dice, HD95 and volume difference of predicted femur labels."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "evaluate-seg"
HELP = "Dice, 95% Hausdorff distance and volume difference per case and side (files or folders)"
EXAMPLE = "femurscreen evaluate-seg --pred predictions/ --ref phantoms/ --json seg_metrics.json"
ORDER = 81


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pred",
        type=Path,
        required=True,
        help="predicted label file, or a folder of them (case.nii.gz or case/<label>.nii.gz)",
    )
    parser.add_argument(
        "--ref",
        type=Path,
        required=True,
        help="reference label file or folder, named like --pred (e.g. a phantom folder)",
    )
    parser.add_argument("--json", metavar="OUT.json", type=Path, help="write the report as JSON")


def run(args: argparse.Namespace) -> int:
    from femurscreen.evaluation.seg_metrics import evaluate_seg, format_seg_table

    report = evaluate_seg(args.pred, args.ref, json_path=args.json)
    print(format_seg_table(report))
    return 0
