#!/usr/bin/env python
"""Time and peak memory of ``femurscreen segment`` per engine on a 512 x 512 x 300 CT.

Goal (issue 3): <= 8 s including reading, <= 3 GB, on this machine's 2 cores.

Each run is a fresh ``python -m femurscreen segment CT --out MASK --engine E`` pinned to
``--cores`` CPUs (affinity plus OMP/MKL thread limits), so interpreter start, imports, model
loading, reading the CT, segmentation, post-processing and writing the mask all count, as they
do for a user. "peak" is the child's maximum resident memory (wait4 rusage). The CT is an
abdomen-size phantom made once (not timed) unless ``--ct`` is given.

    python scripts/benchmark_segment.py                       # both engines, 3 runs each
    python scripts/benchmark_segment.py --ct my_ct.nii.gz --engines vbnet --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import make_abdomen_phantom, pinned


def run_once(ct: Path, engine: str, cores: int, out: Path) -> dict:
    env, pin = pinned(cores)
    cmd = [sys.executable, "-m", "femurscreen", "segment", str(ct), "--out", str(out)]
    cmd += ["--engine", engine, "--json"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=pin,
    )
    stdout = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"segment failed for engine {engine}")
    report = json.loads(stdout)
    return {
        "wall_s": round(wall, 2),
        "peak_gb": round(usage.ru_maxrss * 1024 / 1e9, 2),
        "segment_s": round(report["timing_s"].get("total", 0.0), 2),
        "sides": {k: v["status"] for k, v in report["sides"].items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, help="CT to segment (default: an abdomen phantom)")
    parser.add_argument("--engines", nargs="+", default=["classical", "vbnet"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("output/benchmark-segment"))
    args = parser.parse_args(argv)

    ct = args.ct or make_abdomen_phantom(args.cache, seed=5)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines:
            runs = [
                run_once(ct, engine, args.cores, Path(tmp) / f"{engine}.nii.gz")
                for _ in range(args.runs)
            ]
            walls = [r["wall_s"] for r in runs]
            results[engine] = {
                "wall_s_median": statistics.median(walls),
                "wall_s_min": min(walls),
                "wall_s_max": max(walls),
                "segment_s_median": statistics.median(r["segment_s"] for r in runs),
                "peak_gb_max": max(r["peak_gb"] for r in runs),
                "sides": runs[-1]["sides"],
            }
            print(f"{engine}: {json.dumps(results[engine])}", flush=True)
    print(json.dumps({"ct": str(ct), "cores": args.cores, "engines": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
