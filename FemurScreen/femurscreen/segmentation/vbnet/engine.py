"""Coarse-to-fine VB-Net inference: locate each hip at ~5 mm, segment it at ~1 mm.

1. Coarse: the whole CT on a world-aligned 5 mm grid -> background / left / right. Because the
   grid is world-aligned, the network's "left" is the patient's left whatever the file's voxel
   order. Optionally averaged with its own world-x mirror (channels swapped back).
2. Each side's largest coarse component gives the hip's world centroid.
3. Fine: a fixed-size 1 mm crop centred there. ONE fine model serves both sides: the right
   crop is a mirrored grid (x runs toward world -x), so the right femur looks like a left one;
   resampling the result back through that grid un-mirrors it.
4. The femur probability goes back onto the part of the input grid the crop covers (linear
   interpolation); voxels claimed by both sides go to the more probable one; the largest
   component per side is kept. The result is a 0/1/2 uint8 label map in the input's geometry.

Post-processing proper (holes, anatomical cut) belongs to ``femurscreen.segmentation``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from femurscreen.errors import FemurScreenError, InputError, ModelError
from femurscreen.labels import LEFT, RIGHT

from .data import (
    FINE_CROP_OFFSET_MM,
    FINE_CROP_XYZ,
    IntensityNorm,
    coarse_input,
    fine_grid,
    flip_world_x,
)
from .geometry import Grid, sub_grid
from .network import VBNet
from .weights import DEMO_NOTICE, load_model, read_manifest

log = logging.getLogger(__name__)

COARSE_CLASSES_3 = ("background", "left", "right")
COARSE_CLASSES_2 = ("background", "femur")


def default_weights_dir() -> Path:
    from femurscreen.resources import resource_dir

    return resource_dir() / "Models" / "vbnet-demo"


@dataclass(frozen=True)
class InferenceSettings:
    """Everything inference needs besides the two networks (read from the manifest)."""

    coarse_spacing: float = 5.0
    fine_spacing: float = 1.0
    crop_xyz: tuple[int, int, int] = FINE_CROP_XYZ
    crop_offset_mm: tuple[float, float, float] = FINE_CROP_OFFSET_MM
    norm: IntensityNorm = field(default_factory=IntensityNorm)
    coarse_classes: tuple[str, ...] = COARSE_CLASSES_2
    min_hip_ml: float = 2.0  # smaller coarse blobs are noise, not a hip
    threshold: float = 0.5
    coarse_mirror_average: bool = True

    @classmethod
    def from_manifest(cls, manifest: dict) -> InferenceSettings:
        coarse, fine = manifest["models"]["coarse"], manifest["models"]["fine"]
        return cls(
            coarse_spacing=float(coarse["spacing_mm"]),
            fine_spacing=float(fine["spacing_mm"]),
            crop_xyz=cast(tuple[int, int, int], tuple(int(v) for v in fine["crop_size_xyz"])),
            crop_offset_mm=cast(
                tuple[float, float, float],
                tuple(float(v) for v in fine.get("crop_offset_mm", (0, 0, 0))),
            ),
            norm=IntensityNorm.from_dict(manifest["intensity"]),
            coarse_classes=tuple(coarse["classes"]),
        )


def resolve_device(device: str | None) -> torch.device:
    """'cuda' when asked for or present, else 'cpu'; a clear error for an absent GPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise FemurScreenError(
            f"device {device!r} was asked for but PyTorch sees no CUDA GPU", "use --device cpu"
        )
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise FemurScreenError(f"unknown device {device!r}", "use cpu or cuda") from exc


class VBNetEngine:
    """Proximal femur segmentation with a coarse and a fine VB-Net (see the module docstring)."""

    name = "vbnet"

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
        self.weights_dir: Path | None = folder  # None: networks given in memory (from_models)
        self.manifest = read_manifest(folder)
        dev = resolve_device(device)
        coarse, _ = load_model(folder, "coarse", self.manifest, str(dev))
        fine, _ = load_model(folder, "fine", self.manifest, str(dev))
        try:
            settings = InferenceSettings.from_manifest(self.manifest)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"the weights manifest lacks inference settings ({exc})",
                "retrain with 'femurscreen train-seg' or reinstall the model files",
                folder / "manifest.json",
            ) from exc
        self._setup(coarse, fine, settings, dev, threads)

    @classmethod
    def from_models(
        cls,
        coarse: torch.nn.Module,
        fine: torch.nn.Module,
        settings: InferenceSettings | None = None,
        device: str | None = None,
        threads: int | None = None,
    ) -> VBNetEngine:
        """An engine around networks already in memory (training, tests, benchmarks)."""
        engine = cls.__new__(cls)
        engine.weights_dir = None
        engine.manifest = {"demo": True, "demo_notice": DEMO_NOTICE}
        settings = settings or InferenceSettings()
        engine._setup(coarse, fine, settings, resolve_device(device), threads)
        return engine

    def _setup(self, coarse, fine, settings: InferenceSettings, device, threads) -> None:
        if threads:
            torch.set_num_threads(int(threads))
        self.device = device
        self.coarse = coarse.to(device).eval()
        self.fine = fine.to(device).eval()
        self.settings = settings
        if any(int(c) % 16 for c in settings.crop_xyz):
            raise ModelError(f"fine crop {settings.crop_xyz} is not a multiple of 16")

    @property
    def demo(self) -> bool:
        return bool(self.manifest.get("demo", False))

    @property
    def demo_notice(self) -> str | None:
        return self.manifest.get("demo_notice") if self.demo else None

    def describe(self) -> dict:
        """What a report should say about the model: folder, demo status, files and hashes."""
        models = self.manifest.get("models", {})
        return {
            "engine": self.name,
            # the folder's name only: an install path says nothing useful in a report
            "name": None if self.weights_dir is None else Path(self.weights_dir).name,
            "demo": self.demo,
            "demo_notice": self.demo_notice,
            "models": {
                name: {k: entry.get(k) for k in ("file", "sha256", "parameters", "spacing_mm")}
                for name, entry in models.items()
            },
            "device": str(self.device),
        }

    # ------------------------------------------------------------------ inference

    def predict(self, image: sitk.Image) -> sitk.Image:
        """Raw 0/1/2 label map (1 = patient's left femur) in ``image``'s own geometry."""
        return self.predict_with_details(image)[0]

    def predict_with_details(self, image: sitk.Image) -> tuple[sitk.Image, dict]:
        """The label map plus the hip centres found, the voxels per side and step timings."""
        _check_image(image)
        times: dict[str, float] = {}
        t = time.perf_counter()
        hips = self.locate(image)
        times["coarse_s"] = time.perf_counter() - t
        target = Grid.of(image)
        probs: dict[int, tuple[tuple[slice, ...], np.ndarray]] = {}
        for side, center in hips.items():
            t = time.perf_counter()
            back = self.segment_side(image, side, center, target)
            if back is not None:
                probs[side] = back
            times[f"fine_{side}_s"] = time.perf_counter() - t
        t = time.perf_counter()
        labels = np.zeros(target.shape_zyx, np.uint8)
        for side, mask, slices in self._assign(probs):
            labels[slices][mask] = side
        out = sitk.GetImageFromArray(labels)
        out.CopyInformation(image)
        times["assemble_s"] = time.perf_counter() - t
        details = {
            "hip_centers_world": {int(s): [float(v) for v in c] for s, c in hips.items()},
            "voxels": {int(s): int((labels == s).sum()) for s in (LEFT, RIGHT)},
            "timings": times,
        }
        return out, details

    def locate(self, image: sitk.Image) -> dict[int, np.ndarray]:
        """World centre of each hip from the coarse pass: {LEFT: xyz, RIGHT: xyz} (sides found)."""
        s = self.settings
        hu, grid = coarse_input(image, s.coarse_spacing)
        x = s.norm(hu)
        probs = self._forward(self.coarse, x)
        if s.coarse_mirror_average:
            mirrored, _ = flip_world_x(x)
            pm = self._forward(self.coarse, mirrored)[:, :, :, ::-1]
            if len(s.coarse_classes) == 3:
                pm = pm[[0, 2, 1]]  # the mirror's "left" is our right
            probs = (probs + pm) / 2
        sides = side_map(probs.argmax(axis=0), hu, len(s.coarse_classes))
        return hip_centers(sides, grid, s.min_hip_ml)

    def segment_side(
        self, image: sitk.Image, side: int, center: np.ndarray, target: Grid | None = None
    ) -> tuple[tuple[slice, ...], np.ndarray] | None:
        """Femur probability of one side on the input grid: (numpy slices, sub-array)."""
        s = self.settings
        grid = fine_grid(center, s.crop_xyz, s.fine_spacing, side, s.crop_offset_mm)
        hu = sitk.GetArrayFromImage(grid.resample(image))
        prob = self._forward(self.fine, s.norm(hu))[1]
        target = target or Grid.of(image)
        back = sub_grid(target, grid.corners_world())
        if back is None:
            return None
        sub, slices = back
        on_input = sub.resample(grid.image(prob), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return slices, sitk.GetArrayFromImage(on_input)

    # ------------------------------------------------------------------ helpers

    def _forward(self, model: torch.nn.Module, x_zyx: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(x_zyx, dtype=np.float32))[None, None]
        with torch.inference_mode():
            p = torch.softmax(model(x.to(self.device)), dim=1)[0]
        return p.float().cpu().numpy()

    def _assign(self, probs: dict[int, tuple[tuple[slice, ...], np.ndarray]]):
        """Threshold each side; a voxel both sides claim goes to the more probable one."""
        thr = self.settings.threshold
        masks = {side: p >= thr for side, (_, p) in probs.items()}
        if LEFT in probs and RIGHT in probs:
            (sl, pl), (sr, pr) = probs[LEFT], probs[RIGHT]
            inter = tuple(
                slice(max(a.start, b.start), min(a.stop, b.stop))
                for a, b in zip(sl, sr, strict=True)
            )
            if all(i.stop > i.start for i in inter):
                il, ir = _relative(inter, sl), _relative(inter, sr)
                left_wins = pl[il] >= pr[ir]
                masks[LEFT][il] &= left_wins
                masks[RIGHT][ir] &= ~left_wins
        for side, mask in masks.items():
            comp = _largest_component(mask)
            if comp is not None:
                yield side, comp, probs[side][0]


def side_map(classes: np.ndarray, hu: np.ndarray, n_classes: int) -> np.ndarray:
    """Coarse classes -> 0 / LEFT / RIGHT on the world-aligned coarse grid.

    Three classes: the network names the sides. Two classes (femur / background): a femur
    voxel's side is the side of the body's midline it lies on, in world x (array x is world x
    on this grid). Femurs lie 6-10 cm from the midline; the midline is the x centroid of the
    body (> -400 HU), which a field of view cut through one hip moves by far less than that.
    """
    if n_classes == 3:
        return classes.astype(np.uint8)
    femur = classes == 1
    sides = np.zeros(classes.shape, np.uint8)
    body = np.argwhere(hu > -400.0)
    if not femur.any() or len(body) == 0:
        return sides
    mid = float(body[:, 2].mean())
    x_index = np.arange(classes.shape[-1])
    sides[femur & (x_index > mid)] = LEFT
    sides[femur & (x_index <= mid)] = RIGHT
    return sides


def hip_centers(sides: np.ndarray, grid: Grid, min_ml: float) -> dict[int, np.ndarray]:
    """World centroid of each side's largest coarse blob (blobs under ``min_ml`` ignored)."""
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    min_voxels = max(1, int(np.ceil(min_ml / voxel_ml)))
    found = {}
    for side in (LEFT, RIGHT):
        comp = _largest_component(sides == side)
        if comp is not None and comp.sum() >= min_voxels:
            found[side] = _centroid_world(comp, grid)
    if LEFT in found and RIGHT in found and found[LEFT][0] <= found[RIGHT][0]:
        log.warning("coarse VB-Net put the left hip at smaller world x than the right")
    return found


def _check_image(image: sitk.Image) -> None:
    if not isinstance(image, sitk.Image):
        raise InputError(f"expected a SimpleITK image, got {type(image).__name__}")
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("VB-Net needs a 3-D scalar CT image", "load a single 3-D CT series")


def _relative(region: tuple[slice, ...], within: tuple[slice, ...]) -> tuple[slice, ...]:
    """``region`` (absolute slices) as slices of the sub-array that starts at ``within``."""
    return tuple(
        slice(r.start - w.start, r.stop - w.start) for r, w in zip(region, within, strict=True)
    )


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    lab, n = ndimage.label(mask)
    if n == 0:
        return None
    if n == 1:
        return lab == 1
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (int(np.argmax(sizes)) + 1)


def _centroid_world(mask_zyx: np.ndarray, grid: Grid) -> np.ndarray:
    idx = np.argwhere(mask_zyx).mean(axis=0)[::-1]  # x, y, z
    return grid.index_to_world(idx[None, :])[0]


__all__ = ["InferenceSettings", "VBNet", "VBNetEngine", "default_weights_dir"]
