"""Feature extraction over a cohort CSV, in parallel, where one bad case never stops the run.

The cohort CSV has columns ``case_id``, ``ct`` and ``mask`` (paths relative to the CSV's folder;
other columns such as ``t_score`` are ignored here). A case whose files are missing or
unreadable gets an error row for each side and the run goes on; progress goes to stderr.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import SimpleITK as sitk

from femurscreen.errors import FemurScreenError, InputError
from femurscreen.features.case import extract_case_features, split_requested
from femurscreen.features.params import params_sha256, plan_features, resolve_params
from femurscreen.features.table import features_frame, write_features_csv
from femurscreen.io.cohort_csv import read_cohort_csv
from femurscreen.status import Status

log = logging.getLogger(__name__)

COHORT_COLUMNS: tuple[str, ...] = ("case_id", "ct", "mask")
SIDES: tuple[str, ...] = ("left", "right")


@dataclass(frozen=True)
class CaseTask:
    """Everything a worker process needs for one case (picklable)."""

    case_id: str
    ct: Path
    mask: Path
    params: Path
    only: tuple[str, ...] | None
    cache_dir: Path | None


def read_cohort(cohort_csv: str | Path) -> list[tuple[str, Path, Path]]:
    """(case_id, CT path, mask path) per row; paths resolved against the CSV's folder."""
    table = read_cohort_csv(cohort_csv, COHORT_COLUMNS)
    return [
        (row["case_id"], table.path_of(row, "ct"), table.path_of(row, "mask")) for row in table.rows
    ]


def _read_ct(path: Path) -> sitk.Image:
    from femurscreen.io.ctio import read_ct

    return read_ct(path)


def _read_mask(path: Path) -> sitk.Image:
    if not path.exists():
        raise InputError("mask file not found", "check the path", path=path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "unreadable"
        raise InputError(
            f"cannot read the mask ({reason})", "write a NIfTI/NRRD label map", path
        ) from exc


def _error_rows(task: CaseTask, message: str) -> list[dict]:
    sha = params_sha256(task.params)
    return [
        {
            "case_id": task.case_id,
            "side": side,
            "status": Status.ERROR,
            "error": message,
            "radiomics_params_sha256": sha,
        }
        for side in SIDES
    ]


def run_case(task: CaseTask) -> list[dict]:
    """Rows of one case; input problems become error rows instead of exceptions."""
    try:
        if not task.ct.exists():
            raise InputError("CT file not found", "check the path", path=task.ct)
        ct = _read_ct(task.ct)
        mask = _read_mask(task.mask)
        return extract_case_features(
            ct,
            mask,
            case_id=task.case_id,
            params=task.params,
            only=task.only,
            cache_dir=task.cache_dir,
        )
    except FemurScreenError as exc:
        return _error_rows(task, exc.message)
    except Exception as exc:  # keep the cohort going; the row says what happened
        log.debug("case %s failed", task.case_id, exc_info=True)
        return _error_rows(task, f"feature extraction failed: {type(exc).__name__}: {exc}")


def _init_worker(threads: int) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _progress(done: int, total: int, case_id: str, rows: list[dict], seconds: float) -> None:
    states = ", ".join(f"{r['side']} {r['status']}" for r in rows)
    print(
        f"extract-features [{done}/{total}] {case_id}: {states} ({seconds:.1f} s)", file=sys.stderr
    )


def extract_cohort_features(
    cohort_csv: Path,
    *,
    params: Path | None = None,
    only: Sequence[str] | None = None,
    cache_dir: Path | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """Feature table (one row per case and side) for every case of ``cohort_csv``.

    ``workers`` > 1 runs cases in that many processes (spawned, so pyradiomics and ITK threads
    are never forked); rows come back in the cohort's order whatever order cases finish in.
    """
    params_path = resolve_params(params)
    radiomics_names, _ = split_requested(only)
    if radiomics_names:
        plan_features(radiomics_names, params_path)  # refuse a bad list before any work
    cases = read_cohort(cohort_csv)
    only_t = tuple(only) if only is not None else None
    tasks = [CaseTask(cid, ct, mask, params_path, only_t, cache_dir) for cid, ct, mask in cases]
    results: dict[int, list[dict]] = {}
    workers = max(1, min(int(workers), len(tasks)))
    start = time.monotonic()
    if workers == 1:
        for i, task in enumerate(tasks):
            t0 = time.monotonic()
            results[i] = run_case(task)
            _progress(i + 1, len(tasks), task.case_id, results[i], time.monotonic() - t0)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
        ) as pool:
            futures = {pool.submit(run_case, task): i for i, task in enumerate(tasks)}
            for done, future in enumerate(as_completed(futures), start=1):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as exc:  # a worker died (out of memory...)
                    results[i] = _error_rows(
                        tasks[i], f"worker failed: {type(exc).__name__}: {exc}"
                    )
                _progress(done, len(tasks), tasks[i].case_id, results[i], time.monotonic() - start)
    rows = [row for i in range(len(tasks)) for row in results[i]]
    return features_frame(rows)


def summarize(frame: pd.DataFrame) -> dict[str, int]:
    """Counts of cases and sides computed or failed (a case is ok when any side is ok)."""
    ok_sides = frame["status"] == Status.OK
    cases_ok = frame.loc[ok_sides, "case_id"].nunique()
    cases = frame["case_id"].nunique()
    return {
        "cases": int(cases),
        "cases_ok": int(cases_ok),
        "cases_failed": int(cases - cases_ok),
        "sides_ok": int(ok_sides.sum()),
        "sides_failed": int((~ok_sides).sum()),
    }


def extract_features(
    out: Path,
    cohort_csv: Path | None = None,
    *,
    ct: Path | None = None,
    mask: Path | None = None,
    case_id: str | None = None,
    params: Path | None = None,
    only: Sequence[str] | None = None,
    cache_dir: Path | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """The ``extract-features`` verb: a cohort CSV or one CT + mask, written to ``out`` (CSV).

    Raises FemurScreenError when no side of any case could be computed (the CSV, with the
    error column saying why, is written first).
    """
    if (cohort_csv is None) == (ct is None):
        raise InputError(
            "give either a cohort CSV or --ct with --mask",
            "e.g. femurscreen extract-features cohort.csv --out features.csv",
        )
    if cohort_csv is not None:
        frame = extract_cohort_features(
            Path(cohort_csv), params=params, only=only, cache_dir=cache_dir, workers=workers
        )
    else:
        if mask is None:
            raise InputError("--ct needs --mask", "pass the label map of that CT with --mask")
        assert ct is not None  # exactly one of cohort_csv and ct (checked above)
        params_path = resolve_params(params)
        task = CaseTask(
            case_id or _case_id_from(Path(ct)),
            Path(ct),
            Path(mask),
            params_path,
            tuple(only) if only is not None else None,
            cache_dir,
        )
        radiomics_names, _ = split_requested(only)
        if radiomics_names:
            plan_features(radiomics_names, params_path)
        t0 = time.monotonic()
        rows = run_case(task)
        _progress(1, 1, task.case_id, rows, time.monotonic() - t0)
        frame = features_frame(rows)
    write_features_csv(frame, out)
    counts = summarize(frame)
    if counts["sides_ok"] == 0:
        first = frame["error"].iloc[0] if len(frame) else ""
        raise FemurScreenError(
            f"no features could be computed: all {counts['cases']} case(s) failed (first error: "
            f"{first})",
            f"see the error column of {out}",
        )
    return frame


def _case_id_from(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
