"""``femurscreen bmd``: CT-derived femoral-neck and total-hip aBMD, T-score and WHO class."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from femurscreen.cli._options import add_kvp_option, add_scanner_calibration_option

NAME = "bmd"
HELP = (
    "calibrated hip bone density from CT: phantomless calibration, DXA-like projection, "
    "femoral-neck / total-hip aBMD and T-score per side (a CT-derived estimate, not a DXA)"
)
EXAMPLE = "femurscreen bmd case/ct.nii.gz --mask case/femur.nii.gz --json case/bmd.json"
ORDER = 35


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct", type=Path, help="CT file (NIfTI, NRRD, MHA) or DICOM series folder")
    parser.add_argument(
        "--mask",
        type=Path,
        help="femur label map (1 = left, 2 = right) on the CT's grid; default: segment the CT "
        "with the default engine first",
    )
    add_kvp_option(parser)
    add_scanner_calibration_option(parser)
    parser.add_argument("--json", type=Path, help="write the result as JSON to this file")
    parser.add_argument(
        "--png", type=Path, help="write a picture of the projections, ROIs and calibration"
    )


def run(args: argparse.Namespace) -> int:
    from femurscreen.atomic import check_output_file, write_text
    from femurscreen.bmd import (
        check_kvp,
        check_site_calibration,
        measure,
        set_site_calibration,
    )
    from femurscreen.errors import InputError, NoFemurError
    from femurscreen.io.ctio import read_ct
    from femurscreen.io.labelio import read_labels
    from femurscreen.status import Status

    if args.json:
        check_output_file(args.json, (".json",), option="--json", what="JSON result")
    if args.png:
        check_output_file(args.png, (".png",), option="--png", what="picture")
    check_kvp(args.kvp)
    site = check_site_calibration(args.scanner_calibration) if args.scanner_calibration else None
    ct = read_ct(args.ct)
    if site is not None:
        set_site_calibration(ct, site)
    side_status = None
    if args.mask:
        labels = read_labels(args.mask, reference=ct)
    else:
        from femurscreen.segmentation import segment

        try:
            seg = segment(ct)
        except NoFemurError as exc:
            raise NoFemurError(exc.what, exc.fix, args.ct) from None
        labels = seg.labels
        side_status = {side: r.status for side, r in seg.sides.items()}
    result = measure(ct, labels, side_status=side_status, keep_images=bool(args.png), kvp=args.kvp)
    projections = result.pop("_projections", {})
    if args.png:
        from femurscreen.bmd.figure import save_figure

        save_figure(result, projections, args.png)
    text = json.dumps(result, indent=2)
    if args.json:
        write_text(args.json, text + "\n")
    print(format_result(result))
    graded = [s for s in ("left", "right") if result[s]["status"] == Status.OK]
    if not graded:
        cal = result["calibration"]
        why = cal["reason"] if cal["status"] != "ok" else "no side could be measured"
        print(f"femurscreen bmd: no side graded: {why}", file=sys.stderr)
        if cal["status"] != "ok":
            raise InputError(
                f"no density from this scan: {cal['reason']}",
                "use a non-contrast CT whose field of view includes air, fat and muscle",
                args.ct,
            )
        return 1
    return 0


def format_result(result: dict) -> str:
    cal = result["calibration"]
    pts = ", ".join(
        f"{p['name']} {p['observed_hu'] if p['observed_hu'] is not None else '-'}"
        for p in cal["points"]
    )
    site = cal.get("site")
    source = cal.get("source", "phantomless")
    lines = [
        f"calibration: {cal['status']} ({source})"
        f"{' (' + cal['reason'] + ')' if cal['reason'] else ''}",
        f"  tissue peaks (HU): {pts}; effective energy {cal.get('energy_kev')} +- "
        f"{cal.get('energy_sd_kev')} keV "
        f"(kVp {cal.get('kvp') or 'unknown'}); density {cal.get('density_slope_mg_cm3_per_hu')} "
        f"mg/cm3 {cal.get('material', 'K2HPO4')} per HU + {cal.get('density_intercept_mg_cm3')}",
    ]
    if site:
        lines.append(f"  site calibration {site['file']}: {site['status']}: {site['note']}")
    if cal.get("flags"):
        lines.append(f"  calibration flags: {', '.join(cal['flags'])}")
    lines.append(
        f"{'side':<6} {'status':<12} {'FN g/cm2':>9} {'TH g/cm2':>9} {'FN T':>6} {'TH T':>6}"
        "  WHO class     flags"
    )

    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"

    for side in ("left", "right"):
        s = result[side]
        lines.append(
            f"{side:<6} {s['status']:<12} {f(s['fn_abmd_g_cm2'], '9.3f'):>9} "
            f"{f(s['th_abmd_g_cm2'], '9.3f'):>9} {f(s['fn_t_score'], '6.1f'):>6} "
            f"{f(s['th_t_score'], '6.1f'):>6}  {s['who_class'] or '-':<13} "
            f"{','.join(s['flags'])}"
        )
    sds = [result[s].get("t_score_sd") for s in ("left", "right") if result[s].get("t_score_sd")]
    sd = f"{max(sds):.2f}" if sds else "0.37"
    lines.append(
        f"{result['label']}; T-score SD about {sd} (CTXA SEE 0.044 g/cm2 and the calibration's "
        "energy)"
    )
    return "\n".join(lines)
