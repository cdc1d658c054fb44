#!/usr/bin/env python
"""End-to-end ``femurscreen screen`` time per stage and peak memory on a limited number of cores.

Goal (issue 5): a 512 x 512 x 300 abdomen-pelvis CT in <= 10 s and <= 3 GB on 2 cores.

Each run is a fresh Python process pinned to ``--cores`` CPUs (sched_setaffinity, plus
OMP/MKL thread limits), so imports and model loading count as they do for a user, and the peak
resident memory of the process (``ru_maxrss``) is the number reported. Stage times come from
``result.json`` (``timing_s``; "imports" is the first-use loading of the libraries, which a
batch worker pays once); "process" is the time from the child's first line to its end and
"wall" includes starting the interpreter; "cpu" is the child's user + system CPU time (on a
shared machine it varies less than the wall times). It also says whether torch was imported
(the classical engine must not need it; the quality signal's second opinion from the VB-Net
does). "quality" is the part of "segment" spent on the segmentation quality signal (on by
default, as in ``screen``; ``--no-quality`` measures without it).

    python scripts/benchmark_screen.py                 # makes a phantom once, 3 runs
    python scripts/benchmark_screen.py --ct my_ct.nii.gz --runs 5
    python scripts/benchmark_screen.py --no-quality    # without the second engine
    python scripts/benchmark_screen.py --compare --runs 1  # without, then with: the ratio
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import make_abdomen_phantom, pinned

GOAL_S = 10.0
GOAL_GB = 3.0
STAGES = (
    "imports",
    "read",
    "load_model",
    "segment",
    "quality",
    "features",
    "classify",
    "bmd",
    "write",
    "report",
    "total",
)


def child(ct: str, out: str, engine: str, quality: bool = True) -> None:
    """Runs inside the pinned process: one screen, timings as JSON on stdout."""
    started = time.perf_counter()
    from femurscreen.screening import screen

    result = screen(ct, out, engine=engine, quality=quality)
    timing = dict(result["timing_s"])
    seconds = result["models"]["segmentation"].get("quality_seconds")
    if seconds is not None:  # inside "segment": the second engine's segmentation and the Dice
        timing["quality"] = seconds
    timing["process"] = round(time.perf_counter() - started, 3)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    timing["cpu"] = round(usage.ru_utime + usage.ru_stime, 3)  # steadier than wall under load
    peak_kb = usage.ru_maxrss
    torch = "torch" in sys.modules  # the classical engine should never need it
    out = {"timing": timing, "peak_gb": peak_kb / 1024**2, "size": result["input"]}
    print(json.dumps({**out, "torch": torch}))


def run_once(ct: Path, out: Path, cores: int, engine: str, quality: bool = True) -> dict:
    env, pin = pinned(cores)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(ct), str(out), "--engine", engine]
        + ([] if quality else ["--no-quality"]),
        env=env,
        preexec_fn=pin,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"screen failed (exit {proc.returncode})")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["timing"]["wall"] = round(wall, 3)
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, help="CT to screen (default: make a phantom)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--engine", default="default")
    parser.add_argument(
        "--no-quality",
        dest="quality",
        action="store_false",
        help="screen without the segmentation quality signal (screen --no-quality)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="measure without and with the quality signal (runs alternate) and print the ratio",
    )
    parser.add_argument("--work", type=Path, help="folder for the phantom and outputs")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--child", nargs=2, metavar=("CT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.engine, args.quality)
        return 0

    work = args.work or Path(tempfile.mkdtemp(prefix="femurscreen-bench-"))
    ct = args.ct or make_abdomen_phantom(work / "phantom")
    settings = (False, True) if args.compare else (args.quality,)
    runs: dict[bool, list[dict]] = {q: [] for q in settings}
    for index in range(args.runs):
        for quality in settings:  # alternating, so a change in machine load hits both alike
            out = work / f"out{index}{'q' if quality else ''}"
            shutil.rmtree(out, ignore_errors=True)
            runs[quality].append(run_once(ct, out, args.cores, args.engine, quality))
            total = runs[quality][-1]["timing"]["total"]
            state = "on" if quality else "off"
            print(f"run {index + 1}/{args.runs}, quality {state}: {total:.2f} s", file=sys.stderr)
    totals = {q: _table(rs, args, q) for q, rs in runs.items()}
    if args.compare:
        ratio = totals[True] / totals[False]
        print(
            f"\nquality signal: screen() {totals[False]:.2f} s without, {totals[True]:.2f} s "
            f"with ({ratio:.2f}x; the second engine's segmentation is the difference)"
        )
    if args.json:
        data = {"runs": {("with" if q else "without") + "_quality": r for q, r in runs.items()}}
        args.json.write_text(json.dumps({**data, "cores": args.cores}, indent=1) + "\n")
    return 0


def _table(runs: list[dict], args: argparse.Namespace, quality: bool) -> float:
    """Print one setting's stage table and verdicts; its median screen() time."""
    size = runs[0]["size"]
    print(
        f"\nCT {' x '.join(map(str, size['size']))} voxels, spacing "
        f"{' x '.join(f'{s:.3g}' for s in size['spacing_mm'])} mm; {args.cores} cores; "
        f"engine {args.engine}, quality signal {'on' if quality else 'off'}; "
        f"{len(runs)} runs (median, min, max)"
    )
    print(f"{'stage':<12}{'median s':>10}{'min s':>9}{'max s':>9}")
    keys = [k for k in (*STAGES, "process", "cpu", "wall") if k in runs[0]["timing"]]
    for key in keys:
        values = [r["timing"][key] for r in runs]
        print(f"{key:<12}{statistics.median(values):>10.2f}{min(values):>9.2f}{max(values):>9.2f}")
    peak = max(r["peak_gb"] for r in runs)
    total = statistics.median(r["timing"]["total"] for r in runs)
    process = statistics.median(r["timing"]["process"] for r in runs)
    print(f"{'peak memory':<12}{peak:>10.2f} GB")
    print(f"torch imported: {'yes' if any(r.get('torch') for r in runs) else 'no'}")
    verdict_t = "OK" if total <= GOAL_S else "OVER"
    verdict_m = "OK" if peak <= GOAL_GB else "OVER"
    print(
        f"goal <= {GOAL_S:g} s: screen() {total:.2f} s {verdict_t} (whole process "
        f"{process:.2f} s); goal <= {GOAL_GB:g} GB: {peak:.2f} GB {verdict_m}"
    )
    return float(total)


if __name__ == "__main__":
    raise SystemExit(main())
