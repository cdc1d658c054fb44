"""Cohort review for annotators: go through a cohort's CTs, correct the femur masks, sign them off.

Everything here is Qt-free, so the review panel (``FemurScreenReview.py``), Slicer's Python
console and pytest on ``slicer-core`` run the same code.

Files (all under the review folder, ``<cohort folder>/review`` unless another is chosen; the
source cohort is never modified):

- ``<case_id>/femur.nii.gz``: the reference mask, the layout ``femurscreen phantom`` writes
  (uint8, 0 background, 1 = patient's left femur, 2 = right), on the CT's exact grid. An
  existing reference is replaced only with ``overwrite=True`` (the panel asks first).
- ``review_log.csv``: one appended line per decision (case, status, reviewer, UTC ISO time,
  sha256 of the mask file, whether the segments were edited, comment). The latest line of a case
  is its decision; earlier lines stay as the history. It is what makes a review resumable.
- ``cohort.csv``: the accepted and corrected cases (rejected ones left out) with ``case_id, ct,
  mask`` (paths relative to the review folder) and every other column of the source cohort
  (``t_score``, ``bone_status``, ``synthetic``...), so that ``femurscreen train-seg`` (also with
  ``--init-from``) and ``femurscreen train-classifier`` accept it as it is. Rewritten
  atomically after every decision.

A cohort is a CSV with a ``ct`` column and optional ``case_id`` and ``mask`` columns (paths
relative to the CSV, as ``femurscreen phantom`` writes), a folder holding such a
``cohort.csv``, or a folder of CTs (found as ``femurscreen batch`` finds them; a ``femur.nii.gz``
beside a case's ``ct.*`` is taken as its existing mask).
"""

from __future__ import annotations

import csv
import datetime as dt
import getpass
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from femurscreen.atomic import atomic_path
from femurscreen.errors import FemurScreenError, InputError, NoFemurError
from femurscreen.io.labelio import same_grid
from femurscreen.labels import SIDES
from femurscreen.status import Status

from FemurScreenLib import segments as seg_io
from FemurScreenLib.volume_convert import image_to_volume

COHORT_NAME = "cohort.csv"
REVIEW_DIR_NAME = "review"
LOG_NAME = "review_log.csv"
MASK_NAME = "femur.nii.gz"  # as femurscreen.phantom.cohort_writer.MASK_NAME
STATUSES: tuple[str, ...] = ("accepted", "corrected", "rejected")
KEPT_STATUSES: tuple[str, ...] = ("accepted", "corrected")  # what cohort.csv holds
LOG_COLUMNS: tuple[str, ...] = (
    "case_id",
    "status",
    "reviewer",
    "time",
    "mask",
    "mask_sha256",
    "edited",
    "source",
    "comment",
)
REVIEW_COLUMNS: tuple[str, ...] = ("review_status", "mask_sha256")  # added to cohort.csv
# Bone window for the femur (HU): cortex, trabecular bone and the joint space all visible.
WINDOW, LEVEL = 1200.0, 300.0
EDITOR_TAG = "FemurScreenReviewSegmentEditor"  # the review panel's own Segment Editor node


class ReferenceExistsError(FemurScreenError):
    """Saving would replace an earlier reference mask or decision; needs ``overwrite=True``."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (what the review log records for each mask)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def now_iso() -> str:
    """The current time in UTC, ISO 8601 to the second (``2026-12-02T17:05:00+00:00``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def segment_editor_node(scene):
    """The review panel's Segment Editor parameter node (apart from the Segment Editor module's
    and the FemurScreen panel's, so the editors do not fight over effects and selections)."""
    return seg_io.singleton_node(scene, "vtkMRMLSegmentEditorNode", EDITOR_TAG)


def default_reviewer() -> str:
    """The operating-system user name (the panel lets the reviewer type another)."""
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return "unknown"


@dataclass(frozen=True)
class ReviewCase:
    """One case of the cohort: its CT, its existing mask (if any) and its source row."""

    case_id: str
    ct: Path  # absolute
    mask: Path | None  # the cohort's own mask, absolute; None when it has none
    row: dict[str, str] = field(default_factory=dict)  # the source cohort's columns


@dataclass(frozen=True)
class ReviewEntry:
    """One decision, as one line of ``review_log.csv``."""

    case_id: str
    status: str
    reviewer: str
    time: str
    mask: str  # relative to the review folder; "" for a rejected case
    mask_sha256: str
    edited: bool
    source: str  # where the reviewed segments came from (cohort mask, engine, reference)
    comment: str = ""

    def as_row(self) -> dict[str, str]:
        return {
            "case_id": self.case_id,
            "status": self.status,
            "reviewer": self.reviewer,
            "time": self.time,
            "mask": self.mask,
            "mask_sha256": self.mask_sha256,
            "edited": "true" if self.edited else "false",
            "source": self.source,
            "comment": self.comment,
        }


# ------------------------------------------------------------------------------ the cohort


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (POSIX separators), or absolute on another drive."""
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # Windows: a different drive has no relative path
        return path.as_posix()


def _resolve(text: str, base: Path) -> Path:
    path = Path(text.strip()).expanduser()
    return path if path.is_absolute() else base / path


def _case_id_from_path(path: Path) -> str:
    from femurscreen.batch import case_name, safe_case_id

    name = case_name(path)
    if name.lower() == "ct":  # a phantom case folder: case_0003/ct.nii.gz
        name = safe_case_id(path.parent.name)
    return name


def read_cohort_csv(path: Path) -> tuple[list[ReviewCase], list[str]]:
    """The cases of a cohort CSV and its column names, read and checked by the core's cohort
    reader (``ct`` required; ``case_id`` optional: a case without one is named after its CT);
    ids are made safe and must stay unique regardless of case."""
    from femurscreen.batch import safe_case_id
    from femurscreen.io.cohort_csv import read_cohort_csv as read_cohort_table

    table = read_cohort_table(path, ("ct",), case_id_required=False)
    base = table.folder
    cases: list[ReviewCase] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(table.rows, start=2):
        if not row.get("ct"):
            raise InputError(f"line {number} has an empty 'ct' value", "fill in a CT path", path)
        ct = _resolve(row["ct"], base)
        case_id = safe_case_id(row["case_id"]) if row.get("case_id") else _case_id_from_path(ct)
        if case_id.lower() in seen:
            raise InputError(
                f"case_id '{case_id}' appears on lines {seen[case_id.lower()]} and {number}",
                "give every row its own case_id",
                path,
            )
        seen[case_id.lower()] = number
        mask = _resolve(row["mask"], base) if row.get("mask") else None
        cases.append(ReviewCase(case_id, ct, mask, row))
    return cases, list(table.columns)


def read_cohort_folder(folder: Path, review_dir: Path) -> list[ReviewCase]:
    """The CTs of a folder (as ``femurscreen batch`` finds them), with masks where the phantom
    layout has one (``femur.nii.gz`` beside ``ct.*`` in a case folder)."""
    from femurscreen.batch import discover_cases

    cases = []
    for case in discover_cases(folder, out_dir=review_dir):
        mask = case.path.parent / MASK_NAME if case.path.is_file() else None
        if mask is not None and (mask == case.path or not mask.is_file()):
            mask = None
        row = {"case_id": case.case_id, "ct": _relative(case.path, folder)}
        cases.append(ReviewCase(case.case_id, case.path, mask, row))
    return cases


class ReviewCohort:
    """A cohort under review: its cases, the decisions so far and the files they produce.

    Knows nothing of MRML: it takes label images and writes files, so it is also usable from
    scripts that correct masks elsewhere.
    """

    def __init__(
        self, source: Path, cases: list[ReviewCase], columns: list[str], review_dir: Path
    ) -> None:
        self.source = source
        self.cases = cases
        self.columns = columns
        self.review_dir = review_dir
        self._index = {c.case_id: i for i, c in enumerate(cases)}

    @classmethod
    def open(cls, source: str | Path, review_dir: str | Path | None = None) -> ReviewCohort:
        """Open a cohort CSV, a folder with ``cohort.csv``, or a folder of CTs."""
        source = Path(source).expanduser()
        if not source.exists():
            raise InputError(
                "cohort not found", "choose a cohort CSV or a folder of CTs", path=source
            )
        if source.is_dir() and (source / COHORT_NAME).is_file():
            source = source / COHORT_NAME
        base = source.parent if source.is_file() else source
        review = Path(review_dir).expanduser() if review_dir else base / REVIEW_DIR_NAME
        if source.is_file():
            if source.suffix.lower() != ".csv":
                raise InputError(
                    "a cohort is a CSV file or a folder, not a single image",
                    "choose the cohort CSV or the folder that holds the CTs",
                    path=source,
                )
            cases, columns = read_cohort_csv(source)
        else:
            cases = read_cohort_folder(source, review)
            columns = ["case_id", "ct"]
        if review.resolve() == base.resolve():
            raise InputError(
                "the review folder is the cohort's own folder",
                "choose a separate review folder (the default is a 'review' folder inside it)",
                path=review,
            )
        return cls(source, cases, columns, review)

    # -------------------------------------------------------------- paths and decisions

    def __len__(self) -> int:
        return len(self.cases)

    def index_of(self, case_id: str) -> int:
        if case_id not in self._index:
            raise InputError(f"no case '{case_id}' in this cohort", path=self.source)
        return self._index[case_id]

    @property
    def log_path(self) -> Path:
        return self.review_dir / LOG_NAME

    @property
    def cohort_csv(self) -> Path:
        return self.review_dir / COHORT_NAME

    def reference_path(self, case: ReviewCase) -> Path:
        return self.review_dir / case.case_id / MASK_NAME

    def history(self) -> list[ReviewEntry]:
        """Every logged decision, oldest first (a line cut by a crash is ignored)."""
        if not self.log_path.is_file():
            return []
        text = self.log_path.read_text(encoding="utf-8")
        entries = []
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("case_id") not in self._index or row.get("status") not in STATUSES:
                continue
            if not row.get("time"):
                continue
            entries.append(
                ReviewEntry(
                    case_id=row["case_id"],
                    status=row["status"],
                    reviewer=row.get("reviewer") or "",
                    time=row["time"],
                    mask=row.get("mask") or "",
                    mask_sha256=row.get("mask_sha256") or "",
                    edited=(row.get("edited") or "").lower() == "true",
                    source=row.get("source") or "",
                    comment=row.get("comment") or "",
                )
            )
        return entries

    def decisions(self) -> dict[str, ReviewEntry]:
        """The latest decision per case."""
        return {e.case_id: e for e in self.history()}

    def reviewed_count(self) -> int:
        return len(self.decisions())

    def progress_text(self) -> str:
        """What the panel shows, e.g. '12 of 40 reviewed'."""
        return f"{self.reviewed_count()} of {len(self)} reviewed"

    def first_unreviewed(self) -> int | None:
        """Index of the first case without a decision (None when all are reviewed)."""
        done = self.decisions()
        for i, case in enumerate(self.cases):
            if case.case_id not in done:
                return i
        return None

    def reference_ok(self, case: ReviewCase, entry: ReviewEntry | None = None) -> bool | None:
        """Whether the reference file still has the hash the log recorded (None: no file)."""
        entry = entry or self.decisions().get(case.case_id)
        path = self.reference_path(case)
        if entry is None or not entry.mask_sha256 or not path.is_file():
            return None
        return sha256_file(path) == entry.mask_sha256

    # -------------------------------------------------------------- saving

    def save(
        self,
        case: ReviewCase | str,
        status: str,
        labels: sitk.Image | None,
        *,
        reviewer: str,
        comment: str = "",
        edited: bool = False,
        source: str = "",
        overwrite: bool = False,
    ) -> ReviewEntry:
        """Record a decision: write the reference mask (not for a rejected case), append the
        log line, rewrite ``cohort.csv``. Refuses to replace an earlier reference or decision
        unless ``overwrite``."""
        case = self.cases[self.index_of(case)] if isinstance(case, str) else case
        status = str(status).strip().lower()
        if status not in STATUSES:
            raise InputError(f"unknown review status '{status}'", f"use one of {STATUSES}")
        reviewer = " ".join(str(reviewer or "").split())
        if not reviewer:
            raise InputError("no reviewer name", "type your name or initials in 'Reviewer'")
        target = self.reference_path(case)
        earlier = self.decisions().get(case.case_id)
        if not overwrite and (earlier is not None or target.exists()):
            what = (
                f"{earlier.status} by {earlier.reviewer} at {earlier.time}"
                if earlier
                else f"a reference mask exists at {target}"
            )
            raise ReferenceExistsError(
                f"case '{case.case_id}' was already reviewed ({what})",
                "confirm that the earlier reference is to be replaced (overwrite)",
            )
        mask_rel, digest = "", ""
        if status != "rejected":
            if labels is None:
                raise InputError(f"no mask given for case '{case.case_id}'")
            labels = _checked_labels(labels, case)
            with atomic_path(target) as tmp:
                sitk.WriteImage(labels, str(tmp), True)
            mask_rel = _relative(target, self.review_dir)
            digest = sha256_file(target)
        entry = ReviewEntry(
            case_id=case.case_id,
            status=status,
            reviewer=reviewer,
            time=now_iso(),
            mask=mask_rel,
            mask_sha256=digest,
            edited=bool(edited),
            source=source,
            comment=" ".join(str(comment or "").split()),
        )
        self._append_log(entry)
        self.write_cohort_csv()
        return entry

    def _append_log(self, entry: ReviewEntry) -> None:
        self.review_dir.mkdir(parents=True, exist_ok=True)
        new = not self.log_path.is_file() or self.log_path.stat().st_size == 0
        with self.log_path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(entry.as_row())
            handle.flush()
            os.fsync(handle.fileno())

    def write_cohort_csv(self) -> Path:
        """The reviewed cohort: accepted and corrected cases, source columns kept."""
        decisions = self.decisions()
        extra = [c for c in self.columns if c not in ("case_id", "ct", "mask", *REVIEW_COLUMNS)]
        fieldnames = ["case_id", "ct", "mask", *extra, *REVIEW_COLUMNS]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
        writer.writeheader()
        for case in self.cases:
            entry = decisions.get(case.case_id)
            if entry is None or entry.status not in KEPT_STATUSES:
                continue
            row = {k: case.row.get(k, "") for k in extra}
            row.update(
                case_id=case.case_id,
                ct=_relative(case.ct.resolve(), self.review_dir.resolve()),
                mask=entry.mask,
                review_status=entry.status,
                mask_sha256=entry.mask_sha256,
            )
            writer.writerow(row)
        self.review_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.cohort_csv) as tmp:
            tmp.write_text(buffer.getvalue(), encoding="utf-8")
        return self.cohort_csv


def _checked_labels(labels: sitk.Image, case: ReviewCase) -> sitk.Image:
    """uint8 0/1/2 with at least one femur voxel."""
    array = sitk.GetArrayViewFromImage(labels)
    values = set(np.unique(array).tolist())
    if not values <= {0, *SIDES.values()}:
        raise InputError(
            f"the mask of case '{case.case_id}' has values {sorted(values)}, not 0/1/2",
            "use 1 for the patient's left femur and 2 for the right one",
        )
    if values <= {0}:
        raise InputError(
            f"the mask of case '{case.case_id}' has no femur voxels",
            "paint the femurs, or mark the case rejected",
        )
    if case.ct.is_file():  # a DICOM folder's grid is the one read_ct gave the session
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(case.ct))
        reader.ReadImageInformation()
        if reader.GetDimension() == 3:  # (a 4-D file with one time point is read as 3-D)
            header = sitk.Image([1, 1, 1], sitk.sitkUInt8)
            header.SetOrigin(reader.GetOrigin())
            header.SetSpacing(reader.GetSpacing())
            header.SetDirection(reader.GetDirection())
            if tuple(reader.GetSize()) != tuple(labels.GetSize()) or not same_grid(
                _one_voxel(labels), header
            ):
                raise InputError(
                    f"the mask of case '{case.case_id}' is not on the grid of its CT",
                    "give a label image with the CT's size, origin, spacing and direction",
                    path=case.ct,
                )
    return sitk.Cast(labels, sitk.sitkUInt8)


def _one_voxel(image: sitk.Image) -> sitk.Image:
    """A 1-voxel image with ``image``'s origin, spacing and direction (for grid checks)."""
    out = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    out.SetOrigin(image.GetOrigin())
    out.SetSpacing(image.GetSpacing())
    out.SetDirection(image.GetDirection())
    return out


# ------------------------------------------------------------------------------ MRML session


@dataclass
class LoadedCase:
    """The case on screen: its nodes, where its segments came from, and the CT's grid."""

    index: int
    case: ReviewCase
    volume: object
    segmentation: object
    grid: sitk.Image  # uint8 image carrying the CT's exact geometry (size, origin, ...)
    source: str  # "reference", "cohort mask" or "<engine> segmentation"
    message: str = ""  # what the reviewer should know (no femur found, reference changed...)
    decision: ReviewEntry | None = None


class ReviewSession:
    """Step through a :class:`ReviewCohort` in a MRML scene: load, edit, decide.

    Only the current case's volume and segmentation are in the scene; moving on removes them.
    """

    def __init__(
        self,
        cohort: ReviewCohort,
        scene=None,
        *,
        engine: str = "classical",
        reviewer: str | None = None,
        progress: Callable[..., None] | None = None,
    ) -> None:
        from FemurScreenLib.logic import FemurScreenLogic

        self.cohort = cohort
        self.engine = engine
        self.reviewer = reviewer or default_reviewer()
        self.progress = progress
        self.logic = FemurScreenLogic(scene=scene)
        self.current: LoadedCase | None = None

    @classmethod
    def open(cls, source: str | Path, scene=None, review_dir=None, **kwargs) -> ReviewSession:
        """Open a cohort and load the first case without a decision (or the first case)."""
        session = cls(ReviewCohort.open(source, review_dir), scene, **kwargs)
        session.load(session.resume_index())
        return session

    @property
    def scene(self):
        return self.logic.scene

    def resume_index(self) -> int:
        first = self.cohort.first_unreviewed()
        return 0 if first is None else first

    def progress_text(self) -> str:
        return self.cohort.progress_text()

    # -------------------------------------------------------------- navigation

    def load(self, index: int, *, fresh: bool = False) -> LoadedCase:
        """Show case ``index``: its reference (if reviewed), else its mask, else a new
        segmentation; ``fresh`` always segments anew."""
        from femurscreen.io.ctio import read_ct
        from femurscreen.io.labelio import read_labels

        if not 0 <= index < len(self.cohort):
            raise InputError(f"case number {index + 1} is outside 1..{len(self.cohort)}")
        case = self.cohort.cases[index]
        ct = read_ct(case.ct)
        self.unload()
        volume = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", case.case_id)
        try:
            image_to_volume(ct, volume)
            volume.CreateDefaultDisplayNodes()
            display = volume.GetDisplayNode()
            if display is not None:
                display.AutoWindowLevelOff()
                display.SetWindowLevel(WINDOW, LEVEL)
            grid = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
            grid.CopyInformation(ct)
            decision = self.cohort.decisions().get(case.case_id)
            reference = self.cohort.reference_path(case)
            message = ""
            info: dict = {"sides": {}}
            if not fresh and decision is not None and reference.is_file():
                labels = read_labels(reference, reference=ct)
                source = "reference"
                if self.cohort.reference_ok(case, decision) is False:
                    message = (
                        f"the reference mask was changed after it was logged ({reference}); "
                        "check it and save the case again"
                    )
            elif not fresh and case.mask is not None:
                labels = read_labels(case.mask, reference=ct)
                source = "cohort mask"
            else:
                labels, info, message = self._segment(ct)
                source = f"{info.get('engine', self.engine)} segmentation"
            info["engine"] = info.get("engine") or source
            segmentation = self.logic.new_segmentation_node(volume)
            self.logic.apply_labels(
                volume, sitk.GetArrayFromImage(labels), tuple(SIDES), info, segmentation
            )
        except Exception:
            self._remove(volume)
            raise
        self.current = LoadedCase(
            index, case, volume, segmentation, grid, source, message, decision
        )
        return self.current

    def _segment(self, ct: sitk.Image) -> tuple[sitk.Image, dict, str]:
        from femurscreen.segmentation import segment

        try:
            result = segment(ct, engine=self.engine, progress=self.progress)
        except NoFemurError as exc:
            empty = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
            empty.CopyInformation(ct)
            return empty, {"engine": self.engine, "sides": {}}, exc.message
        info = {
            "engine": result.engine,
            "sides": {s: r.to_dict() for s, r in result.sides.items()},
            "model": dict(result.model or {}),
        }
        flagged = [f"{s}: {r.status}" for s, r in result.sides.items() if r.status != Status.OK]
        return result.labels, info, ("; ".join(flagged) if flagged else "")

    def next(self) -> LoadedCase | None:
        """The following case (None at the end; the current one stays)."""
        if self.current is None:
            return self.load(self.resume_index())
        if self.current.index + 1 >= len(self.cohort):
            return None
        return self.load(self.current.index + 1)

    def previous(self) -> LoadedCase | None:
        """The preceding case (None at the start; the current one stays)."""
        if self.current is None or self.current.index == 0:
            return None
        return self.load(self.current.index - 1)

    def next_unreviewed(self) -> LoadedCase | None:
        """The first case without a decision after the current one, wrapping round."""
        done = self.cohort.decisions()
        start = -1 if self.current is None else self.current.index
        n = len(self.cohort)
        for step in range(1, n + 1):
            i = (start + step) % n
            if self.cohort.cases[i].case_id not in done:
                return self.load(i)
        return None

    def resegment(self) -> LoadedCase:
        """Replace the current case's segments with a new segmentation."""
        if self.current is None:
            raise InputError("no case is loaded", "open a cohort first")
        return self.load(self.current.index, fresh=True)

    # -------------------------------------------------------------- decisions

    def is_edited(self) -> bool:
        """Whether the segments differ from what was loaded."""
        return self.current is not None and self.logic.is_edited(self.current.segmentation)

    def current_labels(self) -> tuple[sitk.Image, int]:
        """The segments as a 0/1/2 label image on the CT's grid, and the voxels both sides
        claimed (given to neither)."""
        if self.current is None:
            raise InputError("no case is loaded", "open a cohort first")
        masks = seg_io.read_labels(self.current.segmentation, self.current.volume)
        image = sitk.GetImageFromArray(masks.labels.astype(np.uint8))
        image.CopyInformation(self.current.grid)
        return image, masks.overlap_voxels

    def mark(self, status: str, comment: str = "", *, overwrite: bool = False) -> ReviewEntry:
        """Save the current case's decision (and its reference mask unless rejected)."""
        if self.current is None:
            raise InputError("no case is loaded", "open a cohort first")
        labels = None if status == "rejected" else self.current_labels()[0]
        entry = self.cohort.save(
            self.current.case,
            status,
            labels,
            reviewer=self.reviewer,
            comment=comment,
            edited=self.is_edited(),
            source=self.current.source,
            overwrite=overwrite,
        )
        if status != "rejected":  # what is on screen is now the reference
            self.logic.mark_unedited(self.current.segmentation, self.current.volume)
            self.current.source = "reference"
        self.current.decision = entry
        return entry

    # -------------------------------------------------------------- clean-up

    def _remove(self, node) -> None:
        if node is None or node.GetScene() is None:
            return
        scene = node.GetScene()
        owned = []
        if hasattr(node, "GetNumberOfDisplayNodes"):
            owned += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if hasattr(node, "GetStorageNode"):
            owned.append(node.GetStorageNode())
        scene.RemoveNode(node)
        for other in owned:
            if other is not None and other.GetScene() is not None:
                scene.RemoveNode(other)

    def unload(self) -> None:
        """Remove the current case's nodes (and the tables Recompute may have added)."""
        if self.current is None:
            return
        segmentation = self.current.segmentation
        if segmentation is not None and segmentation.GetScene() is not None:
            from FemurScreenLib.logic import REF_CHART, REF_FEATURES, REF_PROBABILITIES, REF_RESULTS

            for role in (REF_FEATURES, REF_RESULTS, REF_PROBABILITIES, REF_CHART):
                self._remove(segmentation.GetNodeReference(role))
        self._remove(segmentation)
        self._remove(self.current.volume)
        self.current = None
