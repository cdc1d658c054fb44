"""``femurscreen extract-features``: pyradiomics features + density readouts per femur side."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "extract-features"
HELP = "pyradiomics features and trabecular HU per proximal femur side, for a cohort or one CT"
EXAMPLE = "femurscreen extract-features cohort.csv --out features.csv --workers 2"
ORDER = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cohort",
        nargs="?",
        metavar="COHORT.csv",
        help="CSV with columns case_id, ct, mask (paths relative to the CSV's folder)",
    )
    parser.add_argument(
        "--out", required=True, metavar="FEATURES.csv", help="feature table to write"
    )
    parser.add_argument(
        "--ct", metavar="CT", help="one CT (file or DICOM folder) instead of a cohort"
    )
    parser.add_argument(
        "--mask", metavar="MASK", help="label map of --ct (1 = left, 2 = right femur)"
    )
    parser.add_argument("--case-id", metavar="ID", help="case id for --ct (default: the file name)")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="parallel cases (processes)"
    )
    parser.add_argument(
        "--cache",
        metavar="DIR",
        help="feature cache folder (default: $FEMURSCREEN_CACHE/features or "
        "~/.cache/femurscreen/features)",
    )
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    parser.add_argument(
        "--params",
        metavar="FILE",
        help="pyradiomics parameter file (default: the shipped femurscreen_radiomics_v1.yaml)",
    )
    parser.add_argument(
        "--only-features",
        metavar="FILE_OR_LIST",
        help="compute only these features (fast path): a comma list, a text file with one name "
        "per line, or a JSON list / model manifest with a 'features' list",
    )


def run(args: argparse.Namespace) -> int:
    from femurscreen.errors import InputError
    from femurscreen.features.cache import default_cache_dir
    from femurscreen.features.cohort_extract import extract_features, summarize
    from femurscreen.features.params import read_feature_list

    if args.workers < 1:
        raise InputError("--workers must be at least 1", "e.g. --workers 2")
    cache = None if args.no_cache else Path(args.cache) if args.cache else default_cache_dir()
    only = read_feature_list(args.only_features) if args.only_features else None
    frame = extract_features(
        Path(args.out),
        Path(args.cohort) if args.cohort else None,
        ct=Path(args.ct) if args.ct else None,
        mask=Path(args.mask) if args.mask else None,
        case_id=args.case_id,
        params=Path(args.params) if args.params else None,
        only=only,
        cache_dir=cache,
        workers=args.workers,
    )
    counts = summarize(frame)
    n_features = sum(1 for c in frame.columns if c.count("_") == 2 or c.startswith("density_"))
    print(
        f"extract-features: {counts['cases']} case(s): {counts['cases_ok']} ok, "
        f"{counts['cases_failed']} failed; sides {counts['sides_ok']} ok, "
        f"{counts['sides_failed']} failed; {n_features} feature columns -> {args.out}"
    )
    return 0
