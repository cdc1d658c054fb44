"""``femurscreen screen``: one CT in, a result folder with a report out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from femurscreen.cli._options import (
    add_engine_option,
    add_kvp_option,
    add_model_option,
    add_quality_option,
    add_scanner_calibration_option,
)

NAME = "screen"
HELP = "screen one CT: segment both proximal femurs, grade bone status, write a report"
EXAMPLE = "femurscreen screen case/ct.nii.gz --out results/case"
ORDER = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct", type=Path, help="CT file (NIfTI, NRRD, MHA) or DICOM series folder")
    parser.add_argument(
        "--out", type=Path, required=True, help="result folder (replaced if it holds a result)"
    )
    add_engine_option(parser)
    add_model_option(parser)
    parser.add_argument(
        "--series", metavar="UID", help="DICOM series UID when a folder holds several"
    )
    parser.add_argument(
        "--include-identifiers",
        action="store_true",
        help="show patient name, ID, birth date (DICOM) and the input file name in the report "
        "(default: a case label derived from the image only)",
    )
    parser.add_argument("--case-id", help="case label for the files (default: image fingerprint)")
    parser.add_argument(
        "--dicom",
        action="store_true",
        help="also write DICOM objects for PACS into OUT/dicom/ (DICOM input only): seg.dcm "
        "(segmentation), sr.dcm (measurement report), report.dcm (report capture), in the "
        "CT's study; they carry the source's patient module, the HTML report does not",
    )
    add_kvp_option(parser)
    add_scanner_calibration_option(parser)
    add_quality_option(parser)
    parser.add_argument("--json", action="store_true", help="print result.json to stdout")


def run(args: argparse.Namespace) -> int:
    from femurscreen.atomic import check_output_folder
    from femurscreen.screening import graded_sides, screen

    check_output_folder(args.out)  # a bad destination fails now, not after the computation
    result = screen(
        args.ct,
        args.out,
        engine=args.engine,
        model_dir=args.model,
        include_identifiers=args.include_identifiers,
        case_id=args.case_id,
        series_uid=args.series,
        dicom=args.dicom,
        kvp=args.kvp,
        quality=args.quality,
        scanner_calibration=args.scanner_calibration,
    )
    if result.get("demo"):
        from femurscreen.output.report import demo_banner_for

        print(demo_banner_for(sys.stderr), file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_summary(result, args.out))
    if not graded_sides(result):
        reasons = "; ".join(
            f"{side}: {(result.get(side) or {}).get('reason') or 'not graded'}"
            for side in ("right", "left")
        )
        print(
            f"femurscreen screen: error: no side could be graded ({reasons}); "
            f"see {Path(args.out) / 'report.html'}",
            file=sys.stderr,
        )
        return 1
    return 0


def format_summary(result: dict, out: Path) -> str:
    """A few lines per side for the terminal (the mask's quality check when it ran)."""
    from femurscreen.grading import quality_words

    lines = [f"case {result.get('case', '')}"]
    for side in ("right", "left"):
        info = result.get(side) or {}
        if info.get("graded"):
            p = info.get("probabilities") or {}
            probs = ", ".join(f"{k} {100 * v:.0f}%" for k, v in p.items() if v is not None)
            note = "" if info.get("applicable", True) else "  [outside training data: unreliable]"
            lines.append(f"{side:<5}  {info.get('predicted', ''):<12} ({probs}){note}")
        else:
            lines.append(f"{side:<5}  not graded: {info.get('reason') or info.get('status')}")
        words = quality_words(info)
        if words and (info.get("quality") is not None or info.get("quality_method")):
            lines.append(f"{'':<5}  mask: {words}")
    lines.append(f"report {Path(out) / 'report.html'}")
    return "\n".join(lines)
