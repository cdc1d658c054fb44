"""Compare the segmentation engines on held-out synthetic phantoms (not a test: a measurement).

Writes the test cohort (seed 2000, never used in training: the VB-Net was trained on seeds
3000-3002, the classifier on 1000) unless it exists, segments every case with each engine
through the same pipeline as ``femurscreen segment`` (post-processing included), then scores
them with ``evaluate-seg``. Prints one table per engine and a summary; JSON per engine.

    python scripts/compare_seg_engines.py [--work output/seg-compare] [--cases 20]
        [--engines classical vbnet] [--direction lps] [--joint ...] [--no-joint-mincut]

``--joint hard`` scores phantoms whose hip joints are as hard as on real CT (their own folder);
``--no-joint-mincut`` runs the classical engine without its min-cut at the joint (the A/B
measurement of issue 11; predictions and JSON get a ``-nocut`` suffix).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import SimpleITK as sitk
from femurscreen.errors import NoFemurError
from femurscreen.evaluation.seg_metrics import evaluate_seg, format_seg_table
from femurscreen.io.labelio import write_labels
from femurscreen.segmentation.pipeline import ENGINES, segment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("output/seg-compare"))
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--direction", default="lps", help="phantom --direction (lps)")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--joint", choices=("normal", "hard"), default="normal")
    parser.add_argument("--no-joint-mincut", action="store_true")
    args = parser.parse_args(argv)
    suffix = "-nocut" if args.no_joint_mincut else ""
    if args.no_joint_mincut:
        from femurscreen.segmentation.classical import femur

        femur.JOINT_MINCUT = False

    joint = "" if args.joint == "normal" else f"-{args.joint}"
    cohort = args.work / f"phantoms-{args.direction}{joint}"
    if not (cohort / "cohort.csv").is_file():
        cmd = [sys.executable, "-m", "femurscreen", "phantom", str(cohort)]
        cmd += ["--cases", str(args.cases), "--seed", str(args.seed)]
        cmd += ["--direction", args.direction, "--joint", args.joint]
        subprocess.run(cmd, check=True)
    cases = sorted(p for p in cohort.iterdir() if (p / "ct.nii.gz").is_file())[: args.cases]

    summary = {}
    for engine in args.engines:
        pred_dir = args.work / f"pred-{args.direction}{joint}-{engine}{suffix}"
        pred_dir.mkdir(parents=True, exist_ok=True)
        seconds = []
        for case in cases:
            image = sitk.ReadImage(str(case / "ct.nii.gz"))
            t0 = time.perf_counter()
            try:
                result = segment(image, engine=engine)
            except NoFemurError:
                continue  # scored as missing by evaluate-seg (no prediction file)
            seconds.append(time.perf_counter() - t0)
            write_labels(result.labels, pred_dir / f"{case.name}.nii.gz")
        report = evaluate_seg(
            pred_dir, cohort, json_path=args.work / f"{engine}{suffix}-{args.direction}{joint}.json"
        )
        print(f"\n== {engine} ({len(cases)} phantoms, seed {args.seed}, {args.direction})")
        print(format_seg_table(report))
        summary[engine] = {
            "mean": report.get("mean"),
            "seconds_per_case": round(sum(seconds) / max(1, len(seconds)), 2),
        }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
