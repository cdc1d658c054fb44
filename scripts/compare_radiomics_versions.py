"""Compare features and probabilities of the shipped classifier between two radiomics installs.

A measurement, not a test: the project moved from pyradiomics 3.0.1 (PyPI, cannot be built on
Python 3.12) to pyradiomics-bhklab 3.1.4 (same ``radiomics`` import). This runs the same
FemurScreen code, on the same CTs and the same masks, under two interpreters (one per
radiomics install), and reports per feature the largest absolute and relative difference, and
the largest difference in the classifier's probabilities.

Cases: the real sample CT (mask from the classical engine, made once by interpreter A) and
``--phantoms`` default-size phantoms (their ground-truth masks). Each interpreter computes the
shipped model's features (fast path, as ``screen`` does) on every case and side, and the full
1,130-feature extraction on the real CT's graded side.

    python scripts/compare_radiomics_versions.py --python-a .venv/bin/python \\
        --python-b /tmp/venv-bhklab/bin/python [--work output/radiomics-compare] [--phantoms 3]

Both interpreters need numpy, SimpleITK, scikit-learn, skops, pandas and a radiomics package;
the FemurScreen core is taken from this checkout (PYTHONPATH), not from either environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "FemurScreen"
REAL_CT = CORE / "Resources" / "SampleData" / "totalseg_example_ct.nii.gz"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(CORE) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def prepare(work: Path, phantoms: int, seed: int) -> list[dict]:
    """Cases (id, ct, mask) shared by both runs: phantoms with truth masks, the real CT."""
    cohort = work / "phantoms"
    if not (cohort / "cohort.csv").is_file():
        cmd = [sys.executable, "-m", "femurscreen", "phantom", str(cohort)]
        cmd += ["--cases", str(phantoms), "--seed", str(seed)]
        subprocess.run(cmd, check=True, env=_env())
    cases = [
        {"case_id": p.name, "ct": str(p / "ct.nii.gz"), "mask": str(p / "femur.nii.gz")}
        for p in sorted(cohort.iterdir())
        if (p / "ct.nii.gz").is_file()
    ][:phantoms]
    real_mask = work / "real_ct_mask.nii.gz"
    if not real_mask.is_file():
        cmd = [sys.executable, "-m", "femurscreen", "segment", str(REAL_CT)]
        cmd += ["--out", str(real_mask), "--engine", "classical"]
        subprocess.run(cmd, check=True, env=_env())
    cases.append({"case_id": "real_sample_ct", "ct": str(REAL_CT), "mask": str(real_mask)})
    return cases


def run(cases_json: Path, out_json: Path) -> None:
    """In this interpreter: the model's features, probabilities, and one full extraction."""
    import importlib.metadata

    import pandas as pd
    import radiomics
    import SimpleITK as sitk
    from femurscreen.classifier import classify, load_model
    from femurscreen.classifier.predict import default_model_dir
    from femurscreen.features.case import extract_case_features
    from femurscreen.io.ctio import read_ct
    from femurscreen.io.labelio import read_labels

    cases = json.loads(cases_json.read_text(encoding="utf-8"))
    model = load_model(default_model_dir())
    rows = []
    full = {}
    for case in cases:
        ct = read_ct(case["ct"])
        mask = read_labels(case["mask"], reference=ct)
        rows += extract_case_features(ct, mask, case_id=case["case_id"], only=model.features)
        if case["case_id"] == "real_sample_ct":
            labels = sitk.GetArrayFromImage(mask)
            side = "right" if (labels == 2).sum() else "left"  # the left holds an implant
            (row,) = extract_case_features(ct, mask, case_id=case["case_id"], sides=(side,))
            full = {k: v for k, v in row.items() if isinstance(v, float)}
    table = pd.DataFrame(rows)
    probs = classify(table, model)
    dists = {}
    for name in ("pyradiomics", "pyradiomics-bhklab"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            dists[name] = importlib.metadata.version(name)
    result = {
        "python": sys.version.split()[0],
        "radiomics_version": str(radiomics.__version__),
        "distributions": dists,
        "features": {
            f"{r['case_id']}/{r['side']}": {n: r.get(n) for n in model.features} for r in rows
        },
        "status": {f"{r['case_id']}/{r['side']}": r["status"] for r in rows},
        "probabilities": {
            f"{p.case_id}/{p.side}": {
                c: float(getattr(p, f"p_{c}")) for c in model.classes if hasattr(p, f"p_{c}")
            }
            for p in probs.itertuples()
        },
        "predicted": {f"{p.case_id}/{p.side}": p.predicted for p in probs.itertuples()},
        "full_extraction_real_ct": full,
    }
    out_json.write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")


def _diff(a: float | None, b: float | None) -> tuple[float, float]:
    """(absolute, relative) difference; NaN on both sides counts as equal."""
    if a is None or b is None:
        return (0.0, 0.0) if a is b else (math.inf, math.inf)
    if math.isnan(a) and math.isnan(b):
        return 0.0, 0.0
    absolute = abs(a - b)
    scale = max(abs(a), abs(b))
    return absolute, (absolute / scale if scale > 0 else 0.0)


def compare(a: dict, b: dict) -> dict:
    """Per-feature worst differences over cases, probability differences, full extraction."""
    per_feature: dict[str, list[float]] = {}
    for key, fa in a["features"].items():
        fb = b["features"][key]
        for name, va in fa.items():
            d_abs, d_rel = _diff(va, fb.get(name))
            worst = per_feature.setdefault(name, [0.0, 0.0])
            worst[0], worst[1] = max(worst[0], d_abs), max(worst[1], d_rel)
    prob = 0.0
    for key, pa in a["probabilities"].items():
        for cls, va in pa.items():
            d_abs, _ = _diff(va, b["probabilities"][key][cls])
            prob = max(prob, d_abs)
    full_abs = full_rel = 0.0
    fa, fb = a["full_extraction_real_ct"], b["full_extraction_real_ct"]
    worst_full = ""
    for name, va in fa.items():
        d_abs, d_rel = _diff(va, fb.get(name))
        if d_rel > full_rel:
            worst_full = name
        full_abs, full_rel = max(full_abs, d_abs), max(full_rel, d_rel)
    return {
        "per_feature_max_abs_rel": per_feature,
        "max_probability_abs_diff": prob,
        "predicted_same": a["predicted"] == b["predicted"],
        "status_same": a["status"] == b["status"],
        "full_extraction": {
            "features": len(fa),
            "same_names": sorted(fa) == sorted(fb),
            "max_abs": full_abs,
            "max_rel": full_rel,
            "worst_feature": worst_full,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("run", help="(internal) compute in this interpreter")
    one.add_argument("cases", type=Path)
    one.add_argument("out", type=Path)
    parser.add_argument("--python-a", default=sys.executable, help="interpreter A (baseline)")
    parser.add_argument("--python-b", help="interpreter B (the other radiomics install)")
    parser.add_argument("--work", type=Path, default=ROOT / "output" / "radiomics-compare")
    parser.add_argument("--phantoms", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.cases, args.out)
        return 0
    if not args.python_b:
        parser.error("--python-b is required")
    args.work.mkdir(parents=True, exist_ok=True)
    cases_json = args.work / "cases.json"
    cases_json.write_text(json.dumps(prepare(args.work, args.phantoms, args.seed)), "utf-8")
    results = []
    for label, python in (("a", args.python_a), ("b", args.python_b)):
        out = args.work / f"result_{label}.json"
        cmd = [python, str(Path(__file__).resolve()), "run", str(cases_json), str(out)]
        subprocess.run(cmd, check=True, env=_env())
        results.append(json.loads(out.read_text(encoding="utf-8")))
    a, b = results
    report = compare(a, b)
    report["a"] = {k: a[k] for k in ("python", "radiomics_version", "distributions")}
    report["b"] = {k: b[k] for k in ("python", "radiomics_version", "distributions")}
    (args.work / "comparison.json").write_text(json.dumps(report, indent=1), "utf-8")
    print(f"A: {report['a']}\nB: {report['b']}")
    print(f"cases x sides: {len(a['features'])}; statuses equal: {report['status_same']}")
    print(f"{'feature':62s} {'max |diff|':>11s} {'max rel':>9s}")
    for name, (d_abs, d_rel) in report["per_feature_max_abs_rel"].items():
        print(f"{name:62s} {d_abs:11.3g} {d_rel:9.2g}")
    print(f"probabilities: max |diff| {report['max_probability_abs_diff']:.3g}; ")
    print(f"predicted classes equal: {report['predicted_same']}")
    full = report["full_extraction"]
    print(
        f"full extraction on the real CT: {full['features']} values, same names "
        f"{full['same_names']}, max |diff| {full['max_abs']:.3g}, max rel {full['max_rel']:.3g}"
        + (f" ({full['worst_feature']})" if full["worst_feature"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
