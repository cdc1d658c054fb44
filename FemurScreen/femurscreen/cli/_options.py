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
