"""``femurscreen batch``: screen a folder or CSV of CTs, resumable, locally or on Dask."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from femurscreen.cli._options import (
    add_engine_option,
    add_kvp_option,
    add_model_option,
    add_quality_option,
    add_scanner_calibration_option,
)

NAME = "batch"
HELP = "screen many CTs (folder or CSV) into one folder per case, with a summary.csv"
EXAMPLE = (
    "femurscreen batch cts/ --out results --workers 2\n"
    "  femurscreen batch --from-dicomweb https://pacs/dicom-web --to-dicomweb "
    "https://pacs/dicom-web --out results"
)
ORDER = 11

EXIT_SOME_FAILED = 3  # the batch ran; at least one case failed (see summary.csv)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input",
        type=Path,
        nargs="?",
        help="folder of CT files and/or a DICOM tree (one case per axial CT series), or a CSV "
        "with a 'ct' column (optional 'case_id'); leave out with --from-dicomweb",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (one sub-folder per case)"
    )
    parser.add_argument("--workers", type=int, default=1, help="cases run at once on this machine")
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786); its workers must "
        "see INPUT and --out at the same paths",
    )
    add_engine_option(parser)
    add_model_option(parser)
    parser.add_argument(
        "--include-identifiers",
        action="store_true",
        help="name cases by file or folder name and show DICOM identifiers in each report "
        "(default: cases are named by image fingerprint, as 'screen' does, and no file name "
        "is written anywhere)",
    )
    parser.add_argument(
        "--dicom",
        action="store_true",
        help="also write each case's DICOM SEG, SR and report capture (OUT/<case>/dicom/); "
        "implied by --from-dicomweb and --to-dicomweb",
    )
    parser.add_argument(
        "--from-dicomweb",
        metavar="URL",
        help="screen the CT series of every study on this DICOMweb server (QIDO/WADO root, "
        "e.g. https://pacs/dicom-web) instead of INPUT",
    )
    parser.add_argument(
        "--to-dicomweb",
        metavar="URL",
        help="store each case's SEG, SR and report capture on this DICOMweb server (STOW), "
        "in the study of its CT",
    )
    parser.add_argument(
        "--dicomweb-credentials",
        type=Path,
        metavar="FILE",
        help='file with the DICOMweb user and password (JSON {"user": ..., "password": ...} '
        "or one line user:password); default: the environment variables "
        "FEMURSCREEN_DICOMWEB_USER and FEMURSCREEN_DICOMWEB_PASSWORD. Never put them in the URL",
    )
    add_kvp_option(parser, every_case=True)
    add_scanner_calibration_option(parser)
    add_quality_option(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.epilog = (
        "Finished cases (OUT/<case_id>/ with result.json and report.html) are skipped on a "
        "re-run; failed ones are retried. DICOM series that are not axial CTs (scouts, "
        "reformats, other modalities) are listed as 'skipped' with the reason; with "
        "--from-dicomweb a study without one counts as failed. "
        "A case with no gradable side counts as failed, as "
        "'screen' refuses it. One batch at a time per --out (OUT/.femurscreen-batch.lock). "
        "Exit codes: 0 all cases done, 1 the batch could not run, "
        f"{EXIT_SOME_FAILED} some cases failed (errors in OUT/summary.csv and "
        "OUT/<case_id>.error.json)."
    )


def run(args: argparse.Namespace) -> int:
    from femurscreen.batch import batch
    from femurscreen.errors import InputError

    if (args.input is None) == (args.from_dicomweb is None):
        raise InputError(
            "give either INPUT (a folder or CSV) or --from-dicomweb URL, not both or neither",
            f"e.g. {EXAMPLE.splitlines()[0]}",
        )
    source = store = None
    if args.from_dicomweb or args.to_dicomweb:
        from femurscreen.dicom.web import DicomWeb, read_credentials

        credentials = read_credentials(args.dicomweb_credentials)
        source = DicomWeb(args.from_dicomweb, credentials) if args.from_dicomweb else None
        store = DicomWeb(args.to_dicomweb, credentials) if args.to_dicomweb else None
    table = batch(
        args.input,
        args.out,
        workers=args.workers,
        scheduler=args.scheduler,
        engine=args.engine,
        model_dir=args.model,
        include_identifiers=args.include_identifiers,
        dicom=args.dicom,
        from_dicomweb=source,
        to_dicomweb=store,
        quality=args.quality,
        kvp=args.kvp,
        scanner_calibration=args.scanner_calibration,
    )
    counts = table.attrs
    if counts.get("demo"):
        from femurscreen.output.report import demo_banner_for

        print(demo_banner_for(sys.stderr), file=sys.stderr)
    if args.json:
        print(table.to_json(orient="records", indent=1))
    else:
        graded = table[table["graded"].astype(bool)]
        print(
            f"{counts['cases']} cases: {counts['done']} screened now, {counts['skipped']} done "
            f"before, {counts['failed']} failed; {len(graded)} femurs graded"
        )
        if counts.get("series_skipped"):
            print(
                f"{counts['series_skipped']} DICOM series not screened (scouts, reformats, "
                "other modalities: status 'skipped' in the summary, with the reason)"
            )
        print(f"summary {counts['summary']}")
    if counts["failed"]:
        for case_id, error in counts.get("failures", {}).items():
            print(f"failed: {case_id}: {error}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0
