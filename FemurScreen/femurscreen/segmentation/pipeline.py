"""``segment()``: one CT in, a left/right proximal femur label map and per-side status out.

Engines produce a raw 0/1/2 label image on the CT's grid; everything after that is shared:
post-processing (``postprocess``: largest component, holes, metal, anatomical cut) and the
flags and status of each side (``flags``). So switching engines never changes what a label
means or how a side is judged.

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
from femurscreen.segmentation.flags import metal_volume_mm3, primary_status, side_flags
from femurscreen.segmentation.postprocess import postprocess

log = logging.getLogger(__name__)

DEFAULT_ENGINE = "classical"
ENGINES: tuple[str, ...] = ("classical", "vbnet")

Progress = Callable[[float, str], None]


class Engine(Protocol):
    def predict(self, image: sitk.Image) -> sitk.Image: ...


@dataclass
class SideResult:
    """One side: status (see ``flags.primary_status``), all flags, volume, landmarks."""

    status: str
    flags: list[str] = field(default_factory=list)
    volume_ml: float = 0.0
    head_top_z: float | None = None  # world z (LPS, mm)
    lesser_trochanter_z: float | None = None
    cut_z: float | None = None  # the anatomical cut applied; None when nothing was cut

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["volume_ml"] = round(float(self.volume_ml), 2)
        for key in ("head_top_z", "lesser_trochanter_z", "cut_z"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 1)
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
        from femurscreen.segmentation.classical import ClassicalEngine

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
    image: sitk.Image, *, engine: str = "default", progress: Progress | None = None
) -> SegmentationResult:
    """Segment both proximal femurs of a CT (HU, any direction matrix).

    Raises ``NoFemurError`` when neither side is found. ``progress(fraction, message)`` is
    called at each stage when given.
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
    report(0.8, "post-processing")
    labels, geometry = postprocess(raw, image)
    t_post = time.perf_counter()

    array = sitk.GetArrayViewFromImage(labels)
    ct = sitk.GetArrayViewFromImage(image)
    spacing_zyx = tuple(float(s) for s in image.GetSpacing()[::-1])
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    sides: dict[str, SideResult] = {}
    for value, side in SIDE_NAMES.items():
        geo = geometry[value]
        volume = geo.voxels * voxel_ml
        flags: list[str] = []
        if geo.found and geo.box is not None:
            mask = np.asarray(array[geo.box]) == value
            flags = side_flags(
                volume_ml=volume,
                metal_mm3=metal_volume_mm3(mask, np.asarray(ct[geo.box]), spacing_zyx),  # type: ignore[arg-type]
                geometry_flags=geo.flags,
            )
        sides[side] = SideResult(
            status=primary_status(geo.found, flags),
            flags=flags,
            volume_ml=volume,
            head_top_z=geo.head_top_z,
            lesser_trochanter_z=geo.lesser_trochanter_z,
            cut_z=geo.cut_z,
        )
    timing = {"load": t_loaded - started, "predict": t_predicted - t_loaded}
    timing.update({f"predict_{k}": v for k, v in getattr(model, "timing_s", {}).items()})
    timing["postprocess"] = t_post - t_predicted
    timing["total"] = time.perf_counter() - started
    report(1.0, "done")
    if not any(geometry[v].found for v in SIDE_NAMES):
        raise NoFemurError(
            "no proximal femur found in the field of view (no femoral head beside the pelvis)",
            "check that the scan covers the hips (femoral heads)",
        )
    return SegmentationResult(
        labels=labels, sides=sides, engine=name, timing_s=timing, model=_model_info(model)
    )


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
