#!/usr/bin/env python
"""Time and peak memory of VBNetEngine.predict on a full-size CT (default 512x512x300).

The CT is a synthetic pelvis written to a temporary file first (not timed); a fresh child
process then reads it and runs predict, so its peak RSS is that of the real use and nothing
else. Without --weights the shipped architecture runs with random weights (coarse base 8,
fine base 16, crop 112x96x128 at 1 mm): the coarse pass still runs in full, but since random
weights find no hips, the true hip centres are handed to the fine passes so both are timed.

    python scripts/benchmark_vbnet.py                 # random weights, 2 threads
    python scripts/benchmark_vbnet.py --weights Resources/Models/vbnet-demo --format nii
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HIPS = {1: (90.0, 0.0, 0.0), 2: (-90.0, 0.0, 0.0)}  # world mm, LEFT at +x


def synthetic_ct(size, spacing, path: Path) -> None:
    """A body ellipse with two femurs (head sphere + shaft) written slice by slice."""
    import SimpleITK as sitk

    nx, ny, nz = size
    sx, sy, sz = spacing
    x = (np.arange(nx) - (nx - 1) / 2) * sx
    y = (np.arange(ny) - (ny - 1) / 2) * sy
    z = (np.arange(nz) - (nz - 1) / 2) * sz
    yy, xx = np.meshgrid(y, x, indexing="ij")
    rng = np.random.default_rng(0)
    vol = np.empty((nz, ny, nx), np.int16)
    body = (xx / 180.0) ** 2 + (yy / 130.0) ** 2 < 1
    for k, zk in enumerate(z):
        sl = np.where(body, 40.0, -1000.0)
        for hx in (90.0, -90.0):
            head = (xx - hx) ** 2 + yy**2 + (zk - 0.0) ** 2 < 24.0**2
            shaft = ((xx - hx * 1.25) ** 2 + yy**2 < 14.0**2) & (zk < 0)
            sl[head | shaft] = 600.0
        sl += rng.normal(0, 20, sl.shape)
        vol[k] = np.round(sl).astype(np.int16)
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing(spacing)
    img.SetOrigin((-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, -(nz - 1) / 2 * sz))
    sitk.WriteImage(img, str(path), useCompression=path.name.endswith(".gz"))


def child(args: argparse.Namespace) -> None:
    """Read + predict in this fresh process; print one JSON line of measurements."""
    import tracemalloc

    import SimpleITK as sitk

    # first, as in real use: the package sets OpenMP's passive waiting before torch loads
    from femurscreen.segmentation.vbnet import VBNet, VBNetEngine

    torch = importlib.import_module("torch")
    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)

    if args.weights:
        engine = VBNetEngine(args.weights, device="cpu")
        forced = False
    else:
        torch.manual_seed(0)
        coarse = VBNet(out_channels=3, base_channels=8)
        fine = VBNet(out_channels=2, base_channels=16)
        engine = VBNetEngine.from_models(coarse, fine, device="cpu")
        real_locate = engine.locate

        def locate(image):  # run the real coarse pass, then use the known hip centres
            real_locate(image)
            return {side: np.asarray(c) for side, c in HIPS.items()}

        engine.locate = locate
        forced = True
    # warm-up on a tiny volume so one-time library set-up is not counted
    warm = sitk.Image(64, 64, 48, sitk.sitkInt16) - 1000
    engine.predict(warm)
    tracemalloc.start()
    t0 = time.perf_counter()
    image = sitk.ReadImage(args.child)
    t_read = time.perf_counter() - t0
    labels, details = engine.predict_with_details(image)
    total = time.perf_counter() - t0
    _, np_peak = tracemalloc.get_traced_memory()
    arr = sitk.GetArrayViewFromImage(labels)
    print(
        json.dumps(
            {
                "size": image.GetSize(),
                "spacing": image.GetSpacing(),
                "threads": torch.get_num_threads(),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "forced_hip_centres": forced,
                "read_s": round(t_read, 2),
                "predict_s": round(total - t_read, 2),
                "total_s": round(total, 2),
                "steps_s": {k: round(v, 2) for k, v in details["timings"].items()},
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
                "numpy_peak_gb": round(np_peak / 1e9, 2),
                "voxels": {int(v): int((arr == v).sum()) for v in (1, 2)},
            }
        )
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=3, default=(512, 512, 300))
    p.add_argument("--spacing", type=float, nargs=3, default=(0.78, 0.78, 1.0))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", help="weights folder (default: random shipped architecture)")
    p.add_argument("--format", default="nii.gz", choices=("nii.gz", "nii", "nrrd", "mha"))
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"ct.{args.format}"
        t = time.perf_counter()
        synthetic_ct(tuple(args.size), tuple(args.spacing), path)
        print(f"wrote {path.name} {args.size} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        cmd = [sys.executable, __file__, "--child", str(path), "--threads", str(args.threads)]
        if args.weights:
            cmd += ["--weights", args.weights]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        for _ in range(args.repeat):
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                return out.returncode
            print(out.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
