"""``femurscreen train-classifier``: nested-CV bone-status model from a labelled cohort."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from femurscreen.classifier import DEMO_NOTICE, read_manifest, train_classifier_from_cohort
from femurscreen.errors import InputError

NAME = "train-classifier"
HELP = "train the bone-status random forest (selection + nested grouped CV) from a cohort"
EXAMPLE = "femurscreen train-classifier cohort.csv --features FEATURES.csv --out model/ --seed 0"
ORDER = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cohort",
        metavar="COHORT.csv",
        help="cohort CSV: case_id, ct, mask, t_score, bone_status (paths relative to the CSV)",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="model folder to write (replaced atomically)"
    )
    parser.add_argument(
        "--features",
        metavar="FEATURES.csv",
        help="use these features (same cases as the cohort) instead of extracting them",
    )
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="parallel jobs")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed")
    parser.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="label the model a demo (default); pass --no-demo only for a model trained on "
        "real DXA-labelled data",
    )
    parser.add_argument("--cache", metavar="DIR", help="feature cache folder for extraction")
    parser.add_argument(
        "--folds",
        type=int,
        nargs=2,
        default=(5, 3),
        metavar=("OUTER", "INNER"),
        help="outer and inner cross-validation folds (default 5 3)",
    )
    parser.add_argument(
        "--grid",
        metavar="JSON",
        help="hyper-parameter grid as JSON text or a .json file, e.g. "
        '\'{"mrmr__k": [5, 10], "forest__n_estimators": [300]}\' (default: the built-in grid)',
    )
    parser.add_argument(
        "--repeats", type=int, default=1, metavar="R", help="repeats of the outer CV (default 1)"
    )


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    if args.features is None:  # extraction would turn missing images into error rows only
        check_cohort_files(args.cohort)
    if args.demo:
        print(f"*** {DEMO_NOTICE} ***", file=sys.stderr)
    out = train_classifier_from_cohort(
        args.cohort,
        out_dir=args.out,
        features_csv=args.features,
        workers=args.workers,
        seed=args.seed,
        demo=args.demo,
        cache_dir=args.cache,
        command=" ".join(["femurscreen", *map(shlex.quote, sys.argv[1:])]),
        outer_folds=args.folds[0],
        inner_folds=args.folds[1],
        repeats=args.repeats,
        param_grid=_grid(args.grid),
    )
    manifest = read_manifest(out)
    metrics = manifest["cv_metrics"]
    print(f"model written to {Path(out)}")
    print(f"selected features ({len(manifest['features'])}): {', '.join(manifest['features'])}")
    print(f"hyper-parameters: {json.dumps(manifest['hyperparameters']['selected'])}")
    print("nested CV (mean ± SD over outer folds):")
    for name, auc in metrics["auc_ovr"].items():
        print(f"  AUC {name:<13} {_pm(auc)}")
    print(f"  accuracy          {_pm(metrics['accuracy'])}")
    print(f"  balanced accuracy {_pm(metrics['balanced_accuracy'])}")
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse numbers that cross-validation cannot use, before any cohort is read."""
    outer, inner = args.folds
    if outer < 2 or inner < 2:
        raise InputError(
            f"--folds needs at least 2 outer and 2 inner folds, got {outer} {inner}",
            "use e.g. --folds 5 3 (the default), or --folds 3 2 for a small cohort",
        )
    if args.repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {args.repeats}", "use --repeats 1")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}", "use --workers 1")


def check_cohort_files(cohort: str | Path) -> None:
    """Every case's CT and mask must exist: otherwise extraction would give error rows only and
    the training would fail later with a message about features, not about the files."""
    from femurscreen.io.cohort_csv import read_cohort_csv

    table = read_cohort_csv(cohort, ("case_id", "ct", "mask"))
    missing = [
        f"{row['case_id']} {column} {table.path_of(row, column)}"
        for row in table.rows
        for column in ("ct", "mask")
        if (row[column] or "").strip()  # an empty mask: the training says a mask is needed
        and not table.path_of(row, column).is_file()
    ]
    if missing:
        shown = "; ".join(missing[:5]) + (
            f"; and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise InputError(
            f"the cohort names {len(missing)} image file(s) that do not exist: {shown}",
            "fix the ct/mask paths (relative to the CSV's folder), or give --features FEATURES.csv",
            path=Path(cohort),
        )


def _grid(text: str | None) -> dict | None:
    if not text:
        return None
    source = Path(text)
    try:
        if text.strip().startswith("{"):
            grid = json.loads(text)
        else:
            grid = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot read the --grid ({exc})", "give JSON text or a .json file"
        ) from exc
    if not isinstance(grid, dict):
        raise InputError("--grid must be a JSON object", 'e.g. {"mrmr__k": [5, 10]}')
    return grid


def _pm(summary: dict) -> str:
    mean, sd = summary.get("mean"), summary.get("sd")
    if mean is None:
        return "n/a"
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f}"
