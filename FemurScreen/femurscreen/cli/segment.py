"""``femurscreen segment``: both proximal femurs of a CT as a label map, with per-side status."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from femurscreen.cli._options import add_engine_option

NAME = "segment"
HELP = "segment both proximal femurs of a CT into a label map (1 = left, 2 = right femur)"
EXAMPLE = "femurscreen segment ct.nii.gz --out femur.nii.gz --engine classical"
ORDER = 20
LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")  # what SimpleITK writes as a label map
QUALITY_HELP = (
    "also compare each side's mask with the other engine's (Dice as 'quality', flag "
    "review_segmentation below 0.85; one more segmentation)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ct", type=Path, help="CT file (NIfTI, NRRD, MHA) or DICOM series folder, in HU"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="MASK",
        help="label file to write (.nii.gz, .nrrd, .mha), same geometry as the CT",
    )
    add_engine_option(parser)
    parser.add_argument("--quality", action="store_true", help=QUALITY_HELP)
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON instead of a table"
    )


def run(args: argparse.Namespace) -> int:
    from femurscreen.atomic import check_output_file
    from femurscreen.errors import NoFemurError
    from femurscreen.io.ctio import read_ct
    from femurscreen.io.labelio import write_labels
    from femurscreen.segmentation import segment

    check_output_file(args.out, LABEL_SUFFIXES, what="label map")  # before any computation
    ct = read_ct(args.ct)
    try:
        result = segment(ct, engine=args.engine, progress=_progress, quality=args.quality)
    except NoFemurError as exc:  # name the file; nothing is written
        raise NoFemurError(exc.what, exc.fix, args.ct) from None
    out = write_labels(result.labels, args.out)
    report = {"ct": str(args.ct), "mask": str(out), **result.to_dict()}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_result(report))
    return 0


def _progress(fraction: float, message: str) -> None:
    print(f"segment: {100 * fraction:3.0f}% {message}", file=sys.stderr, flush=True)


def format_result(report: dict) -> str:
    """A small table: one line per side (status, volume, flags; with ``--quality`` the Dice
    with the other engine, or why there is none)."""
    lines = [f"{report['mask']}  (engine: {report['engine']})"]
    model = report.get("model") or {}
    if model.get("demo"):
        lines.append(f"*** {model.get('demo_notice') or 'DEMO weights'} ***")
    checked = any(info.get("quality_method") for info in report["sides"].values())
    quality = f" {'quality':>8}" if checked else ""
    lines.append(f"{'side':<6} {'status':<10} {'volume_ml':>9}{quality}  flags")
    for side, info in report["sides"].items():
        flags = ", ".join(info["flags"]) or "-"
        cell = ""
        if checked:
            value = info.get("quality")
            method = str(info.get("quality_method") or "")
            text = f"{value:.3f}" if value is not None else ("n/a" if method else "-")
            cell = f" {text:>8}"
        lines.append(f"{side:<6} {info['status']:<10} {info['volume_ml']:>9.1f}{cell}  {flags}")
    if checked and any(
        str(info.get("quality_method") or "").endswith("_unavailable")
        for info in report["sides"].values()
    ):
        lines.append("quality n/a: the other engine cannot run here (no PyTorch or no weights)")
    return "\n".join(lines)
