"""``femurscreen info``: read a CT with every input check and show its geometry and HU range."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "info"
HELP = "check that a CT is usable and show its size, spacing, orientation and HU range"
EXAMPLE = "femurscreen info case/ct.nii.gz --json"
ORDER = 80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ct", type=Path, help="CT file (NIfTI, NRRD, MHA/MHD) or DICOM series folder"
    )
    parser.add_argument(
        "--series",
        metavar="UID",
        help="SeriesInstanceUID to read when the DICOM folder holds several series",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    from femurscreen.io.ctio import ct_info

    info = ct_info(args.ct, series_uid=args.series)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def format_info(info: dict) -> str:
    """A short human-readable table of ``ct_info``'s result."""

    def triple(values: list[float], fmt: str) -> str:
        return " x ".join(format(v, fmt) for v in values)

    d = info["direction"]
    rows = [("file", info["path"]), ("format", info.get("format", ""))]
    if info.get("format") == "DICOM":
        uid = info.get("series_uid") or '"" (empty)'
        rows.append(("series", f"{uid}  {info.get('series_description', '')}".rstrip()))
    rows += [
        ("size", f"{triple(info['size'], 'd')} voxels"),
        ("spacing", f"{triple(info['spacing_mm'], '.4g')} mm"),
        ("extent", f"{triple(info['extent_mm'], '.1f')} mm"),
        ("origin", ", ".join(f"{v:.3f}" for v in info["origin_mm"]) + " mm (LPS world)"),
        (
            "direction",
            "; ".join(" ".join(f"{v:.4g}" for v in d[r * 3 : r * 3 + 3]) for r in (0, 1, 2)),
        ),
        ("orientation", f"{info['orientation']} (oblique by {info['oblique_degrees']:.2f} deg)"),
        ("pixel type", info["pixel_type"]),
        ("HU range", f"{info['hu_min']:g} .. {info['hu_max']:g}"),
        ("air", f"{100 * info['hu_fractions']['air_fraction']:.1f}% of voxels in -1100..-900 HU"),
    ]
    return "\n".join(f"{name:<12} {value}" for name, value in rows)
