"""Full pyradiomics extraction vs the fast path (only a model's features), on one femur ROI.

Usage:
    python scripts/benchmark_features.py             # phantom hip CT, left femur (~160 ml)
    python scripts/benchmark_features.py --synthetic # simple synthetic femur, ~140 ml at 1 mm
    python scripts/benchmark_features.py --cohort phantom/cohort.csv   # first case of a cohort
    python scripts/benchmark_features.py --features model_features.txt --repeats 3
    OPENBLAS_NUM_THREADS=1 python scripts/benchmark_features.py --threads 1   # steadier timings

On a shared machine, thread pools (ITK, OpenBLAS) make both wall and CPU times vary with the
load; one thread each gives the steadiest ratio.

Prints the full-extraction time, the fast-path time, the speed-up and the feature counts, and
checks that the fast path gives exactly the full extraction's values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from femurscreen.features.fast_path import extract_fast
from femurscreen.features.params import default_params_path, read_feature_list
from femurscreen.features.radiomics_extract import extract_full
from scipy import ndimage

# A typical selected model: ~15 features over original, one LoG sigma and two wavelet sub-bands.
TYPICAL_MODEL = [
    "original_shape_SurfaceVolumeRatio",
    "original_firstorder_10Percentile",
    "original_firstorder_Energy",
    "original_firstorder_Mean",
    "original_glcm_Contrast",
    "original_glszm_ZoneEntropy",
    "original_gldm_LargeDependenceEmphasis",
    "log-sigma-2-0-mm-3D_firstorder_Median",
    "log-sigma-2-0-mm-3D_glrlm_RunEntropy",
    "log-sigma-2-0-mm-3D_gldm_DependenceEntropy",
    "wavelet-LLH_firstorder_Mean",
    "wavelet-LLH_glcm_Idmn",
    "wavelet-HLL_firstorder_Skewness",
    "wavelet-LLL_firstorder_90Percentile",
    "wavelet-LLL_ngtdm_Busyness",
]


def synthetic_femur(seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """A left proximal femur (head, neck, trochanteric block, shaft; ~140 ml) at 1 mm in LPS.

    2 mm cortex at ~1200 HU around a textured trabecular interior (~200 +- 60 HU), in soft
    tissue (40 HU) inside a body outline surrounded by air.
    """
    rng = np.random.default_rng(seed)
    xs, ys, zs = np.arange(40, 181.0), np.arange(-45, 46.0), np.arange(-120, 31.0)
    z, y, x = np.meshgrid(zs, ys, xs, indexing="ij")
    head = (x - 90) ** 2 + y**2 + z**2 <= 22**2
    a, b = np.array([90.0, 0, 0]), np.array([128.0, 0, -38])
    axis = (b - a) / np.linalg.norm(b - a)
    rel = np.stack([x - a[0], y - a[1], z - a[2]], -1)
    along = rel @ axis
    radial = np.linalg.norm(rel - along[..., None] * axis, axis=-1)
    neck = (along >= 0) & (along <= np.linalg.norm(b - a)) & (radial <= 14)
    troch = ((x - 130) / 24) ** 2 + (y / 19) ** 2 + ((z + 42) / 30) ** 2 <= 1
    shaft = ((x - 130) ** 2 + y**2 <= 15**2) & (z <= -40) & (z >= -105)
    bone = head | neck | troch | shaft
    depth = ndimage.distance_transform_edt(bone)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, x.shape), 1.2)
    texture /= texture.std()
    ct = np.where(np.abs(y) < 42, 40.0, -1000.0) + rng.normal(0, 12, x.shape)
    ct = np.where(bone, 200 + 60 * texture, ct)
    ct = np.where(bone & (depth <= 2), 1200 + rng.normal(0, 40, x.shape), ct)
    image = sitk.GetImageFromArray(ct.astype(np.int16))
    image.SetOrigin((float(xs[0]), float(ys[0]), float(zs[0])))
    mask = sitk.GetImageFromArray(bone.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def cohort_case(cohort_csv: Path) -> tuple[sitk.Image, sitk.Image]:
    """Left femur of the first case of a cohort CSV (e.g. made by ``femurscreen phantom``)."""
    from femurscreen.features.cohort_extract import read_cohort
    from femurscreen.io.ctio import read_ct

    _case_id, ct_path, mask_path = read_cohort(cohort_csv)[0]
    ct = read_ct(ct_path)
    labels = sitk.ReadImage(str(mask_path))
    return ct, sitk.Cast(labels == 1, sitk.sitkUInt8)


def phantom_case(seed: int = 1) -> tuple[sitk.Image, sitk.Image] | None:
    """Left femur of a rendered phantom hip CT (0.8 x 0.8 x 1 mm), None without the generator."""
    try:
        from femurscreen.phantom import make_case
    except ImportError:
        return None
    ct, labels, _info = make_case(seed, -1.5)
    return ct, sitk.Cast(labels == 1, sitk.sitkUInt8)


def _run(fn) -> tuple[float, float, dict]:
    """(wall s, CPU s of this process and its threads, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, help="use the first case of this cohort CSV")
    parser.add_argument("--synthetic", action="store_true", help="use the simple synthetic femur")
    parser.add_argument("--features", help="model feature list (file or comma list)")
    parser.add_argument("--params", type=Path, default=None, help="pyradiomics parameter file")
    parser.add_argument("--repeats", type=int, default=2, help="runs per path (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="ITK threads (0: ITK's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)

    params = args.params or default_params_path()
    only = read_feature_list(args.features) if args.features else TYPICAL_MODEL
    case = None
    if args.cohort:
        case = cohort_case(args.cohort)
    elif not args.synthetic:
        case = phantom_case()
    ct, mask = case if case is not None else synthetic_femur()
    roi_ml = float(sitk.GetArrayViewFromImage(mask).sum()) * float(np.prod(ct.GetSpacing())) / 1e3
    print(f"ROI: {roi_ml:.1f} ml, CT {ct.GetSize()} at {ct.GetSpacing()} mm; params {params.name}")

    lists = {"model": only}
    if not args.features:  # also the same model without its shape feature (shape costs most)
        lists["model without shape"] = [n for n in only if "_shape_" not in n]
    # Interleave the runs so that both paths meet the same machine load; report medians.
    times: dict[str, list[tuple[float, float]]] = {"full": [], **{k: [] for k in lists}}
    results: dict[str, dict] = {}
    for _ in range(args.repeats):
        wall, cpu, results["full"] = _run(lambda: extract_full(ct, mask, params))
        times["full"].append((wall, cpu))
        for label, names in lists.items():
            wall, cpu, results[label] = _run(
                lambda names=names: extract_fast(ct, mask, params, names)
            )
            times[label].append((wall, cpu))
    median = {
        k: tuple(statistics.median(t[i] for t in v) for i in (0, 1)) for k, v in times.items()
    }
    full = results["full"]
    full_wall, full_cpu = median["full"]
    print(f"full extraction: wall {full_wall:6.2f} s, CPU {full_cpu:6.2f} s, {len(full)} features")
    mismatch: list[str] = []
    for label, names in lists.items():
        fast = results[label]
        mismatch += [n for n in names if float(fast[n]) != full[n]]
        wall, cpu = median[label]
        used = ", ".join(sorted({n.split("_")[0] for n in names}))
        print(f"fast path, {label}: wall {wall:6.2f} s, CPU {cpu:6.2f} s, {len(fast)} features")
        print(f"  over {used}")
        print(f"  speed-up: {full_wall / wall:5.1f} x wall, {full_cpu / cpu:5.1f} x CPU")
    print(f"(median of {args.repeats} interleaved runs each)")
    print("fast == full for every requested feature:", mismatch or "yes")
    return 0 if not mismatch else 1


if __name__ == "__main__":
    sys.exit(main())
