"""Screen many CTs: one result folder per case, resumable, in parallel locally or on Dask.

INPUT is a folder or a CSV:

- a folder: every CT file in it (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``,
  ``.mhd``; case_id = file name without extension), every sub-folder holding exactly one CT
  file, or one named ``ct.*`` beside others such as a label map (case_id = folder name), and
  every axial CT series of the DICOM files anywhere below it (:mod:`femurscreen.dicom.tree`:
  one case per series, found by Study/SeriesInstanceUID; case_id = its folder's name, with the
  series number when the folder holds several). DICOM series that are not screenable CTs
  (localisers, reformats, other modalities, a few slices) are listed with the reason in
  ``batch-index.json`` and as ``skipped`` rows of the summary; they are not failures. Hidden
  entries, result folders and the output folder itself are ignored;
- a CSV with a column ``ct`` (paths; relative ones are relative to the CSV's folder) and an
  optional ``case_id`` column (otherwise derived from the path as above).

Case names: by default a case is named by its image fingerprint (``CT-`` + 10 hex digits), as
``femurscreen screen`` names it, so no file name (which often holds a patient name or birth
date) reaches a folder name, report, result, table or the console; a case whose CT cannot be
read is named ``input-<hash of its path>``. ``include_identifiers=True`` names cases by file
or folder name as above; a CSV's ``case_id`` column is always used as given.
``OUT/batch-index.json`` maps a hash of each input's path, size and time stamp to its case
name, so a rerun finds finished cases without reading them again.

Each case is screened by :func:`femurscreen.screening.screen` into ``OUT/<case_id>/``. Because
``screen`` writes a folder atomically, a case whose folder holds ``result.json`` and every other
result file is finished and is skipped on the next run: an interrupted batch resumes where it
stopped. A case that fails is recorded in ``OUT/<case_id>.error.json`` (message and, for
unexpected errors, the traceback) and the others go on; it is retried on the next run. A case
screened without any graded side (``screen`` exits 1 for it) counts as failed, with the reason,
but is not retried. ``OUT/summary.csv`` has one row per case and side, and is rewritten
(atomically) from every case's files while the batch runs and at the end, including cases
skipped as already finished. One batch at a time may write into OUT: a second one stops with a
clear error (``OUT/.femurscreen-batch.lock``; a lock left by a killed batch on this machine is
taken over).

Parallelism: ``workers=N`` runs N cases at once in separate processes on this machine, each
with ``cpu_count // N`` threads. ``scheduler="tcp://host:8786"`` sends one task per case to an
existing Dask distributed scheduler; its workers must see INPUT and OUT at the same paths (a
shared file system), write the results themselves, and the client only collects statuses.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import pandas as pd

from femurscreen.atomic import atomic_path, check_output_folder, process_alive, write_text
from femurscreen.errors import FemurScreenError, InputError
from femurscreen.grading import summary_rows
from femurscreen.labels import SIDES
from femurscreen.output.columns import SUMMARY_COLUMNS as SIDE_COLUMNS

if TYPE_CHECKING:
    from femurscreen.dicom.web import DicomWeb, RemoteSeries

log = logging.getLogger(__name__)

CT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SUMMARY = "summary.csv"
# The per-side columns are the grading module's (grading.summary_rows); the batch adds the
# study a DICOM case came from and why a DICOM series was not screened. Add, never rename.
SUMMARY_COLUMNS = (*SIDE_COLUMNS, "study", "reason")
SKIPPED = "skipped"  # the status of a summary row for a DICOM series that was not screened
_SUMMARY_EVERY_S = 10.0  # rewrite summary.csv at most this often while running


@dataclass(frozen=True)
class Case:
    """One CT to screen. ``case_id`` is derived from its file or folder name (or the CSV's
    ``case_id`` column, then ``given``); it names the case only with ``include_identifiers``."""

    case_id: str
    path: Path
    given: bool = False
    key: str = ""  # input key when not that of ``path`` alone (a DICOM series: all its files)
    files: tuple[Path, ...] = ()  # a DICOM series spread over folders: staged before reading
    study: str = ""  # the study it belongs to, as the summary shows it (DICOM only)


@dataclass(frozen=True)
class SkippedSeries:
    """A DICOM series that is not screened, with why (a row of the summary, not a failure)."""

    name: str
    reason: str
    study: str = ""
    info: dict | None = None
    failed: bool = False  # a whole study without a CT series to screen (DICOMweb): a failure


@dataclass(frozen=True)
class Outcome:
    """What happened to one case in this run. ``ok``: screened and at least one side graded."""

    case_id: str
    ok: bool
    error: str = ""
    seconds: float = 0.0
    skipped: bool = False
    key: str = ""  # input_key of the case (see _Index)
    result: bool = False  # a result folder was written (also when no side could be graded)


# --------------------------------------------------------------------------------------------
# Finding the cases


def discover_cases(inputs: str | Path, out_dir: str | Path | None = None) -> list[Case]:
    """The cases of a folder or a CSV (see module doc), in a stable order."""
    return discover(inputs, out_dir)[0]


def discover(
    inputs: str | Path, out_dir: str | Path | None = None, include_identifiers: bool = False
) -> tuple[list[Case], list[SkippedSeries]]:
    """The cases of a folder or a CSV, and the DICOM series of a folder that are not screened."""
    inputs = Path(inputs).expanduser()
    if not inputs.exists():
        raise InputError("not found", "pass a folder of CTs or a CSV with a 'ct' column", inputs)
    if inputs.is_file():
        if inputs.suffix.lower() != ".csv":
            raise InputError(
                "is a single file, not a folder of CTs or a CSV",
                "screen one CT with 'femurscreen screen', or pass a folder or a CSV",
                inputs,
            )
        return _cases_from_csv(inputs), []
    return _cases_from_folder(
        inputs, None if out_dir is None else Path(out_dir), include_identifiers
    )


def _cases_from_csv(path: Path) -> list[Case]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot be read as CSV ({exc})", "save it as UTF-8 CSV", path) from None
    if not rows or "ct" not in rows[0]:
        raise InputError(
            "has no 'ct' column (or no rows)",
            "give the CSV a header line with a 'ct' column of CT paths (optional 'case_id')",
            path,
        )
    cases, explicit = [], "case_id" in rows[0]
    for number, row in enumerate(rows, start=2):
        text = (row.get("ct") or "").strip()
        if not text:
            raise InputError(f"line {number} has an empty 'ct' value", "fill in a path", path)
        ct = Path(text).expanduser()
        if not ct.is_absolute():
            ct = path.parent / ct
        given = (row.get("case_id") or "").strip() if explicit else ""
        cases.append((given or case_name(ct), ct, bool(given)))
    given_ids = [c[0] for c in cases if c[2]]
    duplicates = sorted({c for c in given_ids if given_ids.count(c) > 1})
    if duplicates:
        raise InputError(
            f"case_id values are not unique: {', '.join(duplicates[:5])}",
            "give every row its own case_id",
            path,
        )
    return _unique([(cid, ct) for cid, ct, _ in cases], [g for _, _, g in cases])


def _cases_from_folder(
    folder: Path, out_dir: Path | None, include_identifiers: bool = False
) -> tuple[list[Case], list[SkippedSeries]]:
    from femurscreen.dicom.tree import index_tree

    skip = out_dir.resolve() if out_dir is not None else None
    series = index_tree(folder, skip=[] if skip is None else [skip])
    dicom_folders = {p.parent.resolve() for s in series for p in s.files}
    found: list[tuple[str, Path]] = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or (skip is not None and entry.resolve() == skip):
            continue
        if entry.is_file():
            if _is_ct_file(entry):
                found.append((case_name(entry), entry))
        elif entry.is_dir():
            if (entry / "result.json").exists():
                continue  # a FemurScreen output folder, not an input
            here = entry.resolve()
            if any(f == here or here in f.parents for f in dicom_folders):
                continue  # DICOM: one case per series, below
            files = [p for p in entry.iterdir() if p.is_file() and _is_ct_file(p)]
            named_ct = [p for p in files if case_name(p).lower() == "ct"]
            if len(files) > 1 and len(named_ct) == 1:
                files = named_ct  # e.g. ct.nii.gz beside femur.nii.gz (a phantom case folder)
            if len(files) == 1:
                found.append((case_name(entry), files[0]))
            elif files:
                log.warning(
                    "%s: skipped, it holds %d image files (put one CT per sub-folder)",
                    entry,
                    len(files),
                )
    dicom_cases, skipped = _dicom_cases(folder, series, include_identifiers)
    if not found and not dicom_cases:
        if skipped:
            reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:5])
            raise InputError(
                f"holds {len(skipped)} DICOM series but none is an axial CT series to screen "
                f"({reasons})",
                "pass the folder of the patient's axial CT series (not only scouts, reformats "
                "or other modalities)",
                folder,
            )
        raise InputError(
            "holds no CT files (.nii, .nii.gz, .nrrd, .mha, ...) and no DICOM series folders",
            "pass a folder of CTs, a folder of DICOM series folders, or a CSV with a 'ct' column",
            folder,
        )
    named = _unique([*found, *((c.case_id, c.path) for c in dicom_cases)])
    cases = named[: len(found)]
    for case, source in zip(named[len(found) :], dicom_cases, strict=True):
        cases.append(
            Case(case.case_id, case.path, key=source.key, files=source.files, study=source.study)
        )
    return cases, skipped


def _dicom_cases(
    root: Path, series: list, include_identifiers: bool
) -> tuple[list[Case], list[SkippedSeries]]:
    """One case per chosen series; the others as skipped rows (see femurscreen.dicom.tree)."""
    per_folder: dict[Path, int] = {}
    for item in series:
        for parent in item.folders:
            per_folder[parent] = per_folder.get(parent, 0) + 1
    cases, skipped = [], []
    for item in series:
        study = study_label(item.study_uid, include_identifiers)
        folders = item.folders
        alone = len(folders) == 1 and per_folder[folders[0]] == 1
        common = Path(os.path.commonpath(folders)) if len(folders) > 1 else folders[0]
        base = case_name(common)
        name = base if alone else f"{base}-series{item.number or item.key}"
        if not item.chosen:
            shown = safe_case_id(name) if include_identifiers else f"series-{item.key}"
            skipped.append(
                SkippedSeries(shown, item.reason, study, item.describe(include_identifiers))
            )
            continue
        if alone:
            path, files = folders[0], ()  # the folder is the series: read_ct reads it
        elif len(folders) == 1 and item.series_uid:
            path, files = item.files[0], ()  # read_ct reads a file's whole series
        else:
            path, files = folders[0], tuple(item.files)  # staged into one folder first
        cases.append(Case(name, path, key=series_key(item.files), files=files, study=study))
    return cases, skipped


def series_key(files: Iterable[Path]) -> str:
    """The input key of a DICOM series: a hash of each file's path, size and mtime."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(files):
        digest.update(input_key(path).encode())
    return digest.hexdigest()


def study_label(study_uid: str, include_identifiers: bool = False) -> str:
    """How the summary names a study: its UID only with include_identifiers, else a hash."""
    if include_identifiers:
        return study_uid
    if not study_uid:
        return ""  # anonymised files without a Study Instance UID
    text = study_uid.encode("utf-8", "surrogateescape")
    return "study-" + hashlib.blake2b(text, digest_size=5).hexdigest()


def _is_ct_file(path: Path) -> bool:
    return path.name.lower().endswith(CT_SUFFIXES) and not path.name.lower().endswith(".seg.nrrd")


def case_name(path: Path) -> str:
    """A case id from a CT file or series folder name (its CT suffix dropped, made safe)."""
    name = path.name
    for suffix in CT_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return safe_case_id(name)


def safe_case_id(text: str) -> str:
    """A case_id usable as a folder name on every platform."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._")
    return text or "case"


def _unique(pairs: Iterable[tuple[str, Path]], given: list[bool] | None = None) -> list[Case]:
    seen: dict[str, int] = {}
    cases = []
    for number, (case_id, path) in enumerate(pairs):
        case_id = safe_case_id(case_id)
        key = case_id.lower()  # case-insensitive file systems
        if key in seen:
            seen[key] += 1
            case_id = f"{case_id}-{seen[key]}"
        else:
            seen[key] = 1
        cases.append(Case(case_id, path, bool(given[number]) if given else False))
    return cases


# --------------------------------------------------------------------------------------------
# Running one case (in this process, a pool process or a Dask worker)

_MODELS: dict[str, Any] = {}


def run_case(
    ct_path: str,
    out_dir: str,
    case_id: str | None,
    engine: str = "default",
    model_dir: str | None = None,
    include_identifiers: bool = False,
    key: str = "",
    files: tuple[str, ...] = (),
    dicom: bool = False,
    quality: bool = True,
    kvp: float | None = None,
    scanner_calibration: str | None = None,
) -> Outcome:
    """Screen one case into ``out_dir/<id>``; never raises for a problem with the case.

    ``case_id`` None: the case is named by its image fingerprint, as ``femurscreen screen``
    names it, or ``input-<key>`` when the CT cannot even be read; nothing in the outputs then
    carries the file name. A case screened without any graded side is not ``ok``: the command
    ``screen`` refuses it (exit 1), so the batch must not count it as done either.
    ``files``: a DICOM series spread over folders, linked into one folder to be read.
    ``dicom``: also write the DICOM SEG, SR and report capture (``OUT/<id>/dicom/``).
    ``quality``, ``kvp``, ``scanner_calibration``: as :func:`femurscreen.screening.screen`'s
    (checked once by :func:`batch` before any case runs).
    """
    from femurscreen.screening import graded_sides, screen

    started = time.perf_counter()
    root = Path(out_dir)
    name = case_id or f"input-{key[:10] or 'unknown'}"
    try:
        with _staged(files, root, key) as staged:
            source = staged or ct_path
            model = _model(model_dir)
            if case_id is None:
                from femurscreen.io.ctio import read_ct
                from femurscreen.screening import fingerprint

                name = fingerprint(read_ct(source))
            result = screen(
                source,
                root / name,
                engine=engine,
                model_dir=model,
                include_identifiers=include_identifiers,
                case_id=case_id,
                dicom=dicom,
                quality=quality,
                kvp=kvp,
                scanner_calibration=scanner_calibration,
            )
    except Exception as exc:  # the batch must go on: every failure is recorded, none is lost
        message = (
            exc.message if isinstance(exc, FemurScreenError) else f"{type(exc).__name__}: {exc}"
        )
        if not include_identifiers:
            message = scrub(message, ct_path)
        record = {
            "case_id": name,
            "error": message,
            "kind": type(exc).__name__,
            "time_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if not isinstance(exc, FemurScreenError):
            trace = traceback.format_exc()
            record["traceback"] = trace if include_identifiers else scrub(trace, ct_path)
        write_text(root / f"{name}.error.json", json.dumps(record, indent=2) + "\n")
        return Outcome(name, False, message, time.perf_counter() - started, key=key)
    (root / f"{name}.error.json").unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    if not graded_sides(result):
        return Outcome(name, False, not_graded_reason(result), seconds, key=key, result=True)
    return Outcome(name, True, "", seconds, key=key, result=True)


@contextlib.contextmanager
def _staged(files: tuple[str, ...], root: Path, key: str) -> Iterator[Path | None]:
    """A hidden folder of links to ``files`` (one DICOM series from several folders), removed
    afterwards; None when there is nothing to stage. Copies where links are not allowed."""
    if not files:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix=f".series-{key[:10]}-", dir=root))
    try:
        for number, name in enumerate(files):
            target = folder / f"{number:06d}.dcm"
            try:
                target.symlink_to(Path(name).resolve())
            except OSError:
                shutil.copyfile(name, target)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def not_graded_reason(result: dict) -> str:
    """Why ``screen`` refuses a result with no graded side (its exit 1), in the same words."""
    reasons = "; ".join(
        f"{side}: {(result.get(side) or {}).get('reason') or 'not graded'}"
        for side in ("right", "left")
    )
    return f"no side could be graded ({reasons})"


def scrub(text: str, path: str | Path) -> str:
    """``text`` without the input's path or file name (they may name the patient)."""
    path = Path(path)
    names = {str(path), str(path.expanduser()), os.path.abspath(path), path.name}
    with contextlib.suppress(OSError):
        names.add(str(path.resolve()))
    for name in sorted((n for n in names if len(n) >= 3), key=len, reverse=True):
        text = text.replace(name, "<input>")
    stem = case_name(path)
    if len(stem) >= 6:
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(stem)}(?![A-Za-z0-9])", "<input>", text)
    return text


def _model(model_dir: str | None):
    """The classifier, loaded (and verified) once per process."""
    from femurscreen.classifier import default_model_dir, load_model

    key = str(model_dir or "")
    if key not in _MODELS:
        _MODELS[key] = load_model(default_model_dir() if model_dir is None else model_dir)
    return _MODELS[key]


# Loggers quiet while a batch runs: the progress bar says what happens, and the DICOM
# libraries log UIDs (and highdicom the dataset it copies the patient from) at INFO.
QUIET_LOGGERS = ("femurscreen", "highdicom", "dicomweb_client")


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _init_pool_worker(threads: int) -> None:
    """Each pool process gets its share of the cores (set before numpy/torch load)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


# --------------------------------------------------------------------------------------------
# The batch


def batch(
    inputs: str | Path | None,
    out_dir: str | Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    engine: str = "default",
    model_dir: str | Path | None = None,
    include_identifiers: bool = False,
    progress: TextIO | bool | None = True,
    dicom: bool = False,
    from_dicomweb: DicomWeb | None = None,
    to_dicomweb: DicomWeb | None = None,
    quality: bool = True,
    kvp: float | None = None,
    scanner_calibration: str | Path | None = None,
) -> pd.DataFrame:
    """Screen every case of ``inputs`` into ``out_dir``; return the summary table.

    ``progress``: True for a progress bar on the current ``sys.stderr``, a text stream, or
    None/False for none. Cases are named by image fingerprint (as ``femurscreen screen``
    names them) unless ``include_identifiers`` is set (then by file or folder name) or a CSV
    gives a ``case_id``. One batch at a time may write into ``out_dir`` (a lock file).
    ``dicom``: each case also gets its DICOM SEG, SR and report capture (``<case>/dicom/``).
    ``from_dicomweb``: the cases are the CT series of that server's studies (``inputs`` is
    None); each is fetched into a hidden folder of ``out_dir``, screened and the folder removed.
    ``to_dicomweb``: each case's ``dicom/*.dcm`` is stored there (STOW) once screened; a rerun
    stores finished cases that were not stored yet (``batch-index.json`` records it).
    ``quality``: each case's segmentation quality signal (as ``screen``'s, on by default).
    ``kvp``: the tube voltage of every case for the calibrated density (replaces a DICOM
    header's); ``scanner_calibration``: a site's scanner calibration file for every case. Both
    are checked before anything is written; a finished case is not screened again with them.

    The table (also ``out_dir/summary.csv``) has one row per case and side, and one per DICOM
    series not screened (status ``skipped``, with the reason). Its ``attrs`` hold the counts
    of this run: ``cases``, ``done``, ``skipped``, ``failed`` (cases that could not be
    screened, stored, or had no side graded; with DICOMweb also studies without a CT series
    or that could not be read; ``failures`` maps their ids to the reason) and ``series_skipped``.
    """
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}", "use --workers 1 or more")
    if kvp is not None:  # options that apply to every case fail now, not once per case
        from femurscreen.bmd import check_kvp

        check_kvp(kvp)
    calibration = None
    if scanner_calibration is not None:
        from femurscreen.bmd import check_site_calibration

        calibration = str(Path(scanner_calibration).expanduser().resolve())
        check_site_calibration(calibration)
    out_dir = check_output_folder(Path(out_dir).expanduser()).resolve()
    dicom = dicom or from_dicomweb is not None or to_dicomweb is not None
    if from_dicomweb is not None:
        with _quiet_logs():  # dicomweb-client logs every UID it queries at INFO
            cases, skipped, remote = _remote_cases(from_dicomweb, out_dir, include_identifiers)
    elif inputs is None:
        raise InputError("no input", "pass a folder or CSV of CTs, or --from-dicomweb URL")
    else:
        cases, skipped = discover(inputs, out_dir, include_identifiers)
        remote = {}
    model = None if model_dir is None else str(Path(model_dir).expanduser().resolve())
    loaded = _model(model)  # a broken model stops the batch before any case runs
    out_dir.mkdir(parents=True, exist_ok=True)
    with _BatchLock(out_dir), _quiet_logs():  # the bar says what happens; no UIDs logged
        run = _Run(
            cases,
            skipped,
            out_dir,
            workers,
            scheduler,
            engine,
            model,
            include_identifiers,
            dicom,
            remote,
            from_dicomweb,
            to_dicomweb,
            options=(quality, kvp, calibration),
        )
        table = run.go(progress)
    table.attrs["demo"] = bool(loaded.demo)
    return table


def _remote_cases(
    server: DicomWeb, out_dir: Path, include_identifiers: bool
) -> tuple[list[Case], list[SkippedSeries], dict[int, RemoteSeries]]:
    """The CT series of every study on ``server`` as cases (fetched later, one at a time)."""
    cases: list[Case] = []
    skipped: list[SkippedSeries] = []
    remote: dict[int, RemoteSeries] = {}
    for study_uid in server.study_uids():
        plan = server.plan_study(study_uid)
        study = study_label(study_uid, include_identifiers)
        for series in plan.skipped:
            name = f"series-{series.key}"
            info = series.describe(include_identifiers)
            skipped.append(SkippedSeries(name, series.reason, study, info))
        if plan.error or not plan.chosen:
            why = plan.error or (
                "no axial CT series to screen in this study"
                + (f" ({'; '.join(s.reason for s in plan.skipped[:3])})" if plan.skipped else "")
            )
            log.warning("%s: %s", study, why)
            info = {"study": study, "status": "failed", "reason": why}
            skipped.append(SkippedSeries(study, why, study, info, failed=True))
        for item in plan.chosen:
            remote[len(cases)] = item
            folder = out_dir / f".dicomweb-{item.key[:16]}"
            name = f"{study}-series{item.series.number or item.series.key}"
            cases.append(Case(safe_case_id(name), folder, key=item.key, study=study))
    if not cases and not skipped:
        raise InputError(
            f"the DICOMweb server {server.label} holds no studies",
            "check the URL (the DICOMweb root, e.g. .../dicom-web) and the server's content",
        )
    return cases, skipped, remote


class _Run:
    """One batch run inside the lock: plan, screen, store, summarise."""

    def __init__(
        self,
        cases: list[Case],
        skipped: list[SkippedSeries],
        out_dir: Path,
        workers: int,
        scheduler: str | None,
        engine: str,
        model: str | None,
        include_identifiers: bool,
        dicom: bool,
        remote: dict[int, RemoteSeries],
        source: DicomWeb | None,
        store: DicomWeb | None,
        options: tuple[bool, float | None, str | None] = (True, None, None),
    ) -> None:
        self.cases, self.skipped, self.out_dir = cases, skipped, out_dir
        self.options = options  # run_case's quality, kvp, scanner_calibration
        self.workers, self.scheduler, self.engine, self.model = workers, scheduler, engine, model
        self.include_identifiers, self.dicom = include_identifiers, dicom
        self.remote, self.source, self.store = remote, source, store
        self.index = _Index(out_dir)
        self.keys = [c.key or input_key(c.path) for c in cases]
        self.outcomes: dict[int, Outcome] = {}

    def go(self, progress: TextIO | bool | None) -> pd.DataFrame:
        cases, out_dir, index = self.cases, self.out_dir, self.index
        for stale in [*out_dir.glob(".series-*"), *out_dir.glob(".dicomweb-*")]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed batch (we hold the lock)
        index.record_series([s.info or {"series": s.name} for s in self.skipped])
        planned: list[str | None] = [
            c.case_id if (self.include_identifiers or c.given) else index.get(k)
            for c, k in zip(cases, self.keys, strict=True)
        ]
        stream = sys.stderr if progress is True else (progress or None)
        self.bar = bar = _Progress(len(cases), stream)
        todo = []
        for slot, name in enumerate(planned):
            if name is not None and is_complete_result(out_dir / name, self.dicom):
                self.outcomes[slot] = self._stored(_finished_before(out_dir, name, self.keys[slot]))
            else:
                todo.append(slot)
        bar.skip(len(cases) - len(todo))
        self.writer = _SummaryWriter(out_dir, cases, self.skipped)
        jobs = {}
        for slot in todo:
            case = cases[slot]
            given = case.case_id if (self.include_identifiers or case.given) else None
            jobs[slot] = (
                str(case.path.resolve()),
                str(out_dir),
                given,
                self.engine,
                self.model,
                self.include_identifiers,
                self.keys[slot],
                tuple(str(f) for f in case.files),
                self.dicom,
                *self.options,
            )
        if jobs:
            if self.scheduler or self.workers > 1:
                ready = {}
                for slot, job in jobs.items():  # fetched up front: workers only read files
                    failure = self._fetch(slot, job)
                    if failure is None:
                        ready[slot] = job
                    else:
                        self._done(slot, failure)
                if self.scheduler:
                    _run_dask(self.scheduler, ready, self._done)
                else:
                    _run_pool(self.workers, ready, self._done)
            else:
                for slot, job in jobs.items():
                    failure = self._fetch(slot, job)
                    self._done(slot, failure or run_case(*job))
        bar.close()
        index.save()
        table = self.writer.write(self.outcomes)
        failed_studies = [s for s in self.skipped if s.failed]
        failures = {o.case_id: o.error for o in self.outcomes.values() if not o.ok}
        failures.update({s.name: s.reason for s in failed_studies})
        table.attrs.update(
            cases=len(cases),
            done=sum(1 for o in self.outcomes.values() if o.ok and not o.skipped),
            skipped=sum(1 for o in self.outcomes.values() if o.skipped),
            failed=len(failures),
            failures=failures,
            series_skipped=sum(1 for s in self.skipped if not s.failed),
            summary=str(out_dir / SUMMARY),
        )
        return table

    def _fetch(self, slot: int, job: tuple) -> Outcome | None:
        """Fetch a DICOMweb case into its hidden folder; a failed Outcome when that fails."""
        item = self.remote.get(slot)
        if item is None or self.source is None:
            return None
        folder = Path(job[0])
        shutil.rmtree(folder, ignore_errors=True)
        try:
            self.source.retrieve(item, folder)
        except (InputError, OSError, ValueError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            message = exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}"
            name = job[2] or f"input-{self.keys[slot][:10]}"
            return Outcome(name, False, message, key=self.keys[slot])
        return None

    def _done(self, slot: int, outcome: Outcome) -> None:
        if slot in self.remote:
            shutil.rmtree(self.cases[slot].path, ignore_errors=True)  # the fetched copy
        if outcome.result:
            outcome = self._stored(outcome)
        self.outcomes[slot] = outcome
        if outcome.key and (outcome.result or not outcome.ok):
            self.index.set(outcome.key, outcome.case_id)
        self.bar.update(outcome)
        self.writer.maybe_write(self.outcomes)

    def _stored(self, outcome: Outcome) -> Outcome:
        """Store a case's DICOM results on --to-dicomweb unless done before; a failure to
        store makes the case failed (and the next run tries again)."""
        if self.store is None or not outcome.result:
            return outcome
        folder = self.out_dir / outcome.case_id / "dicom"
        files = sorted(folder.glob("*.dcm"))
        if self.index.stored(outcome.case_id, self.store.label, files):
            return outcome
        if not files:
            error = "no DICOM results to store (the case was screened without DICOM output)"
            return replace(outcome, ok=False, error=_join(outcome.error, error))
        try:
            self.store.store(files)
        except InputError as exc:
            return replace(outcome, ok=False, error=_join(outcome.error, exc.message))
        self.index.set_stored(outcome.case_id, self.store.label, files)
        return outcome


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first else second


def is_complete_result(folder: Path, dicom: bool = False) -> bool:
    """A finished result: result.json of our format and every other file of the folder (and,
    with ``dicom``, its DICOM objects).

    Stricter than the existence of result.json: a folder whose report.html was deleted is
    screened again, not skipped as done; so is one screened without DICOM output when a
    DICOM output is asked for now.
    """
    from femurscreen.screening import FILES, is_complete

    if not (is_complete(folder) and all((folder / name).is_file() for name in FILES)):
        return False
    if not dicom:
        return True
    try:
        block = json.loads((folder / "result.json").read_text(encoding="utf-8")).get("dicom")
    except (OSError, ValueError):
        return False
    return isinstance(block, dict) and all(
        (folder / str(block.get(k, ""))).is_file() for k in ("seg", "sr", "report")
    )


def _finished_before(out_dir: Path, case_id: str, key: str) -> Outcome:
    """The outcome of a case a previous run finished (``ok`` only if a side was graded)."""
    from femurscreen.screening import graded_sides

    try:
        result = json.loads((out_dir / case_id / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Outcome(case_id, False, f"result.json unreadable: {exc}", skipped=True, key=key)
    if not graded_sides(result):
        return Outcome(
            case_id, False, not_graded_reason(result), skipped=True, key=key, result=True
        )
    return Outcome(case_id, True, skipped=True, key=key, result=True)


def input_key(path: Path) -> str:
    """A non-identifying key of an input as it is now: a hash of its path, size and mtime.

    It maps an input to its fingerprint id across runs (``batch-index.json``) without
    reading the CT again and without writing its name anywhere. A changed file gets a new key.
    """
    try:
        resolved = path.resolve()
        info = resolved.stat()
        stamp = f"{resolved}\0{info.st_size}\0{info.st_mtime_ns}"
    except OSError:
        stamp = f"{path}\0missing"
    return hashlib.blake2b(stamp.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


class _Index:
    """``OUT/batch-index.json``: input key -> case id, so a rerun knows finished cases; the DICOM
    series not screened (with why); which cases' DICOM results were stored on which server."""

    FILE = "batch-index.json"

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / self.FILE
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.entries = {str(k): str(v) for k, v in data.get("cases", {}).items()}
            self.uploads = {str(k): dict(v) for k, v in (data.get("stored") or {}).items()}
        except (OSError, ValueError, AttributeError, TypeError):
            self.entries, self.uploads = {}, {}
        self.series: list[dict] = []
        self.dirty = False

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def set(self, key: str, case_id: str) -> None:
        if self.entries.get(key) != case_id:
            self.entries[key] = case_id
            self.dirty = True
            self.save()

    def record_series(self, series: list[dict]) -> None:
        """The DICOM series of this run that are not screened (replaces the last run's)."""
        self.series = series
        self.dirty = True

    def stored(self, case_id: str, server: str, files: list[Path]) -> bool:
        """True when exactly these result files of the case were stored on ``server``."""
        return self.uploads.get(case_id, {}).get(server) == _files_stamp(files)

    def set_stored(self, case_id: str, server: str, files: list[Path]) -> None:
        self.uploads.setdefault(case_id, {})[server] = _files_stamp(files)
        self.dirty = True
        self.save()

    def save(self) -> None:
        if self.dirty:
            data = {
                "format": "femurscreen-batch-index",
                "cases": self.entries,
                "series_not_screened": self.series,
                "stored": self.uploads,
            }
            write_text(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
            self.dirty = False


def _files_stamp(files: list[Path]) -> str:
    return hashlib.blake2b("".join(input_key(f) for f in files).encode(), digest_size=8).hexdigest()


class _BatchLock:
    """``OUT/.femurscreen-batch.lock``: a second batch on the same folder stops with a clear error.

    Created atomically (O_EXCL). A lock left by a batch that was killed on this machine (its
    process is gone) is taken over with a warning; one from another machine is respected.
    """

    FILE = ".femurscreen-batch.lock"

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / self.FILE

    def __enter__(self) -> _BatchLock:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started_utc": _now()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and holder.get("host") == socket.gethostname():
                    pid = holder.get("pid")
                    if isinstance(pid, int) and not process_alive(pid):
                        log.warning(
                            "%s: removing the lock of a batch that ended (pid %s)", self.path, pid
                        )
                        self.path.unlink(missing_ok=True)
                        continue
                who = (
                    f"process {holder.get('pid')} on {holder.get('host')}, started "
                    f"{holder.get('started_utc')}"
                    if holder
                    else "an unknown process"
                )
                raise InputError(
                    f"another batch is already writing into this folder ({who})",
                    "wait until it has finished, or use another --out; if no batch is running "
                    f"any more, delete {self.path}",
                    self.path.parent,
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(owner, handle)
            return self
        raise InputError("cannot take the batch lock", "try again", self.path)

    def _holder(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def __exit__(self, *exc_info: object) -> None:
        self.path.unlink(missing_ok=True)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Done = Callable[[int, Outcome], None]


def _run_pool(workers: int, jobs: dict[int, tuple], done: Done) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # no forked torch/ITK thread pools
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_pool_worker, initargs=(threads,)
    ) as pool:
        futures = {pool.submit(run_case, *job): slot for slot, job in jobs.items()}
        for future in as_completed(futures):
            slot = futures[future]
            try:
                done(slot, future.result())
            except (BrokenProcessPool, Exception) as exc:  # the process died (memory, signal)
                done(slot, _lost(jobs[slot], exc))


def _run_dask(address: str, jobs: dict[int, tuple], done: Done) -> None:
    try:
        from dask.distributed import Client, as_completed
    except ImportError as exc:
        raise InputError(
            f"--scheduler needs dask.distributed, which is not installed ({exc})",
            "pip install 'femurscreen[dask]' or run without --scheduler",
        ) from None
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise InputError(
            f"cannot connect to the Dask scheduler at {address} ({exc})",
            "start it (dask scheduler / dask worker) or check the address",
        ) from None
    try:
        token = os.urandom(4).hex()
        futures = {
            client.submit(
                run_case, *job, key=f"femurscreen-{slot}-{job[6][:8]}-{token}", pure=False
            ): slot
            for slot, job in jobs.items()
        }
        for future in as_completed(futures):
            slot = futures[future]
            try:
                done(slot, future.result())
            except Exception as exc:  # the worker died or the task was lost
                done(slot, _lost(jobs[slot], exc))
    finally:
        client.close()


def _lost(job: tuple, exc: BaseException) -> Outcome:
    """A case whose process died before it could record anything: record it here."""
    ct_path, out_dir, case_id = job[:3]
    key = job[6] if len(job) > 6 else ""
    name = case_id or f"input-{key[:10] or 'unknown'}"
    message = f"the worker running this case failed: {type(exc).__name__}: {exc}"
    if not (len(job) > 5 and job[5]):
        message = scrub(message, ct_path)
    record = {"case_id": name, "error": message, "kind": type(exc).__name__}
    write_text(Path(out_dir) / f"{name}.error.json", json.dumps(record, indent=2) + "\n")
    return Outcome(name, False, message, key=key)


# --------------------------------------------------------------------------------------------
# Summary and progress


def case_rows(out_dir: Path, case_id: str, outcome: Outcome | None = None) -> list[dict]:
    """The summary rows of one case, from its files (so skipped cases count too).

    A case with a result but no graded side keeps its per-side rows (status implant,
    truncated...) with the reason in ``error``.
    """
    result_path = out_dir / case_id / "result.json"
    error = ""
    if outcome is not None and not outcome.ok and not outcome.result:
        error = outcome.error
    elif result_path.exists():
        try:
            result = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            error = f"result.json unreadable: {exc}"
        else:
            rows = summary_rows(case_id, result)
            if outcome is not None and not outcome.ok:
                for row in rows:
                    row["error"] = row["error"] or outcome.error
            return rows
    else:
        error_path = out_dir / f"{case_id}.error.json"
        try:
            error = json.loads(error_path.read_text(encoding="utf-8")).get("error", "")
        except (OSError, ValueError):
            error = "not screened"
    return [_empty_row(case_id, side, "error", error or "failed") for side in SIDES]


def _empty_row(case_id: str, side: str, status: str, error: str) -> dict:
    row: dict[str, Any] = {name: None for name in SUMMARY_COLUMNS}
    row.update(case_id=case_id, side=side, status=status, error=error, flags="", predicted="")
    row["graded"] = False
    return row


def _unscreened_row(item: SkippedSeries) -> dict:
    if item.failed:  # a study with nothing to screen: an error row, as a failed case has
        row = _empty_row(item.name, "", "error", item.reason)
    else:
        row = _empty_row(item.name, "", SKIPPED, "")
        row["reason"] = item.reason
    row["study"] = item.study
    return row


class _SummaryWriter:
    def __init__(self, out_dir: Path, cases: list[Case], unscreened: list[SkippedSeries]) -> None:
        self.out_dir = out_dir
        self.cases = cases
        self.unscreened = [_unscreened_row(s) for s in unscreened]
        self.last = 0.0
        self.rows: dict[int, list[dict]] = {}

    def maybe_write(self, outcomes: dict[int, Outcome]) -> None:
        if time.monotonic() - self.last >= _SUMMARY_EVERY_S:
            self.write(outcomes)

    def write(self, outcomes: dict[int, Outcome]) -> pd.DataFrame:
        rows = []
        for slot, case in enumerate(self.cases):
            outcome = outcomes.get(slot)
            if outcome is None:
                continue  # not finished yet
            if slot not in self.rows or not outcome.ok:
                self.rows[slot] = case_rows(self.out_dir, outcome.case_id, outcome)
                for row in self.rows[slot]:
                    row["study"] = case.study
            rows += self.rows[slot]
        rows += self.unscreened
        columns = list(dict.fromkeys([*SUMMARY_COLUMNS, *(k for r in rows for k in r)]))
        table = pd.DataFrame(rows, columns=columns)
        with atomic_path(self.out_dir / SUMMARY) as tmp:
            table.to_csv(tmp, index=False)
        self.last = time.monotonic()
        return table


class _Progress:
    """A one-line text progress bar on stderr (a line per case when stderr is not a terminal)."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total, self.stream = total, stream
        self.done = self.failed = self.skipped = 0
        self.started = time.monotonic()
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())

    def skip(self, count: int) -> None:
        """Cases finished by an earlier run: one line, not one per case."""
        self.done += count
        self.skipped += count
        if count and self.stream is not None:
            self.stream.write(f"{count} of {self.total} cases already done: skipped\n")
            self.stream.flush()

    def update(self, outcome: Outcome) -> None:
        self.done += 1
        self.failed += 0 if outcome.ok else 1
        self.skipped += 1 if outcome.skipped else 0
        if self.stream is None:
            return
        width = 28
        filled = int(width * self.done / max(self.total, 1))
        elapsed = time.monotonic() - self.started
        ran = self.done - self.skipped
        eta = ""
        if ran > 0 and self.done < self.total:
            eta = f" eta {_clock(elapsed / ran * (self.total - self.done))}"
        if outcome.ok:
            what = "skipped (done before)" if outcome.skipped else "ok"
        elif outcome.result:
            what = "NOT GRADED" + (" (done before)" if outcome.skipped else "")
        else:
            what = "FAILED"
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} cases"
            f" ({self.failed} failed, {self.skipped} skipped) {_clock(elapsed)}{eta}"
        )
        if self.tty:
            self.stream.write(f"\r\033[K{line}  {outcome.case_id}: {what}")
        else:
            self.stream.write(f"{line}  {outcome.case_id}: {what}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.tty and self.done:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
