#!/usr/bin/env python
"""Time of the density step (``femurscreen.bmd``: calibration + ``measure()``) on a
512 x 512 x ~300 CT, in a process pinned to N cores. Goal (issue 13): <= 1 s added to
``screen`` on 2 cores.

The CT is the benchmark phantom of scripts/bench_common.py (made once) with its own femur
labels, or ``--ct`` with ``--mask``; each run times ``measure()`` phantomless and with a site
calibration (femurscreen.bmd.site: the energy fixed, so one energy instead of a grid);
``--real`` takes the bundled sample CT and resamples it
(and its femur labels from the classical engine) to 512 x 512 x 300 (linear interpolation of
a 3 mm scan: its smooth vertebral bodies read as contrast, so that case times the refusal, not
the projections). Prints a table of the median of ``--runs`` runs per stage.

    python scripts/benchmark_bmd.py                # phantom, 2 cores, 3 runs
    python scripts/benchmark_bmd.py --real --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import make_abdomen_phantom, pinned

GOAL_S = 1.0
REAL_CT = Path("FemurScreen/Resources/SampleData/totalseg_example_ct.nii.gz")


def child(ct: str, mask: str, runs: int) -> None:
    """Runs inside the pinned process: reads once, then times calibration and measure()."""
    import time

    import SimpleITK as sitk
    from femurscreen.bmd import measure
    from femurscreen.bmd.calibration import calibrate
    from femurscreen.bmd.site import SiteCalibration, fit_rods_image
    from femurscreen.phantom.rods import make_rods_phantom
    from femurscreen.phantom.scanner import IDENTITY

    image = sitk.ReadImage(ct)
    labels = sitk.ReadImage(mask)
    hu = sitk.GetArrayViewFromImage(image)
    # a site calibration (of the 120 kVp identity scanner's rods phantom): the fixed-energy path
    rct, rlab, rods, _ = make_rods_phantom(IDENTITY, seed=0)
    entry = fit_rods_image(
        rct,
        rlab,
        rods,
        {"kvp": 120.0},
    )
    site = SiteCalibration((entry,), "site.json")
    measure(image, labels)  # first use: imports and caches
    rows = []
    for _ in range(runs):
        t0 = time.perf_counter()
        calibrate(hu, image.GetSpacing())
        t1 = time.perf_counter()
        result = measure(image, labels)
        t2 = time.perf_counter()
        measure(image, labels, kvp=120.0, site=site)
        t3 = time.perf_counter()
        rows.append({"calibrate": t1 - t0, "measure": t2 - t1, "measure_site": t3 - t2})
    status = {s: result[s]["status"] for s in ("left", "right")}
    print(json.dumps({"rows": rows, "size": list(image.GetSize()), "status": status}))


def resampled_real(folder: Path) -> tuple[Path, Path]:
    """The sample CT and its classical femur labels on a 512 x 512 x 300 grid."""
    import SimpleITK as sitk
    from femurscreen.segmentation import segment

    ct = sitk.ReadImage(str(REAL_CT))
    size = (512, 512, 300)
    spacing = [sp * n / m for sp, n, m in zip(ct.GetSpacing(), ct.GetSize(), size, strict=True)]
    ref = sitk.Image(size, sitk.sitkInt16)
    ref.SetSpacing(spacing)
    ref.SetOrigin(ct.GetOrigin())
    ref.SetDirection(ct.GetDirection())
    big = sitk.Resample(ct, ref, sitk.Transform(), sitk.sitkLinear, -1024, sitk.sitkInt16)
    labels = segment(ct).labels
    big_lab = sitk.Resample(labels, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    sitk.WriteImage(big, str(folder / "ct.nii.gz"))
    sitk.WriteImage(big_lab, str(folder / "femur.nii.gz"))
    return folder / "ct.nii.gz", folder / "femur.nii.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ct", type=Path)
    ap.add_argument("--mask", type=Path)
    ap.add_argument("--real", action="store_true", help="the sample CT resampled to 512^2 x 300")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "femurscreen-bench")
    args = ap.parse_args()
    if args.child:
        child(str(args.ct), str(args.mask), args.runs)
        return
    if args.ct:
        if not args.mask:
            raise SystemExit("--ct needs --mask (the femur labels on the CT's grid)")
        ct, mask = args.ct, args.mask
    elif args.real:
        folder = args.work / "bmd_real"
        folder.mkdir(parents=True, exist_ok=True)
        ct, mask = folder / "ct.nii.gz", folder / "femur.nii.gz"
        if not (ct.is_file() and mask.is_file()):
            ct, mask = resampled_real(folder)
    else:
        ct = make_abdomen_phantom(args.work / "phantom")
        mask = ct.parent / "femur.nii.gz"
    env, pin = pinned(args.cores)
    command = [sys.executable, __file__, "--child", "--ct", str(ct), "--mask", str(mask)]
    command += ["--runs", str(args.runs)]
    done = subprocess.run(
        command, env=env, preexec_fn=pin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"CT {out['size']} ({ct}), {args.cores} cores, {args.runs} runs; sides {out['status']}")
    if any(v != "ok" for v in out["status"].values()):
        print("  (a side not measured is not projected: its time is not in the table)")
    print(f"{'stage':<12} {'median s':>9} {'min s':>7} {'max s':>7}")
    for key in ("calibrate", "measure", "measure_site"):
        v = [r[key] for r in out["rows"]]
        print(f"{key:<12} {statistics.median(v):9.3f} {min(v):7.3f} {max(v):7.3f}")
    for key, what in (("measure", "phantomless"), ("measure_site", "site calibration")):
        med = statistics.median(r[key] for r in out["rows"])
        verdict = "meets" if med <= GOAL_S else "misses"
        print(f"density step, {what} (calibration included): {med:.2f} s, {verdict} the goal")


if __name__ == "__main__":
    main()
