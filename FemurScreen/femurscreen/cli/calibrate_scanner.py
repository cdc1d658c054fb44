"""``femurscreen calibrate-scanner``: a scanner's effective energy from a K2HPO4 rods phantom,
written into a site calibration file that ``bmd`` (and ``screen``/``batch``) then use."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "calibrate-scanner"
HELP = (
    "site calibration: fit a scanner's effective energy (and HU scale/offset) from a scan of a "
    "K2HPO4 rods phantom, into a site file used by later density reads of that scanner"
)
EXAMPLE = (
    "femurscreen calibrate-scanner phantom_ct/ --rods-mask rods.nii.gz --rods-json rods.json "
    "--out site_calibration.json"
)
ORDER = 36


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ct",
        type=Path,
        nargs="?",
        help="CT of the rods phantom (DICOM series folder, NIfTI, NRRD, MHA)",
    )
    parser.add_argument(
        "--rods-mask",
        type=Path,
        help="label map of the rods on the CT's grid (one label value per rod; 0 elsewhere)",
    )
    parser.add_argument(
        "--rods-json",
        type=Path,
        help='the rods: {"format": "femurscreen-rods-v1", "material": "K2HPO4", "rods": '
        '[{"label": 1, "mg_cm3": 0}, ...]}',
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="site calibration file to write, or to update (an entry of the same scanner, "
        "kVp and kernel is replaced, others are kept)",
    )
    group = parser.add_argument_group(
        "scanner and protocol (the entry's key; default: the DICOM header's, which a NIfTI "
        "file lacks)"
    )
    group.add_argument(
        "--kvp", type=float, help="tube voltage (DICOM 0018,0060); required without a header"
    )
    group.add_argument("--manufacturer", help="manufacturer (DICOM 0008,0070)")
    group.add_argument("--model", help="manufacturer's model name (DICOM 0008,1090)")
    group.add_argument("--kernel", help="convolution kernel (DICOM 0018,1210)")
    demo = parser.add_argument_group(
        "demo: write a synthetic rods phantom scan to try the calibration on (no CT needed)"
    )
    demo.add_argument(
        "--write-demo-phantom",
        type=Path,
        metavar="DIR",
        help="write rods_ct.nii.gz, rods_mask.nii.gz, rods.json (and the scanner's truth) "
        "into DIR, scanned at --kvp (default 120), and stop",
    )
    demo.add_argument(
        "--demo-energy",
        type=float,
        metavar="KEV",
        help="the demo scanner's effective energy (default: its kVp's nominal one)",
    )
    demo.add_argument("--demo-seed", type=int, default=0, help="noise and drift seed")


def _write_demo(args: argparse.Namespace) -> int:
    """``--write-demo-phantom``: render and write a rods phantom (femurscreen.phantom.rods)."""
    from femurscreen.atomic import check_output_folder
    from femurscreen.bmd import check_kvp
    from femurscreen.errors import InputError
    from femurscreen.phantom.rods import write_rods_phantom
    from femurscreen.phantom.scanner import Scanner

    for option, value in (("a CT", args.ct), ("--rods-mask", args.rods_mask)):
        if value is not None:
            raise InputError(
                f"--write-demo-phantom writes a phantom; it takes no {option}",
                "write the demo first, then calibrate on it (the command it prints)",
            )
    check_output_folder(args.write_demo_phantom, option="--write-demo-phantom")
    check_kvp(args.kvp)
    kvp = 120.0 if args.kvp is None else float(args.kvp)
    try:
        scanner = Scanner(kvp=kvp, energy_kev=args.demo_energy)
    except ValueError as exc:
        raise InputError(
            f"no demo scanner of {kvp:g} kVp / {args.demo_energy} keV ({exc})",
            "give --kvp 80-140 and --demo-energy 40-90 keV (or leave it out)",
        ) from None
    paths = write_rods_phantom(args.write_demo_phantom, scanner, seed=args.demo_seed)
    print(
        f"wrote a rods phantom scanned at {kvp:g} kVp (effective energy {scanner.kev:.2f} keV, "
        f"the truth in {paths['truth'].name}) into {args.write_demo_phantom}"
    )
    print(
        f"calibrate on it: femurscreen calibrate-scanner {paths['ct']} --rods-mask "
        f"{paths['mask']} --rods-json {paths['rods']} --kvp {kvp:g} --out site_calibration.json"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import SimpleITK as sitk

    from femurscreen.atomic import check_output_file
    from femurscreen.bmd import check_kvp
    from femurscreen.bmd.site import (
        fit_rods,
        read_rods_file,
        read_site_file,
        scan_tags,
        update_site_file,
    )
    from femurscreen.errors import InputError
    from femurscreen.io.ctio import read_ct
    from femurscreen.io.labelio import same_grid

    if args.write_demo_phantom is not None:
        return _write_demo(args)
    missing = [
        name
        for name, value in (
            ("CT", args.ct),
            ("--rods-mask", args.rods_mask),
            ("--rods-json", args.rods_json),
            ("--out", args.out),
        )
        if value is None
    ]
    if missing:
        raise InputError(
            f"missing {', '.join(missing)}",
            "give the phantom CT, its rods mask and rods file, and the site file to write: "
            f"{EXAMPLE}",
        )
    check_output_file(args.out, (".json",), option="--out", what="site calibration")
    if args.out.exists():
        read_site_file(args.out)  # refuse to update a file that is not one, before any work
    check_kvp(args.kvp)
    rods = read_rods_file(args.rods_json)
    ct = read_ct(args.ct)
    if not args.rods_mask.is_file():
        raise InputError("rods mask not found", "give the rods' label map", args.rods_mask)
    try:
        mask = sitk.ReadImage(str(args.rods_mask))
    except RuntimeError:
        raise InputError(
            "cannot read the rods mask", "write it as NIfTI, NRRD or MHA", args.rods_mask
        ) from None
    if mask.GetDimension() != 3 or not same_grid(mask, ct):
        raise InputError(
            "the rods mask does not share the CT's grid (size, origin, spacing or direction)",
            "draw the rods on this CT, or resample the mask onto it",
            args.rods_mask,
        )
    labels = sitk.GetArrayFromImage(mask)
    if mask.GetNumberOfComponentsPerPixel() != 1 or not np.all(labels == np.rint(labels)):
        raise InputError(
            "the rods mask is not a label map (whole-number labels, one per rod)",
            "write the rods as integer labels 1, 2, ... (0 elsewhere)",
            args.rods_mask,
        )
    tags = scan_tags(ct)
    for name in ("kvp", "manufacturer", "model", "kernel"):
        given = getattr(args, name)
        if given is not None:
            tags[name] = given
    entry = fit_rods(
        sitk.GetArrayViewFromImage(ct),
        ct.GetSpacing(),
        labels.astype(np.int32),
        rods,
        tags,
        source=args.ct,
    )
    path, replaced = update_site_file(args.out, entry)
    print(f"scanner: {entry.describe()}")
    print(f"  air {entry.air_hu:.1f} HU; rods (mg/cm3 K2HPO4: HU read, fit residual):")
    for r in entry.rods:
        print(
            f"    label {r['label']}: {r['mg_cm3']:g} mg/cm3: {r['observed_hu']:.1f} HU "
            f"({r['residual_hu']:+.2f})"
        )
    print(
        f"  effective energy {entry.energy_kev:.2f} +- {entry.energy_sd_kev:.2f} keV, HU scale "
        f"{entry.hu_scale:.4f}, offset {entry.hu_offset:+.1f} HU, rms residual "
        f"{entry.rms_residual_hu:.2f} HU"
    )
    print(f"{'updated' if replaced else 'added'} the entry in {path}")
    return 0
