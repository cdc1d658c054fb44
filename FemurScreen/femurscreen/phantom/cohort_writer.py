"""Writing a phantom cohort: one folder per case, a cohort.csv, in parallel, atomically.

Case i draws everything (its seed, T-score, implant/truncation flags) from (seed, i) alone,
so its files are identical whatever --cases or --workers. Every file is written under a
temporary name in its final folder and renamed into place, and cohort.csv is written last, so
an interrupted run never leaves a file (or a table) that looks complete but is not.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from femurscreen import __version__
from femurscreen.errors import InputError
from femurscreen.io.cohort_csv import read_cohort_csv
from femurscreen.labels import T_NORMAL_MIN, T_OSTEOPOROSIS_MAX, bone_status
from femurscreen.phantom.anatomy import PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM
from femurscreen.phantom.case import PhantomOptions, make_case_tissues

CSV_NAME = "cohort.csv"
MANIFEST_NAME = "phantoms.json"  # says the cohort is synthetic, and how it was made
CSV_COLUMNS = ("case_id", "ct", "mask", "t_score", "bone_status")
EXTRA_COLUMNS = (
    "synthetic",
    "seed",
    "implant_side",
    "truncated_side",
    "direction",
    "spacing",
    "trabecular_hu",
    "cortex_mm",
    "noise_sd",
    "true_fn_abmd_g_cm2",
    "true_th_abmd_g_cm2",
    "true_fn_abmd_left_g_cm2",
    "true_fn_abmd_right_g_cm2",
    "true_th_abmd_left_g_cm2",
    "true_th_abmd_right_g_cm2",
    "scanner",
)
# true_fn/th_abmd_g_cm2: mean of the sides that have a truth (no implant, not cut by the field
# of view), from the case's analytic anatomy (femurscreen.phantom.truth); empty when none has
CT_NAME = "ct.nii.gz"
MASK_NAME = "femur.nii.gz"
TISSUE_NAME = "tissue.nii.gz"  # only with PhantomOptions.tissues (training data)
INFO_NAME = "info.json"
# T-score ranges of the three WHO classes used by the default (class-balanced) sampling
T_MIN, T_MAX = -4.0, 1.0
CLASS_RANGES = (
    (T_NORMAL_MIN, T_MAX),
    (T_OSTEOPOROSIS_MAX, T_NORMAL_MIN),
    (T_MIN, T_OSTEOPOROSIS_MAX),
)
_STREAM_T, _STREAM_FLAGS = 101, 102


def case_id(index: int) -> str:
    return f"case_{index:04d}"


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of a cohort with master ``seed`` (63-bit, non-negative)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def sample_t_score(seed: int, t_range: tuple[float, float] | None = None) -> float:
    """T-score of a case: uniform in ``t_range``, or by default a WHO class drawn with equal
    probability and a T-score uniform within that class (normal [-1, 1], osteopenia
    (-2.5, -1), osteoporosis [-4, -2.5]). Rounded to 3 decimals so that the value written to
    the table gives the same class."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM_T]))
    if t_range is not None:
        t = rng.uniform(*t_range)
    else:
        lo, hi = CLASS_RANGES[int(rng.integers(len(CLASS_RANGES)))]
        t = rng.uniform(lo, hi)
    return round(float(t), 3)


def case_flags(seed: int, implant_fraction: float, truncate_fraction: float) -> tuple[bool, bool]:
    """Whether a case gets an implant / a truncated field of view."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM_FLAGS]))
    u = rng.random(2)
    return bool(u[0] < implant_fraction), bool(u[1] < truncate_fraction)


def write_image_atomic(image: sitk.Image, path: Path) -> None:
    """Write ``image`` compressed under a temporary name in the same folder, then rename."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        sitk.WriteImage(image, str(tmp), True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(text: str, path: Path) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def render_case(
    out_dir: str,
    index: int,
    seed: int,
    t_range,
    options: PhantomOptions,
    implant_fraction: float,
    truncate_fraction: float,
) -> dict:
    """Render and write case ``index``; returns its row of cohort.csv (plus timing)."""
    cs = case_seed(seed, index)
    t = sample_t_score(cs, t_range)
    implant, truncate = case_flags(cs, implant_fraction, truncate_fraction)
    opts = dataclasses.replace(options, implant=implant, truncate=truncate)
    ct, mask, tissue, info = make_case_tissues(cs, t, opts)
    cid = case_id(index)
    folder = Path(out_dir) / cid
    folder.mkdir(parents=True, exist_ok=True)
    write_image_atomic(ct, folder / CT_NAME)
    write_image_atomic(mask, folder / MASK_NAME)
    extra = {}
    if tissue is not None:
        write_image_atomic(tissue, folder / TISSUE_NAME)
        extra["tissue"] = f"{cid}/{TISSUE_NAME}"
    info["case_id"] = cid
    write_text_atomic(json.dumps(info, indent=1) + "\n", folder / INFO_NAME)
    return {
        "case_id": cid,
        "ct": f"{cid}/{CT_NAME}",
        "mask": f"{cid}/{MASK_NAME}",
        "t_score": f"{t:.3f}",
        "bone_status": bone_status(t),
        "synthetic": "true",
        "seed": cs,
        "implant_side": info["implant_side"],
        "truncated_side": info["truncated_side"],
        "direction": " ".join(f"{v:g}" for v in info["direction"]),
        "spacing": " ".join(f"{v:g}" for v in info["spacing"]),
        "trabecular_hu": info["trabecular_hu"],
        "cortex_mm": info["cortex_mm"],
        "noise_sd": info["noise_sd"],
        **_truth_columns(info),
        "scanner": " ".join(f"{k}={v:g}" for k, v in info["scanner"].items() if "gain" not in k),
        **extra,
        "_index": index,
        "_seconds": info["render_seconds"],
    }


def _truth_columns(info: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in ("fn", "th"):
        values = [info.get(f"true_{key}_abmd_{side}_g_cm2") for side in ("left", "right")]
        for side, v in zip(("left", "right"), values, strict=True):
            out[f"true_{key}_abmd_{side}_g_cm2"] = "" if v is None else f"{v:.4f}"
        have = [v for v in values if v is not None]
        out[f"true_{key}_abmd_g_cm2"] = f"{np.mean(have):.4f}" if have else ""
    return out


def _progress_line(done: int, total: int, row: dict) -> str:
    extra = "".join(f" {k}={row[k]}" for k in ("implant_side", "truncated_side") if row.get(k))
    return (
        f"[{done}/{total}] {row['case_id']} T={float(row['t_score']):+.2f} "
        f"{row['bone_status']}{extra} ({row['_seconds']:.1f} s render)"
    )


def make_cohort(
    out_dir: str | Path,
    n_cases: int,
    seed: int,
    *,
    options: PhantomOptions | None = None,
    implant_fraction: float = 0.0,
    truncate_fraction: float = 0.0,
    t_range: tuple[float, float] | None = None,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write ``n_cases`` phantom cases under ``out_dir`` and return the path of cohort.csv.

    ``progress`` receives one line per finished case (default: printed to stderr).
    """
    options = options or PhantomOptions()
    if n_cases < 1:
        raise InputError(f"--cases must be at least 1, got {n_cases}", "ask for one case or more")
    if seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed}", "use e.g. --seed 0")
    for name, value in (("implant", implant_fraction), ("truncate", truncate_fraction)):
        if not 0.0 <= value <= 1.0:
            raise InputError(
                f"--{name}-fraction must be within [0, 1], got {value}",
                "give a fraction such as 0.1",
            )
    if t_range is not None and not (np.all(np.isfinite(t_range)) and t_range[0] < t_range[1]):
        raise InputError(
            f"--t-range needs two finite numbers LO < HI, got {t_range}", "e.g. --t-range -4 1"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(
            "the output path exists and is not a folder", "give a new or existing folder", out
        )
    out.mkdir(parents=True, exist_ok=True)
    if progress is None:

        def progress(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

    workers = workers or min(2, os.cpu_count() or 1)
    args = [
        (str(out), i, int(seed), t_range, options, implant_fraction, truncate_fraction)
        for i in range(n_cases)
    ]
    rows: list[dict] = []
    if workers <= 1 or n_cases == 1:
        for a in args:
            rows.append(render_case(*a))
            progress(_progress_line(len(rows), n_cases, rows[-1]))
    else:
        with ProcessPoolExecutor(max_workers=min(workers, n_cases)) as pool:
            futures = [pool.submit(render_case, *a) for a in args]
            for fut in as_completed(futures):
                rows.append(fut.result())
                progress(_progress_line(len(rows), n_cases, rows[-1]))
    rows.sort(key=lambda r: r["_index"])
    manifest = {
        "synthetic": True,
        "generator": "femurscreen phantom",
        "version": __version__,
        "seed": int(seed),
        "cases": n_cases,
        "options": _options_record(options),
        "implant_fraction": implant_fraction,
        "truncate_fraction": truncate_fraction,
        "t_range": list(t_range) if t_range else None,
        "labels": {"0": "background", "1": "left proximal femur", "2": "right proximal femur"},
        "cut_below_lesser_trochanter_mm": PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM,
    }
    write_text_atomic(json.dumps(manifest, indent=1) + "\n", out / MANIFEST_NAME)
    path = out / CSV_NAME
    tmp = path.with_name(f".tmp-{os.getpid()}-{CSV_NAME}")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            tissue_column = ("tissue",) if options.tissues else ()
            writer = csv.DictWriter(
                handle,
                fieldnames=[*CSV_COLUMNS, *EXTRA_COLUMNS, *tissue_column],
                extrasaction="ignore",
            )
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _options_record(options: PhantomOptions) -> dict:
    """The options for phantoms.json; the training-only ones only when asked for, so a default
    cohort's record stays as it was before they existed."""
    out = {k: v for k, v in dataclasses.asdict(options).items() if k != "fov"}
    for key, default in (("joint", "normal"), ("tissues", False)):
        if out.get(key) == default:
            out.pop(key)
    return out


def read_cohort(csv_path: str | Path) -> list[dict[str, str]]:
    """The rows of a phantom cohort CSV (text cells; paths relative to the CSV)."""
    return read_cohort_csv(csv_path, CSV_COLUMNS).rows
