"""``femurscreen evaluate``: the paper's results table from a predictions CSV."""

from __future__ import annotations

import argparse

from femurscreen.evaluation.classification import evaluate, format_table

NAME = "evaluate"
HELP = "per-class AUC, sensitivity, specificity with 95% CIs from a predictions CSV"
EXAMPLE = "femurscreen evaluate --predictions preds.csv --json metrics.json --plot roc.png"
ORDER = 80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--predictions",
        required=True,
        metavar="PREDS.csv",
        help="CSV with a 'true_class' column and one score column 'p_<class>' per class "
        "(higher score = more likely that class)",
    )
    parser.add_argument("--json", metavar="OUT.json", help="write the full report as JSON")
    parser.add_argument(
        "--plot", metavar="ROC.png", help="write one-vs-rest ROC curves with Youden points"
    )


def run(args: argparse.Namespace) -> int:
    report = evaluate(args.predictions, json_path=args.json, plot_path=args.plot)
    print(format_table(report))
    return 0
