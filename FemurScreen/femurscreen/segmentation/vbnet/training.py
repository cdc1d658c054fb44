"""``train_seg``: train the coarse and fine VB-Nets from a cohort CSV and write a weights folder.

Stages run one after the other (coarse, then fine) and can be run separately; each writes its
safetensors file and merges its entry into ``manifest.json`` when it ends. Every epoch ends with
an atomic checkpoint (model + optimizer + history) in ``DIR/checkpoints/``; ``resume=True``
continues from it. Randomness is seeded per (seed, stage, epoch), so a resumed run draws the
same samples as an uninterrupted one.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import SimpleITK as sitk
import torch

from femurscreen import __version__
from femurscreen.atomic import atomic_path
from femurscreen.errors import FemurScreenError, InputError, ModelError
from femurscreen.evaluation.seg_metrics import dice
from femurscreen.labels import LEFT, RIGHT, SIDE_NAMES

from .data import (
    FINE_CROP_OFFSET_MM,
    FINE_CROP_XYZ,
    Case,
    CoarseSampler,
    FineSampler,
    IntensityNorm,
    coarse_input,
    labels_on_grid,
    load_case,
    read_cohort,
)
from .engine import COARSE_CLASSES_2, COARSE_CLASSES_3, hip_centers, resolve_device, side_map
from .losses import dice_ce_loss
from .network import VBNet, check_input_shape, parameter_count
from .weights import (
    DEMO_NOTICE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    load_model,
    read_manifest,
    save_model,
    write_manifest,
)

log = logging.getLogger(__name__)

STAGES = ("coarse", "fine")
_STAGE_ID = {"coarse": 1, "fine": 2}

AUGMENTATION = {
    "intensity": "HU scale 0.9-1.1 and offset +-50 HU (p 0.8), gamma exp(+-0.3) in the clip "
    "window (p 0.3), Gaussian blur sigma 0.3-1.5 mm (p 0.3), Gaussian noise sigma 5-60 HU "
    "(p 0.6)",
    "geometry": "rotation +-10 deg (coarse) / +-12 deg (fine) about each axis and scale 0.9-1.1 "
    "(fine) or coarse spacing x0.9-1.1 (p 0.7)",
    "bone_contrast": "fine: HU above 60 scaled by 0.55-1.1 about 60 (p 0.5, when the "
    "appearance was not redrawn)",
    "appearance": "fine, cases with a tissue map (femurscreen phantom --tissues): SynthSeg-style "
    "per-tissue intensity redrawn per sample (p 0.7): each of air, fat, soft, dense soft, and "
    "cortex/interior of femur, pelvis and spine moved to a mean drawn in wide HU ranges "
    "(trabecular 30-450, cortex 60-900 above it, soft -30-100, fat -200 to -30) with its own "
    "texture scaled 0.4-1.6; pelvis drawn like the femur in 60 % of samples; then a 0.3-0.8 "
    "voxel blur",
    "bias_field": "fine: smooth multiplicative field on HU + 1000 (4^3 control values spread "
    "linearly over the crop, log-sd 0.01-0.06; p 0.5)",
    "deformation": "fine: smooth random deformation over the crop (4^3 control displacements "
    "per axis, sd 1-3 mm, spread linearly; p 0.5) after the affine, image, tissue map and "
    "label alike",
    "spacing": "coarse: source resampled to 0.7-3 mm in-plane, 1-5 mm slices (p 0.3); fine: crop "
    "blurred to the partial volume of 1-3.5 mm in-plane, 1-5 mm slices, sampled on that lattice "
    "and interpolated back to the crop grid (p 0.6)",
    "field_of_view": "coarse: random box of 50-90% per axis kept, rest air (p 0.3; 2/3 keep a "
    "femur voxel inside); fine: air below a plane through the femur's lower 5-60 % or lateral "
    "of its outer 60-95 % (p 0.2)",
    "flip": "coarse: world-x mirror with label swap 1<->2 (p 0.5); fine: right femurs mirrored "
    "to look like left ones (always)",
    "crop_centre": "fine: 1/2 at the femur centroid + N(0, 6 mm), 1/3 on a random femur voxel, "
    "1/6 anywhere within +-1/3 crop of the centroid",
}


@dataclass
class TrainConfig:
    """What ``train_seg`` does; the defaults are those of the shipped architecture."""

    epochs: int = 40
    stages: tuple[str, ...] = STAGES
    seed: int = 0
    device: str | None = None
    val_fraction: float = 0.2
    coarse_spacing: float = 5.0
    fine_spacing: float = 1.0
    fine_crop: tuple[int, int, int] = FINE_CROP_XYZ
    fine_crop_offset: tuple[float, float, float] = FINE_CROP_OFFSET_MM
    # fine crop the training draws (None: ``fine_crop``); smaller crops make CPU fine-tuning
    # affordable, validation and inference keep ``fine_crop``
    fine_train_crop: tuple[int, int, int] | None = None
    head_focus: float = 0.0  # share of fine crops centred on the femoral head (FineSampler.head_p)
    coarse_classes: int = 2  # 2: femur + sides by the body midline; 3: network names sides
    coarse_base_channels: int = 8
    fine_base_channels: int = 16
    norm: str = "group"
    batch_size: int = 2  # fine crops per step (coarse: one whole CT per step)
    iters_per_epoch: int | None = None  # default: one pass over the training cases (per side)
    lr: float = 1e-3
    weight_decay: float = 1e-5
    threads: int | None = None
    workers: int = 0  # sampling processes (0: draw in the training process)
    max_minutes: float | None = None  # per stage: stop after the epoch that passes it
    init_from: Path | None = None  # weights folder whose models start the training
    demo: bool | None = None  # None: a demo unless explicitly turned off
    resume: bool = False
    intensity: IntensityNorm = field(default_factory=IntensityNorm)

    def architecture(self, stage: str) -> dict:
        base = self.coarse_base_channels if stage == "coarse" else self.fine_base_channels
        out = self.coarse_classes if stage == "coarse" else 2
        return VBNet(in_channels=1, out_channels=out, base_channels=base, norm=self.norm).config()

    def train_crop(self) -> tuple[int, int, int]:
        return cast(tuple[int, int, int], tuple(self.fine_train_crop or self.fine_crop))

    def stage_settings(self, stage: str) -> dict:
        """What the weights' manifest entry records (and a checkpoint must agree with)."""
        s: dict[str, Any] = {
            "architecture": self.architecture(stage),
            "intensity": self.intensity.to_dict(),
        }
        if stage == "coarse":
            s["spacing_mm"] = self.coarse_spacing
        else:
            s["spacing_mm"] = self.fine_spacing
            s["crop_size_xyz"] = list(self.fine_crop)
            s["crop_offset_mm"] = list(self.fine_crop_offset)
        return s


def train_seg(
    cohort_csv: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    command_line: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Train the stages in ``config.stages`` and write weights + manifest to ``out_dir``.

    Returns the manifest written. Progress lines (one per epoch) go to ``progress``
    (default: this module's logger, which the CLI sends to stderr).
    """
    cfg = config or TrainConfig()
    say = progress or log.info
    _check_config(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    threads = cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(max(1, int(threads)))
    cohort = read_cohort(cohort_csv)
    say(f"train-seg: reading {len(cohort.rows)} cases from {cohort.path}")
    with ThreadPoolExecutor(max(1, min(8, int(threads)))) as pool:  # reading frees the GIL
        cases = list(pool.map(lambda row: load_case(row, cohort.path.parent), cohort.rows))
    train, val = split_cases(cases, cfg.val_fraction, cfg.seed)
    say(
        f"train-seg: {len(train)} training, {len(val)} validation cases; device {device}, "
        f"{torch.get_num_threads()} threads"
    )
    started = _now()
    entries = {}
    for stage in cfg.stages:
        model, training = _train_stage(stage, train, val, cfg, out, device, say, command_line)
        entry = save_model(model, out / f"{stage}.safetensors")
        entry.update(cfg.stage_settings(stage))
        entry["parameters"] = parameter_count(model)
        entry["classes"] = (
            list(COARSE_CLASSES_3 if cfg.coarse_classes == 3 else COARSE_CLASSES_2)
            if stage == "coarse"
            else ["background", "femur"]
        )
        if stage == "coarse":
            entry["input"] = "whole CT on a world-aligned grid (x toward the patient's left)"
        else:
            entry["input"] = "crop centred on one hip; right crops mirrored in world x"
            entry["mirrored_side"] = "right"
        entry["training"] = training
        entries[stage] = entry
        manifest = _merge_manifest(
            out, entries, cfg, cohort, cases, train, val, started, command_line
        )
        write_manifest(out, manifest)
        say(f"train-seg: wrote {out / entry['file']} and {out / MANIFEST}")
    return read_manifest(out)


def split_cases(cases: list[Case], val_fraction: float, seed: int) -> tuple[list, list]:
    """Split by case (never by crop), reproducibly for a seed."""
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = 0
    if val_fraction > 0 and len(cases) >= 2:
        n_val = min(len(cases) - 1, max(1, round(val_fraction * len(cases))))
    val = [cases[i] for i in sorted(order[:n_val])]
    train = [cases[i] for i in sorted(order[n_val:])]
    return train, val


# ---------------------------------------------------------------------- one stage


def _train_stage(stage, train, val, cfg: TrainConfig, out: Path, device, say, command_line):
    torch.manual_seed(cfg.seed)
    arch = cfg.architecture(stage)
    model = VBNet(**arch).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = out / "checkpoints" / f"{stage}.pt"
    settings = cfg.stage_settings(stage)
    if stage == "fine":
        settings["train_crop_size_xyz"] = list(cfg.train_crop())
        settings["head_focus"] = cfg.head_focus
    start_epoch, history, started = 0, [], _now()
    init: dict | None = None  # the weights this stage started from (fine-tuning)
    if cfg.resume and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state.get("settings") != settings:
            raise FemurScreenError(
                f"the {stage} checkpoint was made with other settings than asked for now",
                "resume with the same --crop/--base-channels options, or drop --resume",
                path=ckpt,
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        started = state["started"]
        init = state.get("initialised_from")  # what the interrupted run started from
        say(f"train-seg {stage}: resuming after epoch {start_epoch} from {ckpt}")
    elif cfg.resume:
        say(f"train-seg {stage}: no checkpoint at {ckpt}; starting from scratch")
    if cfg.init_from is not None and start_epoch == 0:
        init = _initialise(model, Path(cfg.init_from), stage, arch)
        say(f"train-seg {stage}: starting from {init['folder']} (sha256 {init['sha256'][:12]}...)")
    sampler = _sampler(stage, cfg)
    val_sampler = _sampler(stage, cfg, validation=True)
    units = _units(stage, train)
    if not units:
        raise InputError(
            f"no training case has a femur label for the {stage} stage",
            "check the masks of the cohort",
        )
    batch = 1 if stage == "coarse" else max(1, cfg.batch_size)
    iters = cfg.iters_per_epoch or math.ceil(len(units) / batch)
    say(
        f"train-seg {stage}: {parameter_count(model):,} parameters, {iters} steps of {batch} "
        f"per epoch, epochs {start_epoch + 1}..{cfg.epochs}"
    )
    if device.type == "cuda" and stage == "fine":
        torch.backends.cudnn.benchmark = True  # fixed crop size: tune the convolutions once
    val_cache: dict = {}
    stage_t0, stopped_early = time.perf_counter(), False
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, _STAGE_ID[stage], epoch])
        torch.manual_seed(cfg.seed * 100_003 + _STAGE_ID[stage] * 1009 + epoch)
        for group in opt.param_groups:  # polynomial decay, a function of the epoch only
            group["lr"] = cfg.lr * (1 - epoch / cfg.epochs) ** 0.9
        model.train()
        losses = []
        draws = _Draws(
            sampler, stage, units, rng.permutation(len(units)), cfg, epoch, iters * batch
        )
        for x, y in _batches(draws, batch, cfg.workers, device):
            loss = dice_ce_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        metrics = validate(stage, model, val, val_sampler, device, val_cache)
        record = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "loss_first_step": losses[0],
            "loss_last_step": losses[-1],
            "lr": opt.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - t0, 1),
            **metrics,
        }
        history.append(record)
        dice = metrics.get("val_dice_mean")
        say(
            f"train-seg {stage} epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.4f} "
            f"val Dice {'n/a' if dice is None else f'{dice:.3f}'}"
            + "".join(
                f" {k[9:]} {v:.3f}"
                for k, v in metrics.items()
                if k.startswith("val_dice_") and k != "val_dice_mean" and v is not None
            )
            + (
                f", hip centre error max {metrics['val_center_error_mm_max']:.1f} mm"
                if "val_center_error_mm_max" in metrics
                else ""
            )
            + f" ({record['seconds']:.0f} s)"
        )
        _save_checkpoint(ckpt, model, opt, epoch + 1, history, settings, started, init)
        minutes = (time.perf_counter() - stage_t0) / 60
        if cfg.max_minutes and minutes >= cfg.max_minutes and epoch + 1 < cfg.epochs:
            stopped_early = True
            say(
                f"train-seg {stage}: time budget of {cfg.max_minutes:g} min used after epoch "
                f"{epoch + 1}/{cfg.epochs}; writing these weights (--resume continues)"
            )
            break
    final = history[-1] if history else {}
    training = {
        "command_line": command_line or " ".join(sys.argv),
        "started": started,
        "finished": _now(),
        "epochs": cfg.epochs,
        "epochs_done": len(history),
        "stopped_early_by_time_budget": stopped_early,
        "steps_per_epoch": iters,
        "batch_size": batch,
        "optimizer": f"AdamW lr {cfg.lr} (poly 0.9 decay per epoch), weight decay "
        f"{cfg.weight_decay}",
        "loss": "cross-entropy + soft Dice (foreground classes, batch Dice)",
        "seed": cfg.seed,
        "initialised_from": init,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "sampling_workers": cfg.workers,
        **(
            {"train_crop_size_xyz": list(cfg.train_crop()), "head_focus": cfg.head_focus}
            if stage == "fine"
            else {}
        ),
        "augmentation": AUGMENTATION,
        "train_cases": [c.case_id for c in train],
        "val_cases": [c.case_id for c in val],
        "final_metrics": {k: v for k, v in final.items() if k.startswith("val_") or k == "loss"},
        "history": history,
    }
    return model.eval(), training


def _initialise(model: VBNet, folder: Path, stage: str, arch: dict) -> dict:
    """Load a verified weights file of the same architecture into ``model`` (fine-tuning)."""
    loaded, entry = load_model(folder, stage)
    if loaded.config() != arch:
        raise FemurScreenError(
            f"the {stage} model in {folder} has another architecture ({loaded.config()}) than "
            f"asked for ({arch})",
            "use the same --base-channels/--coarse-classes as those weights, or drop --init-from",
            path=folder,
        )
    model.load_state_dict(loaded.state_dict())
    return {"folder": folder.name, "sha256": entry["sha256"]}


def _sampler(stage: str, cfg: TrainConfig, validation: bool = False):
    """The stage's sampler; fine validation crops have the inference size, training crops
    ``fine_train_crop`` and the head focus."""
    if stage == "coarse":
        return CoarseSampler(cfg.coarse_spacing, cfg.intensity)
    crop = cast(tuple[int, int, int], tuple(cfg.fine_crop)) if validation else cfg.train_crop()
    offset = cast(tuple[float, float, float], tuple(cfg.fine_crop_offset))
    head = 0.0 if validation else cfg.head_focus
    return FineSampler(crop, cfg.fine_spacing, cfg.intensity, offset, head_p=head)


def _units(stage: str, cases: list[Case]) -> list:
    """What one step draws from: a case (coarse) or a (case, side) with that femur (fine)."""
    if stage == "coarse":
        return [c for c in cases if c.centroids]
    return [(c, side) for c in cases for side in (LEFT, RIGHT) if side in c.centroids]


def _draw(sampler, stage: str, unit, rng, coarse_classes: int):
    """One (input, target) pair; a 2-class coarse target merges the world-correct sides."""
    if stage == "coarse":
        x, y = sampler.pair(unit, rng)
        return (x, (y > 0).astype(np.uint8)) if coarse_classes == 2 else (x, y)
    case, side = unit
    return sampler.pair(case, side, rng)


class _Draws(torch.utils.data.Dataset):
    """One epoch's training pairs; draw ``k`` has its own seed (seed, stage, epoch, k).

    Seeding each draw, not the epoch's stream, makes the pairs independent of how many
    processes draw them and of their order, so ``--workers`` changes speed, not results.
    """

    def __init__(self, sampler, stage, units, order, cfg: TrainConfig, epoch: int, n: int):
        self.sampler, self.stage, self.units, self.order = sampler, stage, units, order
        self.key = (cfg.seed, _STAGE_ID[stage], epoch)
        self.coarse_classes, self.n = cfg.coarse_classes, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int):
        rng = np.random.default_rng([*self.key, k])
        unit = self.units[self.order[k % len(self.units)]]
        x, y = _draw(self.sampler, self.stage, unit, rng, self.coarse_classes)
        return torch.from_numpy(x)[None], torch.from_numpy(y.astype(np.uint8))  # widened later


def _quiet_worker(_: int) -> None:
    """Sampling processes use one thread each: the parallelism is the processes."""
    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _batches(draws: _Draws, batch: int, workers: int, device):
    """Batches of ``draws`` on ``device``, drawn in ``workers`` forked processes (0: here)."""
    if workers > 0 and "fork" not in multiprocessing.get_all_start_methods():
        log.warning("train-seg: no fork() on this system; drawing samples in this process")
        workers = 0
    forked = workers > 0
    loader = torch.utils.data.DataLoader(
        draws,
        batch_size=batch,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=_quiet_worker if forked else None,
        # forked: the cases in memory are shared with the workers, not pickled
        multiprocessing_context="fork" if forked else None,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if forked else None,
    )
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True).long()


@torch.no_grad()
def validate(
    stage: str, model: VBNet, cases: list[Case], sampler, device, cache: dict | None = None
) -> dict:
    """Dice per side on unaugmented validation inputs (the coarse grid or the centred crop).

    The coarse stage also reports how far the hip centres it would hand to the fine pass lie
    from the true femur centroids (mm), which is what the coarse model is for.
    """
    if not cases:
        return {"val_dice_mean": None}
    cache = {} if cache is None else cache  # without a cache, inputs are built per call
    model.eval()
    scores: dict[int, list[float]] = {LEFT: [], RIGHT: []}
    key: tuple
    errors: list[float] = []
    for case in cases:
        if stage == "coarse":
            key = (stage, case.case_id)
            if key not in cache:
                hu, grid = coarse_input(case.ct, sampler.spacing)
                y = labels_on_grid(case.mask, grid, (LEFT, RIGHT), shrink_to=sampler.spacing)
                cache[key] = (hu, grid, y)
            hu, grid, y = cache[key]
            classes = _predict(model, sampler.norm(hu), device)
            sides = side_map(classes, hu, model.config()["out_channels"])
            found = hip_centers(sides, grid, 2.0)
            for side in (LEFT, RIGHT):
                if side in case.centroids:
                    scores[side].append(dice(sides == side, y == side, empty=1.0))
                    miss = side not in found
                    errors.append(
                        999.0 if miss else float(np.linalg.norm(found[side] - case.centroids[side]))
                    )
        else:
            for side in (LEFT, RIGHT):
                if side in case.centroids:
                    key = (stage, case.case_id, side)
                    if key not in cache:
                        cache[key] = sampler.pair(case, side)
                    x, y = cache[key]
                    scores[side].append(dice(_predict(model, x, device) == 1, y == 1, empty=1.0))
    out = {
        f"val_dice_{SIDE_NAMES[s]}": (float(np.mean(v)) if v else None) for s, v in scores.items()
    }
    every = [d for v in scores.values() for d in v]
    out["val_dice_mean"] = float(np.mean(every)) if every else None
    if errors:
        out["val_center_error_mm_max"] = float(np.max(errors))
    return out


def _predict(model: VBNet, x: np.ndarray, device) -> np.ndarray:
    logits = model(torch.from_numpy(x)[None, None].to(device))
    return logits.argmax(dim=1)[0].cpu().numpy()


# ---------------------------------------------------------------------- files


def _save_checkpoint(path: Path, model, opt, epoch, history, settings, started, init) -> None:
    state = {
        "initialised_from": init,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "epoch": epoch,
        "history": history,
        "settings": settings,
        "started": started,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _merge_manifest(out, entries, cfg, cohort, cases, train, val, started, command_line) -> dict:
    """This run's entries over those of an earlier run in the same folder (e.g. --fine-only)."""
    try:
        manifest = read_manifest(out)
    except ModelError:
        manifest = {}
    models = dict(manifest.get("models", {}))
    models.update(entries)
    demo = True if cfg.demo is None else bool(cfg.demo)
    manifest.update(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "demo": demo,
            "intensity": cfg.intensity.to_dict(),
            "models": models,
            "training_data": {
                "cohort": cohort.path.name,
                "n_cases": len(cases),
                "n_train": len(train),
                "n_val": len(val),
                # demo weights are treated as trained on synthetic data: this project has no
                # clinical data; whether the cohort itself said so is recorded beside it
                "synthetic": bool(cohort.synthetic or demo),
                "synthetic_marked_in_cohort": cohort.synthetic,
                "description": "synthetic CT phantoms (femurscreen phantom)"
                if cohort.synthetic or demo
                else "cohort CSV not marked synthetic",
            },
            "command_line": command_line or " ".join(sys.argv),
            "started": started,
            "finished": _now(),
            "software": {
                "femurscreen": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
    )
    if demo:
        manifest["demo_notice"] = DEMO_NOTICE
    else:
        manifest.pop("demo_notice", None)
    return manifest


def _check_config(cfg: TrainConfig) -> None:
    bad = [s for s in cfg.stages if s not in STAGES]
    if bad or not cfg.stages:
        raise FemurScreenError(f"unknown training stage(s) {bad}", "use coarse and/or fine")
    try:
        check_input_shape(cfg.fine_crop)
        check_input_shape(cfg.train_crop())
    except ValueError as exc:
        raise FemurScreenError(str(exc), "choose --crop sizes that are multiples of 16") from exc
    if cfg.coarse_classes not in (2, 3):
        raise FemurScreenError("--coarse-classes must be 2 or 3")
    if not 0 <= cfg.head_focus <= 1:
        raise FemurScreenError("--head-focus must be in [0, 1]")
    if cfg.epochs < 1:
        raise FemurScreenError("--epochs must be at least 1")
    if not 0 <= cfg.val_fraction < 1:
        raise FemurScreenError("--val-fraction must be in [0, 1)")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


__all__ = ["AUGMENTATION", "TrainConfig", "split_cases", "train_seg", "validate"]
