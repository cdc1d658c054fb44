"""Command-line options that several verbs share, defined once so they read and check alike.

Kept free of heavy imports: building the parser (``femurscreen --help``) must stay fast.
The engine names are those of ``femurscreen.segmentation.pipeline.ENGINES`` (a test checks
that the two agree), plus ``default``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ENGINE_CHOICES: tuple[str, ...] = ("default", "classical", "vbnet")


def add_engine_option(parser: argparse.ArgumentParser) -> None:
    """``--engine``: which segmentation engine (an unknown name is refused by argparse)."""
    parser.add_argument(
        "--engine",
        choices=ENGINE_CHOICES,
        default="default",
        help="segmentation engine: default (the one chosen by measurement, see the README), "
        "classical or vbnet (default: %(default)s)",
    )


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """``--model DIR``: the classifier folder (the shipped DEMO model when not given)."""
    parser.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="classifier folder (default: the shipped DEMO model, trained on synthetic data)",
    )


def add_quality_option(parser: argparse.ArgumentParser) -> None:
    """``--no-quality``: skip the per-side segmentation quality signal (on by default)."""
    parser.add_argument(
        "--no-quality",
        dest="quality",
        action="store_false",
        help="skip the segmentation quality check (default: each side's mask is compared with "
        "a second engine's, Dice as 'quality' in result.json, flag review_segmentation below "
        "0.85; it costs one more segmentation, a few seconds per CT)",
    )


def add_kvp_option(parser: argparse.ArgumentParser, *, every_case: bool = False) -> None:
    """``--kvp``: the scan's tube voltage for the calibrated density."""
    where = "every case of the batch" if every_case else "the scan"
    parser.add_argument(
        "--kvp",
        type=float,
        help=f"tube voltage (kV) of {where} for the calibrated density (default: the DICOM "
        "header's, if any); it replaces the kVp of a DICOM header. A NIfTI file cannot tell "
        "it, and without it the density is less certain (see README, Calibrated bone density)",
    )


def add_scanner_calibration_option(parser: argparse.ArgumentParser) -> None:
    """``--scanner-calibration FILE``: a site's scanner calibration for the density."""
    parser.add_argument(
        "--scanner-calibration",
        type=Path,
        metavar="FILE",
        help="this site's scanner calibration file for the calibrated density (see README, "
        "Calibrated bone density); checked before anything runs",
    )
