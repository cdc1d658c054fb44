"""Time the phantom generator the way users run it: the command line, in a fresh process.

Runs `femurscreen phantom TMP --cases 20` (default size, default workers) and one
`--size abdomen` case, and prints wall time, time per case and the peak resident memory of
the largest process involved (resource.getrusage of the children, which covers the worker
processes too). The floor to meet: 20 default cases in under 3 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(argv: list[str]) -> dict:
    """Run one `femurscreen` command line in a child process; time and memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "femurscreen", *argv], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"command failed ({proc.returncode}): femurscreen {' '.join(argv)}")
    renders = [
        float(line.rsplit("(", 1)[1].split()[0])
        for line in proc.stderr.splitlines()
        if line.startswith("[") and "s render)" in line
    ]
    return {
        "command": "femurscreen " + " ".join(argv),
        "wall_s": round(wall, 2),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        # ru_maxrss is in KiB on Linux; for children it is the largest single process
        "peak_rss_mib": round(after.ru_maxrss / 1024.0, 1),
        "mean_render_s": round(sum(renders) / len(renders), 2) if renders else None,
        "cases": len(renders),
    }


def folder_size_mib(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--workers", type=int, default=None, help="default: the CLI's default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-abdomen", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    results = {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="femurscreen-bench-") as tmp:
        out = Path(tmp) / "hips"
        argv = ["phantom", str(out), "--cases", str(args.cases), "--seed", str(args.seed)]
        if args.workers:
            argv += ["--workers", str(args.workers)]
        hips = run(argv)
        hips["per_case_s"] = round(hips["wall_s"] / args.cases, 2)
        hips["output_mib"] = folder_size_mib(out)
        results["hips"] = hips
        if not args.skip_abdomen:
            out = Path(tmp) / "abdomen"
            abd = run(
                ["phantom", str(out), "--cases", "1", "--seed", str(args.seed), "--size", "abdomen"]
            )
            abd["output_mib"] = folder_size_mib(out)
            results["abdomen"] = abd
    results["load_after"] = os.getloadavg()[0]

    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    h = results["hips"]
    print(
        f"machine: {results['cpus']} CPUs, load {results['load_before']:.1f} before, "
        f"{results['load_after']:.1f} after"
    )
    print(f"{h['command']}")
    print(
        f"  wall {h['wall_s']:.1f} s for {h['cases']} cases = {h['per_case_s']:.2f} s/case "
        f"(floor: 180 s); render {h['mean_render_s']} s/case in a worker; "
        f"CPU {h['cpu_s']:.1f} s; peak RSS {h['peak_rss_mib']:.0f} MiB; "
        f"{h['output_mib']} MiB written"
    )
    if "abdomen" in results:
        a = results["abdomen"]
        print(f"{a['command']}")
        print(
            f"  wall {a['wall_s']:.1f} s (render {a['mean_render_s']} s); "
            f"peak RSS {a['peak_rss_mib']:.0f} MiB; {a['output_mib']} MiB written"
        )
    return 0 if h["wall_s"] < 180.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
