"""``segment()``: one CT in, a left/right proximal femur label map and per-side status out.

Engines produce a raw 0/1/2 label image on the CT's grid; everything after that is shared:
post-processing (``postprocess``: largest component, holes, metal, anatomical cut), the
wrong-bone guard (``guard``: head, neck and trochanteric region in an anatomical
configuration, else the side is not graded) and the flags and status of each side
(``flags``). So switching engines never changes what a label means or how a side is judged.

Quality signal (``segment(..., quality=True)``): per side, the Dice agreement between the
engine's mask and a second opinion from the other engine (classical <-> vbnet), both after the
same post-processing. Agreement says nothing about which of the two is right, only that a low
number needs a look: below ``REVIEW_QUALITY`` the side carries ``review_segmentation``. It
costs a second segmentation, so ``segment()`` leaves it off unless asked; ``femurscreen
screen``, ``batch`` and the Slicer module ask for it by default (``--no-quality`` turns it off).
When the other engine cannot run here (no PyTorch for the VB-Net), ``quality`` is None and
``quality_method`` says ``dice_with_<engine>_unavailable``; nothing fails. A mask a person
edited is no engine's any more: its quality is None with method ``QUALITY_EDITED``.

Engine registry:
- ``classical``: training-free (``classical.ClassicalEngine``), always available;
- ``vbnet``: the VB-Net network (``femurscreen.segmentation.vbnet.VBNetEngine``), imported
  only when asked for, so the core works without it;
- ``default``: ``DEFAULT_ENGINE``, chosen by measurement (see the project README).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk

from femurscreen.errors import ModelError, NoFemurError
from femurscreen.labels import SIDE_NAMES
from femurscreen.segmentation.flags import (
    FLAG_HELP,
    FLAG_STATUS,
    GUARD_FLAGS,
    MIN_METAL_MM3,
    metal_volume_mm3,
    primary_status,
    side_flags,
)
from femurscreen.segmentation.guard import Anatomy, check_labels
from femurscreen.segmentation.postprocess import SideGeometry, postprocess
from femurscreen.status import Status

log = logging.getLogger(__name__)

DEFAULT_ENGINE = "classical"
ENGINES: tuple[str, ...] = ("classical", "vbnet")
SECOND_OPINION: dict[str, str] = {"classical": "vbnet", "vbnet": "classical"}
REVIEW_QUALITY = 0.85  # engine agreement (Dice) below this flags review_segmentation
QUALITY_EDITED = "edited"  # quality_method of a mask edited by hand (quality None)
UNAVAILABLE_SUFFIX = "_unavailable"  # quality_method suffix when the second engine cannot run

Progress = Callable[[float, str], None]


class Engine(Protocol):
    def predict(self, image: sitk.Image) -> sitk.Image: ...


@dataclass
class SideResult:
    """One side: status (see ``flags.primary_status``), all flags, volume, landmarks.

    ``reason``: why a side is not graded, in plain words (None when it is). ``anatomy``: what
    the wrong-bone guard measured (head radius, neck-shaft angle, ...; see ``guard``).
    ``quality``: 0..1 agreement with a second opinion (``quality_method`` says which), None
    when not computed.
    """

    status: Status
    flags: list[str] = field(default_factory=list)
    volume_ml: float = 0.0
    head_top_z: float | None = None  # world z (LPS, mm)
    lesser_trochanter_z: float | None = None
    cut_z: float | None = None  # the anatomical cut applied; None when nothing was cut
    reason: str | None = None
    anatomy: dict[str, Any] | None = None
    quality: float | None = None
    quality_method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["volume_ml"] = round(float(self.volume_ml), 2)
        for key in ("head_top_z", "lesser_trochanter_z", "cut_z"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 1)
        if out["quality"] is not None:
            out["quality"] = round(float(out["quality"]), 3)
        return out


@dataclass
class SegmentationResult:
    """Labels on the input CT's grid (uint8: 0, 1 = left, 2 = right) and per-side results."""

    labels: sitk.Image
    sides: dict[str, SideResult]
    engine: str
    timing_s: dict[str, float] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)  # learned weights used, demo status

    @property
    def demo(self) -> bool:
        return bool(self.model.get("demo"))

    def to_dict(self) -> dict[str, Any]:
        out = {
            "engine": self.engine,
            "sides": {name: side.to_dict() for name, side in self.sides.items()},
            "timing_s": {k: round(v, 3) for k, v in self.timing_s.items()},
        }
        if self.model:
            out["model"] = self.model
        return out


def resolve_engine(name: str) -> str:
    """``default`` -> ``DEFAULT_ENGINE``; refuse unknown names with the list of known ones."""
    resolved = DEFAULT_ENGINE if name == "default" else name
    if resolved not in ENGINES:
        raise ModelError(
            f"unknown segmentation engine '{name}'",
            f"use one of: default, {', '.join(ENGINES)}",
        )
    return resolved


def get_engine(name: str = "default") -> Engine:
    """An engine instance. The classical engine is new each time (it is cheap and keeps
    per-call state); the VB-Net engine is loaded once per process (weights)."""
    resolved = resolve_engine(name)
    if resolved == "classical":
        from femurscreen.segmentation.classical.engine import ClassicalEngine

        return ClassicalEngine()
    return _vbnet_engine()


@functools.lru_cache(maxsize=1)
def _vbnet_engine() -> Engine:
    try:
        from femurscreen.segmentation.vbnet import VBNetEngine
    except ImportError as exc:
        raise ModelError(
            f"the VB-Net segmentation engine cannot be loaded ({exc})",
            "use --engine classical, or reinstall FemurScreen with its PyTorch dependency",
        ) from exc
    return VBNetEngine()


def segment(
    image: sitk.Image,
    *,
    engine: str = "default",
    progress: Progress | None = None,
    quality: bool = False,
) -> SegmentationResult:
    """Segment both proximal femurs of a CT (HU, any direction matrix).

    Raises ``NoFemurError`` when neither side is found (or the guard rejects both).
    ``progress(fraction, message)`` is called at each stage when given. ``quality=True`` adds
    the per-side quality signal (a second segmentation by the other engine; see module doc).
    """
    report = progress or (lambda fraction, message: None)
    name = resolve_engine(engine)
    started = time.perf_counter()
    report(0.0, f"segmenting with the {name} engine")
    model = get_engine(name)
    t_loaded = time.perf_counter()
    raw = model.predict(image)
    raw = _on_input_grid(raw, image)
    t_predicted = time.perf_counter()
    report(0.6 if quality else 0.8, "post-processing")
    labels, geometry = postprocess(raw, image)
    t_post = time.perf_counter()
    array = sitk.GetArrayViewFromImage(labels)
    ct = sitk.GetArrayViewFromImage(image)
    spacing_zyx = tuple(float(s) for s in image.GetSpacing()[::-1])
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    metal = {
        v: metal_volume_mm3(np.asarray(array[g.box]) == v, np.asarray(ct[g.box]), spacing_zyx)  # type: ignore[arg-type]
        for v, g in geometry.items()
        if g.found and g.box is not None
    }
    verdicts = check_labels(
        labels,
        {v: g.box for v, g in geometry.items() if g.found},
        {v: mm3 >= MIN_METAL_MM3 for v, mm3 in metal.items()},
        {v: "truncated" in g.flags for v, g in geometry.items()},
    )
    labels = _reject(labels, geometry, verdicts)
    t_guard = time.perf_counter()

    sides: dict[str, SideResult] = {}
    for value, side in SIDE_NAMES.items():
        geo = geometry[value]
        verdict = verdicts.get(value)
        volume = geo.voxels * voxel_ml
        flags: list[str] = []
        guard_flag = None if verdict is None or verdict.verdict == "ok" else verdict.verdict
        if geo.found and geo.box is not None:
            flags = side_flags(
                volume_ml=volume,
                metal_mm3=metal.get(value, 0.0),
                geometry_flags=geo.flags,
                guard_flag=guard_flag,
            )
        elif guard_flag is not None:
            flags = [guard_flag]
        status = primary_status(geo.found, flags)
        sides[side] = SideResult(
            status=status,
            flags=flags,
            volume_ml=volume,
            head_top_z=geo.head_top_z,
            lesser_trochanter_z=geo.lesser_trochanter_z,
            cut_z=geo.cut_z,
            reason=_reason(status, flags, verdict),
            anatomy=None if verdict is None else verdict.to_dict(),
        )
    timing = {"load": t_loaded - started, "predict": t_predicted - t_loaded}
    timing.update({f"predict_{k}": v for k, v in getattr(model, "timing_s", {}).items()})
    timing["postprocess"] = t_post - t_predicted
    timing["guard"] = t_guard - t_post
    if not any(geometry[v].found for v in SIDE_NAMES):
        rejected = [f"{SIDE_NAMES[v]}: {a.reason}" for v, a in verdicts.items() if a.reason]
        why = f" ({'; '.join(rejected)})" if rejected else " (no femoral head beside the pelvis)"
        raise NoFemurError(
            f"no proximal femur found in the field of view{why}",
            "check that the scan covers the hips (femoral heads, necks and trochanters)",
        )
    if quality:
        report(0.65, f"quality check: second opinion from the {SECOND_OPINION[name]} engine")
        t_q = time.perf_counter()
        add_quality(image, labels, sides, SECOND_OPINION[name])
        timing["quality"] = time.perf_counter() - t_q
    timing["total"] = time.perf_counter() - started
    report(1.0, "done")
    return SegmentationResult(
        labels=labels, sides=sides, engine=name, timing_s=timing, model=_model_info(model)
    )


def _reject(
    labels: sitk.Image, geometry: dict[int, SideGeometry], verdicts: dict[int, Anatomy]
) -> sitk.Image:
    """The labels without the sides the guard says are not a (lone) proximal femur.

    Such a side becomes ``not_found``: its voxels are removed so that no file downstream holds
    an iliac wing labelled as a femur. ``geometry`` is updated in place.
    """
    rejected = [v for v, a in verdicts.items() if FLAG_STATUS.get(a.verdict) == Status.NOT_FOUND]
    if not rejected:
        return labels
    array = sitk.GetArrayFromImage(labels)
    for value in rejected:
        geo = geometry[value]
        if geo.box is not None:
            sub = array[geo.box]
            sub[sub == value] = 0
        log.info("%s side rejected by the guard: %s", SIDE_NAMES[value], verdicts[value].reason)
        geo.found, geo.voxels, geo.box = False, 0, None
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(labels)
    return out


def _reason(status: Status, flags: list[str], verdict: Anatomy | None) -> str | None:
    """Why a side is not graded, in plain words (the flag that set its status); None if ok."""
    if status == Status.OK:
        return None
    for flag in flags:
        if FLAG_STATUS.get(flag) == status:
            if flag in GUARD_FLAGS and verdict is not None and verdict.reason:
                return verdict.reason
            return FLAG_HELP[flag]
    if verdict is not None and verdict.verdict != "ok" and verdict.reason:
        return verdict.reason
    return "no proximal femur found on this side"


def add_quality(
    image: sitk.Image, labels: sitk.Image, sides: dict[str, SideResult], other: str
) -> None:
    """Per-side agreement (Dice) between ``labels`` and the ``other`` engine's post-processed
    mask; a side below ``REVIEW_QUALITY`` gets ``review_segmentation``. In place."""
    from femurscreen.evaluation.seg_metrics import dice

    method = f"dice_with_{other}"
    try:
        second = get_engine(other).predict(image)
    except (ModelError, ImportError, OSError, RuntimeError, MemoryError) as exc:
        # the other engine cannot run here (no PyTorch, no weights, out of memory): say so,
        # do not guess, and do not fail the segmentation that did work
        log.warning("no second opinion for the quality signal: %s", exc)
        for side in sides.values():
            if side.status != Status.NOT_FOUND:
                side.quality_method = method + UNAVAILABLE_SUFFIX
        return
    second_labels, _ = postprocess(_on_input_grid(second, image), image)
    a = sitk.GetArrayViewFromImage(labels)
    b = sitk.GetArrayViewFromImage(second_labels)
    for value, name in SIDE_NAMES.items():
        side = sides[name]
        if side.status == Status.NOT_FOUND:
            continue
        side.quality = float(dice(a == value, b == value))
        side.quality_method = method
        if side.quality < REVIEW_QUALITY and "review_segmentation" not in side.flags:
            side.flags.append("review_segmentation")


def _model_info(model: Engine) -> dict[str, Any]:
    """What the engine says about its learned weights (name, hashes, DEMO status), if any.

    Reports and the Slicer panel show it, so demo weights are labelled wherever they are used.
    """
    describe = getattr(model, "describe", None)
    if not callable(describe):
        return {}
    info = dict(describe())
    info.pop("device", None)
    info.pop("engine", None)
    return info


def _on_input_grid(raw: sitk.Image, image: sitk.Image) -> sitk.Image:
    """The engine's labels as uint8 on the input grid (resampled nearest if an engine slips)."""
    same = (
        raw.GetSize() == image.GetSize()
        and np.allclose(raw.GetOrigin(), image.GetOrigin(), atol=1e-3)
        and np.allclose(raw.GetSpacing(), image.GetSpacing(), atol=1e-5)
        and np.allclose(raw.GetDirection(), image.GetDirection(), atol=1e-5)
    )
    if not same:
        log.warning("engine returned labels on another grid; resampling onto the CT")
        raw = sitk.Resample(raw, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    raw = sitk.Cast(raw, sitk.sitkUInt8)
    raw.CopyInformation(image)
    return raw
