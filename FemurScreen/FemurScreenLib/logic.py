"""FemurScreen's Slicer logic: every computation the module offers, without Qt.

The widget only wires buttons to these methods, so everything here runs the same in the Slicer
GUI, in Slicer's Python console, in the module's self-test and in pytest on ``slicer-core``.

- :meth:`FemurScreenLogic.process` segments a volume in this process (scripts, tests);
  :meth:`~FemurScreenLogic.start_segmentation` / :meth:`~FemurScreenLogic.finish_segmentation`
  do the same in a child process (``python -m femurscreen segment``), which the GUI uses so that
  Slicer stays responsive and the run can be cancelled.
- :meth:`FemurScreenLogic.compute` reads the (possibly edited) segments back on the CT grid,
  and grades them through the core's one grading path (:func:`femurscreen.grading.grade`, the
  same call ``femurscreen screen`` makes), then fills tables and a bar chart;
  :meth:`~FemurScreenLogic.start_grading` / :meth:`~FemurScreenLogic.finish_grading` do the
  same in a child process (``python -m femurscreen.grading``), which the GUI uses.
- :class:`PanelState` is what the panel shows (running jobs, the current result); its methods
  never leave it half-updated after an error, so the widget only renders it.
- ``export_*`` write the segmentation (``.seg.nrrd``), a CSV, the ``result.json`` and the HTML
  report; :meth:`~FemurScreenLogic.export_dicom` writes DICOM SEG + SR (and the report as a
  secondary capture) into the study of a CT loaded from Slicer's DICOM database.

Results follow the core's rules (:mod:`femurscreen.screening`): a side whose segmentation found
a metal implant or a cut by the scan edge is not graded, and a demo model is labelled as such.
Beside the probabilities each side shows the calibrated density's T-scores and WHO class
(``result["bmd"]``), labelled a CT-derived estimate, not a DXA, with its uncertainty, and the
segmentation quality signal (Dice of the engine's mask with the other engine's, computed when
segmenting unless ``quality=False``; ``review_segmentation`` when low). A side whose mask a
person changed (a digest of each side's mask as written is kept in the node's info) is theirs:
its quality is None with method ``edited``, not recomputed; the other side keeps its number.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
from femurscreen.errors import FemurScreenError, InputError
from femurscreen.grading import (
    bmd_numbers,
    flag_help,
    quality_numbers,
    quality_words,
    summary_rows,
)
from femurscreen.labels import CLASSES, SIDES
from femurscreen.status import Status
from femurscreen.values import finite_number, json_safe

from FemurScreenLib import segments as seg_io
from FemurScreenLib import tables
from FemurScreenLib.background import BackgroundProcess, python_executable
from FemurScreenLib.volume_convert import volume_to_image

log = logging.getLogger(__name__)

MODULE_NAME = "FemurScreen"
ALL_SIDES: tuple[str, ...] = ("left", "right")
# The shipped classifier, under Resources/ (femurscreen.classifier.predict.DEMO_MODEL).
DEMO_MODEL: tuple[str, ...] = ("Models", "classifier-demo")
# Segmentation engines offered in the GUI (femurscreen.segmentation.ENGINES; "default" picks).
ENGINE_CHOICES: tuple[str, ...] = ("default", "vbnet", "classical")
CORE_DIR = Path(__file__).resolve().parents[1]  # the folder that holds the femurscreen package

# Node attribute (JSON) with what the segmentation run reported: engine and per-side status.
SEGMENTATION_INFO_ATTRIBUTE = "FemurScreen.SegmentationInfo"
MASK_HASH_KEY = "mask_sha256"  # per side in the info: the mask its quality was computed for
# References from the segmentation node to its outputs, saved with the scene.
REF_FEATURES = "FemurScreenFeatures"
REF_RESULTS = "FemurScreenResults"
REF_PROBABILITIES = "FemurScreenProbabilities"
REF_CHART = "FemurScreenChart"
# Set by Slicer's DICOM scalar volume plugin: the SOP Instance UIDs of the volume's slices
# (DICOMScalarVolumePlugin.load); "Unknown" for a file without one.
DICOM_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"


class MissingPackagesError(FemurScreenError):
    """Python packages a step needs are not installed; ``needed`` lists them."""

    def __init__(self, needed: Sequence[Any]) -> None:
        self.needed = list(needed)
        names = ", ".join(str(m.requirement) for m in self.needed)
        super().__init__(
            f"Python packages are missing: {names}",
            "press Segment or Recompute in the FemurScreen panel to install them",
        )


@dataclass
class SideInfo:
    """What the segmentation said about one side (duck-types the core's ``SideResult``)."""

    status: str = Status.OK
    flags: list[str] = field(default_factory=list)
    volume_ml: float | None = None
    quality: float | None = None  # segmentation quality signal (None: not computed)
    quality_method: str | None = None

    def as_dict(self) -> dict:
        return {
            "status": self.status,
            "flags": list(self.flags),
            "volume_ml": self.volume_ml,
            "quality": self.quality,
            "quality_method": self.quality_method,
        }

    @classmethod
    def of(cls, side: Any) -> SideInfo:
        if side is None:
            return cls(status=Status.NOT_FOUND)
        if isinstance(side, dict):
            return cls(
                status=str(side.get("status", Status.OK)),
                flags=[str(f) for f in side.get("flags") or []],
                volume_ml=finite_number(side.get("volume_ml")),
                **_quality_of(side),
            )
        return cls(
            status=str(side.status),
            flags=[str(f) for f in side.flags],
            volume_ml=finite_number(side.volume_ml),
            **_quality_of(side),  # rounded as result.json has it, in-process or not
        )

    def edited(self) -> None:
        """The mask is a person's now: no engine's quality applies to it (and no flag that
        asked to review the engine's mask)."""
        from femurscreen.segmentation.pipeline import QUALITY_EDITED

        self.quality, self.quality_method = None, QUALITY_EDITED
        self.flags = [f for f in self.flags if f != "review_segmentation"]


def _side_hash(labels: np.ndarray, side: str) -> str:
    """A digest of one side's mask (its voxels of the 0/1/2 label array)."""
    return seg_io.labels_hash(labels == seg_io.SEGMENTS[side].label)


def _quality_of(side: Any) -> dict[str, Any]:
    """A side's segmentation quality and its method (``SideInfo`` field names), as
    :func:`femurscreen.grading.quality_numbers` gives them for result.json and the tables."""
    numbers = quality_numbers(side)
    return {"quality": numbers["seg_quality"], "quality_method": numbers["seg_quality_method"]}


@dataclass
class ScreeningResult:
    """Everything one compute produced: the core-format result and the MRML nodes showing it."""

    result: dict  # same schema as femurscreen.screening.screen's result.json
    rows: list[dict]  # feature rows (one per graded side)
    ct: sitk.Image
    labels: sitk.Image
    features_table: Any
    results_table: Any
    probabilities_table: Any
    chart: Any
    overlap_voxels: int = 0
    seconds: float = 0.0

    @property
    def demo(self) -> bool:
        return bool(self.result.get("demo"))

    def side_rows(self) -> list[dict]:
        """One summary row per side (the columns of the batch summary CSV, density included)."""
        return summary_rows(self.result.get("case", ""), self.result)


class ChildJob:
    """Work running in a child process; poll it from a timer, then finish it."""

    PROGRESS = re.compile(r"(\d+(?:\.\d+)?)\s*%")
    WHAT = "process"

    def __init__(self, temp_dir: Path, process: BackgroundProcess) -> None:
        self.temp_dir = temp_dir
        self.process = process
        self.progress = 0.0  # 0..1 when the child reports percentages
        self.message = ""

    def poll(self) -> list[str]:
        """New output lines; updates ``progress`` and ``message`` from the child's stderr."""
        texts = []
        for line in self.process.poll():
            if line.stream == "stderr" and line.text.strip():
                self.message = line.text.strip()
                match = self.PROGRESS.search(line.text)
                if match:
                    self.progress = min(1.0, float(match.group(1)) / 100.0)
            texts.append(line.text)
        return texts

    @property
    def finished(self) -> bool:
        return self.process.finished

    @property
    def cancelled(self) -> bool:
        return self.process.cancelled

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.process.started_at

    def error_message(self) -> str:
        """The child's own error line (our CLI prints 'femurscreen VERB: error: ...')."""
        lines = [s for s in self.process.stderr.splitlines() if s.strip()]
        for text in reversed(lines):
            if ": error:" in text:
                return text.split(": error:", 1)[1].strip()
        tail = "\n".join(lines[-5:])
        return f"{self.WHAT} process exited with code {self.process.returncode}" + (
            f":\n{tail}" if tail else ""
        )

    def wait(self, timeout: float | None = None) -> int:
        """Block until the child is done, reading its progress (scripts and tests; the GUI
        polls from a timer instead)."""
        return self.process.wait(timeout, poll=self.poll)

    def cancel(self) -> None:
        self.process.cancel()

    def cleanup(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class SegmentationJob(ChildJob):
    """A segmentation running in a child process (``python -m femurscreen segment``)."""

    WHAT = "segmentation"

    def __init__(
        self,
        volume_node_id: str,
        engine: str,
        sides: tuple[str, ...],
        temp_dir: Path,
        process: BackgroundProcess,
    ) -> None:
        super().__init__(temp_dir, process)
        self.volume_node_id = volume_node_id
        self.engine = engine
        self.sides = sides
        self.input_path = temp_dir / "input.nrrd"
        self.output_path = temp_dir / "labels.nrrd"

    @property
    def succeeded(self) -> bool:
        return self.process.returncode == 0 and self.output_path.exists()


@dataclass
class _Prepared:
    """The segments of a segmentation node read back on the CT grid, ready to grade."""

    ct: sitk.Image
    labels: sitk.Image
    masks: Any  # segments.SideMasks
    sides: dict[str, SideInfo | None]
    info: dict
    case: str
    edited: bool


class GradingJob(ChildJob):
    """Features and classification running in a child process (``python -m
    femurscreen.grading``); the GUI stays responsive and the run can be cancelled."""

    WHAT = "grading"

    def __init__(
        self,
        volume_node_id: str,
        segmentation_node_id: str,
        prepared: _Prepared,
        temp_dir: Path,
        process: BackgroundProcess,
    ) -> None:
        super().__init__(temp_dir, process)
        self.volume_node_id = volume_node_id
        self.segmentation_node_id = segmentation_node_id
        self.prepared = prepared
        self.output_path = temp_dir / "grading.json"

    @property
    def succeeded(self) -> bool:
        return self.process.returncode == 0 and self.output_path.exists()


class FemurScreenLogic:
    """Segment, measure and classify proximal femurs of a CT volume in a MRML scene."""

    def __init__(self, scene=None, model_dir: str | Path | None = None) -> None:
        self._scene = scene
        self.model_dir = model_dir
        self._model = None
        self._model_key: str | None = None
        # requirement sets found installed: packages do not vanish while Slicer runs, so the
        # check after every edit (auto-recompute) reads no metadata and offers nothing again
        self._present: set[tuple[str, ...]] = set()

    @property
    def scene(self):
        return self._scene if self._scene is not None else slicer.mrmlScene

    # ------------------------------------------------------------------ parameter node

    def getParameterNode(self):
        """The module's singleton ``vtkMRMLScriptedModuleNode`` (as ScriptedLoadableModuleLogic
        makes it; here without Qt so that the Logic stays importable everywhere)."""
        node = self.scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = self.scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(self.scene.GenerateUniqueName(MODULE_NAME))
            node.SetAttribute("ModuleName", MODULE_NAME)
            node = self.scene.AddNode(node)
        elif node.GetAttribute("ModuleName") != MODULE_NAME:
            node.SetAttribute("ModuleName", MODULE_NAME)
        return node

    # ------------------------------------------------------------------ segmentation

    def process(
        self,
        volume_node,
        engine: str = "default",
        sides: Sequence[str] = ALL_SIDES,
        segmentation_node=None,
        progress: Callable[..., None] | None = None,
        quality: bool = True,
    ):
        """Segment in this process and write a segmentation node (new unless one is given).

        ``quality``: also compute each side's segmentation quality signal (a second engine's
        opinion; when that engine cannot run here the side says so and nothing fails)."""
        from femurscreen.segmentation import segment

        sides = _check_sides(sides)
        image = volume_to_image(volume_node)
        result = segment(image, engine=engine, progress=progress, quality=quality)
        labels = sitk.GetArrayFromImage(result.labels)
        info = {
            "engine": str(getattr(result, "engine", engine)),
            "sides": {s: SideInfo.of(result.sides.get(s)).as_dict() for s in SIDES},
            "model": dict(getattr(result, "model", None) or {}),
        }
        return self.apply_labels(volume_node, labels, sides, info, segmentation_node)

    def start_segmentation(
        self,
        volume_node,
        engine: str = "default",
        sides: Sequence[str] = ALL_SIDES,
        quality: bool = True,
    ) -> SegmentationJob:
        """Write the volume to a temporary NRRD and segment it in a child process
        (``quality``: with the segmentation quality signal, ``femurscreen segment --quality``)."""
        sides = _check_sides(sides)
        temp_dir = Path(tempfile.mkdtemp(prefix="FemurScreen-"))
        try:
            input_path = temp_dir / "input.nrrd"
            sitk.WriteImage(volume_to_image(volume_node), str(input_path), False)
            args = [
                python_executable(),
                "-m",
                "femurscreen",
                "segment",
                str(input_path),
                "--out",
                str(temp_dir / "labels.nrrd"),
                "--engine",
                engine,
                "--json",
                *(["--quality"] if quality else []),
            ]
            process = BackgroundProcess(args, env=child_environment(), cwd=str(temp_dir)).start()
        except Exception:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        log.info("FemurScreen: started %s", " ".join(args))
        return SegmentationJob(volume_node.GetID(), engine, sides, temp_dir, process)

    def finish_segmentation(self, job: SegmentationJob, segmentation_node=None):
        """Turn a finished job's label file into segments; raises with the child's message."""
        from femurscreen.io.labelio import read_labels

        try:
            job.poll()
            if job.cancelled:
                raise FemurScreenError("segmentation was cancelled")
            if not job.succeeded:
                raise FemurScreenError(job.error_message())
            volume_node = self.scene.GetNodeByID(job.volume_node_id)
            if volume_node is None:
                raise InputError(
                    "the volume was removed from the scene while it was being segmented",
                    "load the CT again and press Segment",
                )
            report = _parse_json(job.process.stdout)
            labels = sitk.GetArrayFromImage(read_labels(job.output_path))
            sides_report = report.get("sides") if isinstance(report.get("sides"), dict) else {}
            model = report.get("model") if isinstance(report.get("model"), dict) else {}
            info = {
                "engine": str(report.get("engine") or job.engine),
                "sides": {s: SideInfo.of(sides_report.get(s)).as_dict() for s in SIDES},
                "model": model,
            }
            return self.apply_labels(volume_node, labels, job.sides, info, segmentation_node)
        finally:
            job.cleanup()

    def new_segmentation_node(self, volume_node):
        """An empty segmentation named after the volume, beside it in the data tree."""
        node = self.scene.AddNewNodeByClass(
            "vtkMRMLSegmentationNode",
            self.scene.GenerateUniqueName(f"{volume_node.GetName()} femur"),
        )
        node.CreateDefaultDisplayNodes()
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        if sh is not None:  # same study folder as the volume, when the data tree has both
            volume_item = sh.GetItemByDataNode(volume_node)
            node_item = sh.GetItemByDataNode(node)
            if sh.GetInvalidItemID() not in (volume_item, node_item):
                sh.SetItemParent(node_item, sh.GetItemParent(volume_item))
        return node

    def apply_labels(
        self, volume_node, labels: np.ndarray, sides, info: dict, segmentation_node=None
    ):
        """Write a 0/1/2 label array (on the volume's grid) into a segmentation node."""
        labels = np.asarray(labels)
        dims = volume_node.GetImageData().GetDimensions()
        if labels.shape != tuple(dims[::-1]):
            raise InputError(
                f"the label map has {labels.shape[::-1]} voxels, the volume "
                f"'{volume_node.GetName()}' has {tuple(dims)}",
                "segment this volume again",
            )
        sides = _check_sides(sides)
        keep = [seg_io.SEGMENTS[s].label for s in sides]
        kept = np.where(np.isin(labels, keep), labels, 0).astype(np.uint8)
        node = segmentation_node or self.new_segmentation_node(volume_node)
        was_modifying = node.StartModify()
        try:
            seg_io.write_segments(node, kept, volume_node, sides)
            written = seg_io.read_labels(node, volume_node).labels
            info = dict(info)
            info["requested_sides"] = list(sides)
            # each side's mask as written: its quality describes that mask and no other
            info["sides"] = {
                name: {**dict(side or {}), MASK_HASH_KEY: _side_hash(written, name)}
                for name, side in (info.get("sides") or {}).items()
            }
            node.SetAttribute(SEGMENTATION_INFO_ATTRIBUTE, json.dumps(info))
            node.SetAttribute(seg_io.CREATED_BY_ATTRIBUTE, f"FemurScreen {info.get('engine', '')}")
            node.SetAttribute(seg_io.CONTENT_HASH_ATTRIBUTE, seg_io.labels_hash(written))
        finally:
            node.EndModify(was_modifying)
        return node

    # ------------------------------------------------------------------ edit tracking

    def mark_unedited(self, segmentation_node, volume_node=None) -> None:
        """Remember the segments' content so that later edits can be detected."""
        volume_node = volume_node or self.reference_volume(segmentation_node)
        labels = seg_io.read_labels(segmentation_node, volume_node).labels
        segmentation_node.SetAttribute(seg_io.CONTENT_HASH_ATTRIBUTE, seg_io.labels_hash(labels))

    def is_edited(self, segmentation_node) -> bool:
        """True when the segments differ from what FemurScreen last wrote (or it never did)."""
        stored = segmentation_node.GetAttribute(seg_io.CONTENT_HASH_ATTRIBUTE)
        volume_node = self.reference_volume(segmentation_node)
        if not stored or volume_node is None:
            return True
        labels = seg_io.read_labels(segmentation_node, volume_node).labels
        return seg_io.labels_hash(labels) != stored

    @staticmethod
    def reference_volume(segmentation_node):
        return segmentation_node.GetNodeReference(
            segmentation_node.GetReferenceImageGeometryReferenceRole()
        )

    @staticmethod
    def made_by_femurscreen(segmentation_node) -> bool:
        """Whether FemurScreen wrote this segmentation (it then carries its run's info)."""
        return segmentation_node is not None and bool(
            segmentation_node.GetAttribute(SEGMENTATION_INFO_ATTRIBUTE)
        )

    @staticmethod
    def has_femur_segments(segmentation_node) -> bool:
        """Whether the node holds a segment FemurScreen can read as a left or right femur."""
        return segmentation_node is not None and bool(seg_io.side_segment_ids(segmentation_node))

    @staticmethod
    def segmentation_info(segmentation_node) -> dict:
        text = segmentation_node.GetAttribute(SEGMENTATION_INFO_ATTRIBUTE)
        info = _parse_json(text or "")
        info.setdefault("engine", "manual")
        info.setdefault("sides", {})
        return info

    # ------------------------------------------------------------------ features + classes

    def model(self):
        """The verified classifier (loaded once; reloaded when ``model_dir`` changes)."""
        from femurscreen.classifier import load_model

        folder = self.model_dir_path()
        if self._model is None or self._model_key != str(folder):
            self._model = load_model(folder)
            self._model_key = str(folder)
        return self._model

    def model_dir_path(self) -> Path:
        from femurscreen.resources import resource_dir

        return Path(self.model_dir) if self.model_dir else resource_dir().joinpath(*DEMO_MODEL)

    def model_summary(self) -> dict:
        """Demo flag, notice and feature list of the classifier, for the GUI banner.

        Reads only the manifest (JSON), so opening the module imports no scikit-learn; the
        model itself is verified and loaded by :meth:`model` when results are computed.
        """
        folder = self.model_dir_path()
        path = folder / "manifest.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FemurScreenError(
                f"the classifier manifest cannot be read ({exc})",
                "reinstall FemurScreen or choose another model folder",
                path=path,
            ) from exc
        demo = bool(manifest.get("demo", True))
        return {
            "demo": demo,
            "demo_notice": manifest.get("demo_notice") if demo else None,
            "features": [str(f) for f in manifest.get("features") or []],
            "path": str(folder),
        }

    def requirements_for(self, engine: str, stage: str) -> Sequence:
        """The packages ``stage`` ("segment" or "grade") needs for ``engine``."""
        from FemurScreenLib import dependencies

        return dependencies.requirements_for(engine, stage=stage)

    def missing_packages(self, engine: str = "default", stage: str = "grade") -> list:
        """Requirements of ``stage`` for ``engine`` that are absent (metadata only, cheap).

        A set of requirements once found installed is not checked again in this session, so
        the auto-recompute after each edit never re-offers an installation of packages that
        are there (and reads no package metadata)."""
        from FemurScreenLib import dependencies

        requirements = tuple(self.requirements_for(engine, stage))
        key = tuple(str(r) for r in requirements)
        if key in self._present:
            return []
        needed = dependencies.missing(requirements)
        if not needed:
            self._present.add(key)
        return needed

    def check_packages(self, engine: str = "default", stage: str = "grade") -> None:
        """Raise :class:`MissingPackagesError` naming what ``stage`` lacks, before any work."""
        needed = self.missing_packages(engine, stage)
        if needed:
            raise MissingPackagesError(needed)

    def compute(self, volume_node, segmentation_node) -> ScreeningResult:
        """Features and bone-status probabilities of the segments as they are now (in this
        process; the GUI uses :meth:`start_grading`)."""
        from femurscreen.grading import grade, segmentation_info

        started = time.perf_counter()
        prepared = self._prepare(volume_node, segmentation_node)
        grading = grade(
            prepared.ct,
            prepared.labels,
            sides=prepared.sides,
            model=self.model(),
            label=prepared.case,
            source="fingerprint",
            segmentation=segmentation_info(prepared.info),
            check_anatomy=prepared.edited,  # a person's edit is checked like an engine's mask
        )
        return self._finish(segmentation_node, prepared, grading, time.perf_counter() - started)

    def start_grading(self, volume_node, segmentation_node, engine: str = "default") -> GradingJob:
        """Write the CT, the segments and a request to a temporary folder and grade them in a
        child process (the same :func:`femurscreen.grading.grade` as :meth:`compute`).

        Checks the grading packages first: a missing one is a clear error here, not an
        ImportError from the child (the widget offers to install them before calling this).
        """
        from femurscreen.grading import segmentation_info, write_request

        self.check_packages(engine, "grade")
        prepared = self._prepare(volume_node, segmentation_node)
        temp_dir = Path(tempfile.mkdtemp(prefix="FemurScreen-grade-"))
        try:
            ct_path, labels_path = temp_dir / "ct.nrrd", temp_dir / "labels.nrrd"
            sitk.WriteImage(prepared.ct, str(ct_path), False)
            sitk.WriteImage(prepared.labels, str(labels_path), True)
            request = write_request(
                temp_dir / "request.json",
                ct_path=ct_path,
                labels_path=labels_path,
                out_path=temp_dir / "grading.json",
                sides={n: None if v is None else v.as_dict() for n, v in prepared.sides.items()},
                model_dir=self.model_dir_path(),
                label=prepared.case,
                source="fingerprint",
                segmentation=segmentation_info(prepared.info),
                check_anatomy=prepared.edited,
            )
            args = [python_executable(), "-m", "femurscreen.grading", str(request)]
            process = BackgroundProcess(args, env=child_environment(), cwd=str(temp_dir)).start()
        except Exception:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        log.info("FemurScreen: started %s", " ".join(args))
        return GradingJob(
            volume_node.GetID(), segmentation_node.GetID(), prepared, temp_dir, process
        )

    def finish_grading(self, job: GradingJob) -> ScreeningResult:
        """Show a finished grading job's result; raises with the child's message."""
        from femurscreen.grading import read_response

        try:
            job.poll()
            if job.cancelled:
                raise FemurScreenError("grading was cancelled")
            if not job.succeeded:
                raise FemurScreenError(job.error_message())
            segmentation_node = self.scene.GetNodeByID(job.segmentation_node_id)
            if segmentation_node is None or self.scene.GetNodeByID(job.volume_node_id) is None:
                raise InputError(
                    "the CT or its segmentation was removed from the scene while it was graded",
                    "select them again and press Recompute",
                )
            grading = read_response(job.output_path)
            return self._finish(segmentation_node, job.prepared, grading, job.seconds)
        finally:
            job.cleanup()

    def _prepare(self, volume_node, segmentation_node) -> _Prepared:
        """Read the segments on the CT grid; the sides' status from the segmentation run."""
        from femurscreen import screening

        ct = volume_to_image(volume_node)
        masks = seg_io.read_labels(segmentation_node, volume_node)
        labels = sitk.GetImageFromArray(masks.labels)
        labels.CopyInformation(ct)
        info = self.segmentation_info(segmentation_node)
        voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
        sides: dict[str, SideInfo | None] = {}
        for side in SIDES:
            if side not in masks.segment_ids:
                sides[side] = None
                continue
            stored = info["sides"].get(side) or {}
            found = SideInfo.of(stored or {"status": Status.OK})
            count = int((masks.labels == seg_io.SEGMENTS[side].label).sum())
            found.volume_ml = round(count * voxel_ml, 3)
            if count == 0:
                found.status = Status.NOT_FOUND
            if stored.get(MASK_HASH_KEY) != _side_hash(masks.labels, side):
                found.edited()  # changed by a person (or never FemurScreen's): no engine's quality
            sides[side] = found
        if all(s is None or s.status == Status.NOT_FOUND for s in sides.values()):
            raise InputError(
                f"segmentation '{segmentation_node.GetName()}' has no left or right femur voxels",
                "press Segment, or paint the femur in the Segment Editor (segment names must "
                "say 'left' or 'right')",
            )
        # Provenance: whether a person changed the segments after FemurScreen wrote them.
        stored = segmentation_node.GetAttribute(seg_io.CONTENT_HASH_ATTRIBUTE)
        edited = stored is None or seg_io.labels_hash(masks.labels) != stored
        return _Prepared(
            ct=ct,
            labels=labels,
            masks=masks,
            sides=sides,
            info=info,
            case=screening.fingerprint(ct),
            edited=edited,
        )

    def _finish(self, segmentation_node, prepared: _Prepared, grading, seconds: float):
        result = grading.result
        result["models"]["segmentation"].update(
            source="3D Slicer (FemurScreen module)", edited_in_slicer=prepared.edited
        )
        result["timing_s"] = {"compute": round(seconds, 3)}
        nodes = self._show(segmentation_node, grading.rows, result)
        return ScreeningResult(
            result=result,
            rows=grading.rows,
            ct=prepared.ct,
            labels=prepared.labels,
            overlap_voxels=prepared.masks.overlap_voxels,
            seconds=seconds,
            **nodes,
        )

    # ------------------------------------------------------------------ views

    def plot_view_node(self):
        """The panel's own plot view: it shows only the chart the panel gives it.

        Slicer's plot views follow the application's chart selection by default
        (``DoPropagatePlotChartSelection``), so any other module showing a chart would replace
        the probability chart; the panel's view opts out.
        """
        node = self._singleton("vtkMRMLPlotViewNode", "FemurScreenPlotView")
        node.SetDoPropagatePlotChartSelection(False)
        return node

    def segment_editor_node(self):
        """The embedded Segment Editor's parameter node (separate from the Segment Editor
        module's, so the two editors do not fight over effects and selections)."""
        return self._singleton("vtkMRMLSegmentEditorNode", "FemurScreenSegmentEditor")

    def _singleton(self, class_name: str, tag: str):
        return seg_io.singleton_node(self.scene, class_name, tag)

    def _show(self, segmentation_node, rows: list[dict], result: dict) -> dict:
        """Fill (or create) the tables and chart referenced by the segmentation node."""
        scene = self.scene
        base = segmentation_node.GetName()

        def ref(role):
            return segmentation_node.GetNodeReference(role)

        features = tables.features_table(scene, rows, ref(REF_FEATURES), f"{base} features")
        bmd = result.get("bmd") or {}
        rows_shown = [display_row(s, result.get(s) or {}, bmd.get(s)) for s in SIDES]
        results = tables.results_table(scene, rows_shown, ref(REF_RESULTS), f"{base} results")
        graded = [row for row in rows_shown if result.get(row["side"], {}).get("graded")]
        probabilities, chart = tables.probability_chart(
            scene, graded, ref(REF_PROBABILITIES), ref(REF_CHART), f"{base} probabilities"
        )
        for role, node in (
            (REF_FEATURES, features),
            (REF_RESULTS, results),
            (REF_PROBABILITIES, probabilities),
            (REF_CHART, chart),
        ):
            segmentation_node.SetNodeReferenceID(role, node.GetID())
        return {
            "features_table": features,
            "results_table": results,
            "probabilities_table": probabilities,
            "chart": chart,
        }

    # ------------------------------------------------------------------ export

    def export_segmentation(self, segmentation_node, path: str | Path) -> Path:
        """Write the segmentation as Slicer's ``.seg.nrrd`` (names, colours, terminology)."""
        from femurscreen.atomic import atomic_path

        path = Path(path)
        if not path.name.endswith(".seg.nrrd"):
            raise InputError("a segmentation file name must end with .seg.nrrd", path=path)
        storage = slicer.vtkMRMLSegmentationStorageNode()
        with atomic_path(path) as tmp:
            storage.SetFileName(str(tmp))
            if not storage.WriteData(segmentation_node):
                raise FemurScreenError("Slicer could not write the segmentation", path=path)
        return path

    def export_csv(self, screening_result: ScreeningResult, path: str | Path) -> Path:
        """One row per side: the batch summary columns followed by the features."""
        import pandas as pd
        from femurscreen.atomic import atomic_path

        by_side = {str(r.get("side")): r for r in screening_result.rows}
        rows = []
        for row in screening_result.side_rows():
            features = by_side.get(row["side"], {})
            rows.append(
                {**row, **{k: v for k, v in features.items() if k not in row and k != "error"}}
            )
        with atomic_path(path) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        return Path(path)

    def export_json(self, screening_result: ScreeningResult, path: str | Path) -> Path:
        """The result in the CLI's ``result.json`` format."""
        from femurscreen.atomic import write_text

        text = json.dumps(json_safe(screening_result.result), indent=2, ensure_ascii=False)
        return write_text(path, text + "\n")

    @staticmethod
    def loaded_from_dicom(volume_node) -> bool:
        """Whether the volume came from Slicer's DICOM database (it then has a study that a
        DICOM SEG and SR can join)."""
        return volume_node is not None and bool(
            (volume_node.GetAttribute(DICOM_UIDS_ATTRIBUTE) or "").split()
        )

    def dicom_source_files(self, volume_node, database=None) -> list[Path]:
        """The DICOM files the volume was loaded from, found by their SOP Instance UIDs in
        Slicer's DICOM database (``slicer.dicomDatabase.fileForInstance``; ``database``: an
        object with that method, e.g. for scripts with their own database)."""
        name = volume_node.GetName() if volume_node is not None else "(none)"
        uids = (volume_node.GetAttribute(DICOM_UIDS_ATTRIBUTE) or "").split() if volume_node else []
        if not uids:
            raise InputError(
                f"the volume '{name}' was not loaded from Slicer's DICOM database, so it has no "
                "DICOM study for a SEG and SR to join",
                "load the CT with the DICOM module (Import DICOM files, then Load), or save the "
                "segmentation and the result as files instead",
            )
        database = database if database is not None else getattr(slicer, "dicomDatabase", None)
        if database is None or not getattr(database, "isOpen", True):
            raise InputError(
                "Slicer's DICOM database is not open",
                "open the DICOM module once (it opens the database), then export again",
            )
        files: list[Path] = []
        lost = 0
        for uid in dict.fromkeys(uids):
            found = database.fileForInstance(uid) if uid != "Unknown" else ""
            if found and Path(found).is_file():
                files.append(Path(found))
            else:
                lost += 1
        if lost:
            raise InputError(
                f"{lost} of the {len(uids)} DICOM files of '{name}' are no longer in the DICOM "
                "database or on disk",
                "import the CT study into the DICOM database again, load it, then export",
            )
        return files

    def export_dicom(
        self,
        screening_result: ScreeningResult,
        volume_node,
        segmentation_node,
        out_dir: str | Path,
        database=None,
    ) -> list[Path]:
        """DICOM SEG of the segments as they were graded, the TID 1500 SR of the result and the
        report as a secondary capture, in the CT's study, into ``out_dir`` (``seg.dcm``,
        ``sr.dcm``, ``report.dcm``; the core's :func:`femurscreen.dicom.export.
        write_dicom_outputs`, as ``femurscreen screen --dicom`` writes them).

        Refuses, writing nothing, a volume not loaded from DICOM and segments edited after the
        result was computed (the SEG and the SR must describe the same masks).
        """
        self.check_packages("default", "export")
        import pydicom
        from femurscreen.dicom.export import write_dicom_outputs

        files = self.dicom_source_files(volume_node, database)
        now = seg_io.read_labels(segmentation_node, volume_node).labels
        graded = sitk.GetArrayViewFromImage(screening_result.labels)
        if now.shape != graded.shape or not np.array_equal(now, graded):
            raise InputError(
                "the segments changed after the bone status was computed",
                "press Recompute (or wait for the automatic recompute), then export",
            )
        # the headers of exactly the volume's files (its folder may hold other series too)
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        return write_dicom_outputs(
            screening_result.result,
            screening_result.labels,
            headers,
            out_dir,
            ct=screening_result.ct,
        )

    @staticmethod
    def report_available() -> bool:
        try:
            from femurscreen.output.report import write_report  # noqa: F401
        except ImportError:
            return False
        return True

    def export_report(self, screening_result: ScreeningResult, path: str | Path) -> Path:
        """The self-contained HTML report (the same as ``femurscreen screen`` writes)."""
        from femurscreen.output.report import write_report

        return write_report(
            screening_result.result, screening_result.ct, screening_result.labels, path
        )


# ---------------------------------------------------------------------- panel state


@dataclass(frozen=True)
class Controls:
    """What the panel's buttons say and whether they can be pressed."""

    segment_text: str  # "Segment", or "Cancel" while a segmentation runs
    segment_enabled: bool
    recompute_text: str  # "Recompute", or "Cancel" while a grading runs
    recompute_enabled: bool
    export_segmentation_enabled: bool
    export_result_enabled: bool  # only a current result: never a stale or failed one
    busy: bool  # a child process is running (progress bar shown)
    export_dicom_enabled: bool = False  # a current result of a CT loaded from DICOM


@dataclass(frozen=True)
class Outcome:
    """How a finished job ended: its product, or why there is none."""

    node: Any = None  # the segmentation node (segmentation jobs)
    result: ScreeningResult | None = None  # the result (grading jobs)
    error: str | None = None
    cancelled: bool = False


class PanelState:
    """The panel's jobs and current result, kept consistent whatever fails.

    Every method that runs user-facing work catches its errors, resets the state (no job left
    marked as running, no stale result left exportable) and returns the error as text for the
    widget to show; so the widget stays thin and the state logic is tested without Qt.
    """

    def __init__(self, logic: FemurScreenLogic) -> None:
        self.logic = logic
        self.segmentation_job: SegmentationJob | None = None
        self.segmentation_target = None  # node to overwrite, or None for a new one
        self.grading_job: GradingJob | None = None
        self.result: ScreeningResult | None = None

    @property
    def segmenting(self) -> bool:
        return self.segmentation_job is not None

    @property
    def grading(self) -> bool:
        return self.grading_job is not None

    @property
    def job(self) -> ChildJob | None:
        """The running job the progress bar follows."""
        return self.segmentation_job or self.grading_job

    def controls(
        self, *, volume: bool, segmentation: bool, sides: bool, dicom: bool = False
    ) -> Controls:
        """``dicom``: the volume was loaded from Slicer's DICOM database."""
        exportable = self.result is not None and not self.grading
        return Controls(
            segment_text="Cancel" if self.segmenting else "Segment",
            segment_enabled=self.segmenting or (volume and sides and not self.grading),
            recompute_text="Cancel" if self.grading else "Recompute",
            recompute_enabled=self.grading or (volume and segmentation and not self.segmenting),
            export_segmentation_enabled=segmentation and not self.segmenting,
            export_result_enabled=exportable,
            busy=self.job is not None,
            export_dicom_enabled=exportable and dicom and not self.segmenting,
        )

    # segmentation

    def start_segmentation(
        self, volume_node, engine: str, sides, target=None, quality: bool = True
    ) -> str | None:
        """Start a background segmentation (``quality``: with the quality signal); the error
        text when it cannot start."""
        if self.segmenting:
            return "a segmentation is already running"
        self.cancel_grading()
        try:
            self.segmentation_job = self.logic.start_segmentation(
                volume_node, engine, sides, quality
            )
        except Exception as exc:
            log.exception("FemurScreen: could not start the segmentation")
            self.segmentation_job = None
            return str(exc) or type(exc).__name__
        self.segmentation_target = target
        return None

    def cancel_segmentation(self) -> None:
        if self.segmentation_job is not None:
            self.segmentation_job.cancel()

    def finish_segmentation(self) -> Outcome:
        """Turn the finished job into segments; the job is cleared whatever happens."""
        job, target = self.segmentation_job, self.segmentation_target
        self.segmentation_job = self.segmentation_target = None
        if job is None:
            return Outcome(error="no segmentation was running")
        if job.cancelled:
            job.cleanup()
            return Outcome(cancelled=True)
        try:
            return Outcome(node=self.logic.finish_segmentation(job, target))
        except Exception as exc:
            log.exception("FemurScreen: segmentation failed")
            return Outcome(error=str(exc) or type(exc).__name__)

    # grading

    def start_grading(self, volume_node, segmentation_node, engine: str = "default") -> str | None:
        """Grade in a child process (a running grading is replaced: the segments changed);
        on error the previous result is cleared and the error text returned."""
        self.cancel_grading()
        try:
            self.grading_job = self.logic.start_grading(volume_node, segmentation_node, engine)
        except Exception as exc:
            log.exception("FemurScreen: could not start grading")
            self.grading_job = None
            self.result = None
            return str(exc) or type(exc).__name__
        return None

    def cancel_grading(self) -> None:
        job, self.grading_job = self.grading_job, None
        if job is not None:
            job.cancel()
            job.cleanup()

    def finish_grading(self) -> Outcome:
        """The finished grading's result replaces the old one; on failure both are gone."""
        job, self.grading_job = self.grading_job, None
        if job is None:
            return Outcome(error="no grading was running")
        if job.cancelled:
            job.cleanup()
            self.result = None
            return Outcome(cancelled=True)
        try:
            self.result = self.logic.finish_grading(job)
        except Exception as exc:
            log.exception("FemurScreen: grading failed")
            self.result = None
            return Outcome(error=str(exc) or type(exc).__name__)
        return Outcome(result=self.result)

    def forget_result(self) -> None:
        """The result no longer describes what is on screen (another segmentation chosen)."""
        self.result = None

    def clear(self) -> None:
        """Stop every job and forget the result (scene closed, module cleaned up)."""
        self.cancel_grading()
        job, self.segmentation_job = self.segmentation_job, None
        self.segmentation_target = None
        if job is not None:
            job.cancel()
            job.cleanup()
        self.result = None


# ---------------------------------------------------------------------- helpers


def child_environment() -> dict[str, str]:
    """Environment of the segmentation process: Slicer's start-up environment (as
    ``slicer.util.launchConsoleProcess`` uses) plus the module folder on PYTHONPATH."""
    env = None
    util = getattr(slicer, "util", None)
    if hasattr(slicer, "app") and util is not None and hasattr(util, "startupEnvironment"):
        try:
            env = dict(util.startupEnvironment())
        except Exception:  # pragma: no cover - Slicer without a launcher environment
            env = None
    if env is None:
        env = dict(os.environ)
    paths = [str(CORE_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _check_sides(sides: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(str(s).lower() for s in sides))
    unknown = [s for s in chosen if s not in SIDES]
    if unknown or not chosen:
        raise InputError(
            f"unknown or no side(s) {unknown or list(chosen)}", "choose 'left' and/or 'right'"
        )
    return chosen


def _parse_json(text: str) -> dict:
    """The JSON object in a process's stdout (ignoring any lines printed before it)."""
    text = (text or "").strip()
    if not text:
        return {}
    start = text.find("{")
    try:
        data = json.loads(text[start:]) if start >= 0 else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def flag_words(flags: Sequence[str]) -> list[str]:
    """Plain-words explanation of flags, from the core's one flag table."""
    return [flag_help(f) for f in flags]


DENSITY_LABEL = "CT-derived estimate, not DXA"


def display_row(side: str, info: dict, bmd: dict | None = None) -> dict:
    """What the results table shows for one side (``bmd``: the side's calibrated-density
    block, whose T-scores and WHO class sit beside the probabilities)."""
    probabilities = info.get("probabilities") or {}
    note = info.get("reason") or info.get("reliability") or ""
    numbers = bmd_numbers(bmd)
    return {
        "side": side,
        "status": info.get("status") or "",
        "predicted": info.get("predicted") or "",
        **{f"p_{c}": probabilities.get(c) for c in CLASSES},
        "fn_t_score": numbers["fn_t_score"],
        "th_t_score": numbers["th_t_score"],
        "who_class": numbers["who_class"] or "",
        "applicable": info.get("applicable"),
        "seg_quality": quality_numbers(info)["seg_quality"],
        "volume_ml": info.get("volume_ml"),
        "flags": ", ".join(info.get("flags") or []),
        "note": note,
    }


def quality_text(side: str, result: dict) -> str:
    """One line for the panel: the side's segmentation check in plain words (the report's
    wording, ``grading.quality_words``); empty for a side with no mask."""
    words = quality_words(result.get(side) or {})
    return f"Mask check: {words}" if words else ""


def density_text(side: str, result: dict) -> str:
    """One line for the panel: the side's CT-derived T-scores (with their SD) and WHO class, or
    why there are none; empty when the result has no density block."""
    block = result.get("bmd")
    if not block:
        return ""
    info = block.get(side) or {}
    if info.get("status") != Status.OK:
        calibration = block.get("calibration") or {}
        if calibration.get("status") not in (None, Status.OK):
            return f"{DENSITY_LABEL}: calibration refused ({calibration.get('reason') or ''})"
        return f"{DENSITY_LABEL}: not measured ({info.get('reason') or info.get('status')})"
    sd = info.get("t_score_sd")

    def t(value) -> str:
        if value is None:
            return "-"
        return f"{value:.1f}" + (f" ± {sd:.1f}" if sd is not None else "")

    return (
        f"T-score neck {t(info.get('fn_t_score'))}, total hip {t(info.get('th_t_score'))}, "
        f"WHO {info.get('who_class') or '-'} ({DENSITY_LABEL})"
    )
