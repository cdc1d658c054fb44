"""VB-Net: network shape, training + resume, weights verification, world-correct sides.

Every volume here is rendered from one world-space description of a small pelvis (two femurs
at world x = +-55 mm, the patient's LEFT one at +x), so the same anatomy can be put onto grids
with identity, flipped and oblique direction matrices and the answers compared in world space.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from femurscreen.errors import FemurScreenError, ModelError
from femurscreen.labels import LEFT, RIGHT
from femurscreen.segmentation.vbnet import (
    InferenceSettings,
    TrainConfig,
    VBNet,
    VBNetEngine,
    load_model,
    parameter_count,
    read_manifest,
    save_model,
    train_seg,
)
from femurscreen.segmentation.vbnet.data import (
    CoarseSampler,
    FineSampler,
    IntensityNorm,
    flip_world_x,
    load_case,
)
from femurscreen.segmentation.vbnet.geometry import Grid, centered_grid
from femurscreen.segmentation.vbnet.weights import MANIFEST
from torch import nn

# ----------------------------------------------------------------------------- phantoms


def _segment_distance(p: np.ndarray, a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1)


def _femur(p: np.ndarray, sx: float) -> np.ndarray:
    """Femur of the side whose head is at world x = 55 * sx (chiral: head medial, shaft lateral)."""
    head = np.array([55.0 * sx, 0.0, 20.0])
    troch = np.array([82.0 * sx, 0.0, 5.0])
    knee = np.array([74.0 * sx, 5.0, -90.0])
    inside = np.linalg.norm(p - head, axis=1) < 14.0
    inside |= _segment_distance(p, head, troch) < 8.0
    inside |= _segment_distance(p, troch, knee) < 9.0
    inside |= np.linalg.norm(p - (troch + [5.0 * sx, 0, 6.0]), axis=1) < 9.0  # greater trochanter
    return inside


def render(grid: Grid, seed: int = 0, noise: float = 20.0) -> tuple[sitk.Image, sitk.Image]:
    """CT (int16 HU) and 0/1/2 mask of the world phantom sampled on ``grid``."""
    shape = grid.shape_zyx
    zyx = np.indices(shape).reshape(3, -1).T.astype(float)
    p = grid.index_to_world(zyx[:, ::-1])
    x, y = p[:, 0], p[:, 1]
    hu = np.full(len(p), -1000.0)
    body = (x / 125.0) ** 2 + (y / 85.0) ** 2 < 1.0
    hu[body] = -90.0  # fat
    hu[(x / 115.0) ** 2 + (y / 75.0) ** 2 < 1.0] = 40.0  # muscle
    pelvis = np.abs(np.linalg.norm(p - [0, 45.0, 40.0], axis=1) - 45.0) < 6.0  # sacrum ring
    for sx in (1.0, -1.0):  # acetabular cups: medial half-shells around each head
        cup = np.abs(np.linalg.norm(p - [55.0 * sx, 0, 20.0], axis=1) - 19.0) < 3.0
        pelvis |= cup & (x * sx < 55.0)
    hu[pelvis] = 350.0
    left, right = _femur(p, 1.0), _femur(p, -1.0)
    hu[left | right] = 700.0
    hu += np.random.default_rng(seed).normal(0.0, noise, len(p))
    mask = np.zeros(len(p), np.uint8)
    mask[left], mask[right] = LEFT, RIGHT
    ct = grid.image(np.round(hu).astype(np.int16).reshape(shape))
    return ct, grid.image(mask.reshape(shape))


def identity_grid(spacing: float = 4.0, extent=(280.0, 200.0, 200.0)) -> Grid:
    size = tuple(int(round(e / spacing)) for e in extent)
    return centered_grid(np.array([0.0, 0.0, -20.0]), size, (spacing,) * 3)


def flipped_grid(spacing: float = 4.0) -> Grid:
    """Same box, but arrays run toward world -x and -y (direction diag(-1, -1, 1))."""
    g = identity_grid(spacing)
    center = g.index_to_world((np.asarray(g.size)[None, :] - 1) / 2)[0]
    half = (np.asarray(g.size) - 1) / 2 * spacing
    direction = np.diag([-1.0, -1.0, 1.0])
    origin = center - direction @ half
    return Grid(g.size, g.spacing, tuple(origin), tuple(direction.ravel()))


def oblique_grid(spacing: float = 4.0, degrees: float = 25.0) -> Grid:
    """A grid rotated about z and tilted about x, with anisotropic spacing."""
    a, b = math.radians(degrees), math.radians(10.0)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    direction = rz @ rx
    sp = np.array([spacing, spacing * 0.9, spacing * 1.2])
    size = np.array([80, 64, 56])
    half = (size - 1) / 2 * sp
    origin = np.array([0.0, 0.0, -20.0]) - direction @ half
    return Grid(tuple(int(s) for s in size), tuple(sp), tuple(origin), tuple(direction.ravel()))


def world_centroid(labels: sitk.Image, value: int) -> np.ndarray:
    arr = sitk.GetArrayViewFromImage(labels)
    idx = np.argwhere(arr == value)
    assert len(idx), f"label {value} is empty"
    return Grid.of(labels).index_to_world(idx[:, ::-1].astype(float)).mean(axis=0)


def write_cohort(folder: Path, n: int, spacing: float = 4.0) -> Path:
    rows = []
    grids = [identity_grid(spacing), flipped_grid(spacing)]
    for i in range(n):
        ct, mask = render(grids[i % 2], seed=i)
        sitk.WriteImage(ct, str(folder / f"case{i}_ct.nii.gz"))
        sitk.WriteImage(mask, str(folder / f"case{i}_mask.nii.gz"))
        rows.append(
            {
                "case_id": f"case{i}",
                "ct": f"case{i}_ct.nii.gz",
                "mask": f"case{i}_mask.nii.gz",
                "t_score": "-1.5",
                "bone_status": "osteopenia",
            }
        )
    path = folder / "cohort.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# ----------------------------------------------------------------------------- network


def test_network_output_shape_and_size():
    net = VBNet(in_channels=1, out_channels=3, base_channels=4).eval()
    with torch.no_grad():
        y = net(torch.zeros(2, 1, 32, 16, 48))
    assert y.shape == (2, 3, 32, 16, 48)
    full = VBNet(base_channels=16)
    n = parameter_count(full)
    # published width: input 16 ch, levels 32-256 with bottleneck units -> about 1.9 M
    assert 1_000_000 < n < 3_000_000, n
    assert parameter_count(VBNet(base_channels=8)) < n / 3
    assert VBNet(**full.config()).config() == full.config()


def test_network_refuses_sizes_not_multiple_of_16():
    net = VBNet(base_channels=4)
    with pytest.raises(ValueError, match="multiple of 16"):
        net(torch.zeros(1, 1, 32, 30, 32))


# ----------------------------------------------------------------------------- augmentation


def test_world_x_flip_swaps_labels_and_keeps_them_world_correct():
    ct, mask = render(identity_grid(5.0))
    hu, labels = sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(mask)
    fhu, flab = flip_world_x(hu, labels)
    xs = {v: np.argwhere(flab == v)[:, 2].mean() for v in (LEFT, RIGHT)}
    assert xs[LEFT] > xs[RIGHT]  # label 1 is still the femur at world +x
    assert (flab > 0).sum() == (labels > 0).sum()
    assert np.all(fhu[flab > 0] > 400)  # and it sits on bone


def test_augmented_coarse_samples_keep_left_at_world_plus_x(tmp_path):
    ct, mask = render(identity_grid(4.0))
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(mask, str(tmp_path / "mask.nii.gz"))
    case = load_case({"case_id": "a", "ct": "ct.nii.gz", "mask": "mask.nii.gz"}, tmp_path)
    sampler = CoarseSampler(spacing=8.0)
    flips = 0
    for seed in range(8):
        x, y = sampler.pair(case, np.random.default_rng(seed))
        assert x.shape == y.shape and all(s % 16 == 0 for s in x.shape)
        present = [v for v in (LEFT, RIGHT) if (y == v).any()]
        if len(present) == 2:
            xs = {v: np.argwhere(y == v)[:, 2].mean() for v in present}
            assert xs[LEFT] > xs[RIGHT], f"seed {seed}: labels on the wrong side"
        bone = x[y > 0]
        assert bone.size == 0 or np.median(bone) > IntensityNorm()(np.array(200.0))
        flips += 1
    assert flips == 8


def test_fine_crops_show_a_right_femur_as_a_left_one(tmp_path):
    # the phantom is mirror-symmetric in world x, so the mirrored right crop must equal the
    # left crop; an unmirrored right crop would put the head on the other side of the array
    ct, mask = render(identity_grid(2.0, (240.0, 120.0, 200.0)), noise=0.0)
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(mask, str(tmp_path / "mask.nii.gz"))
    case = load_case({"case_id": "a", "ct": "ct.nii.gz", "mask": "mask.nii.gz"}, tmp_path)
    sampler = FineSampler(crop_xyz=(32, 32, 48), spacing=2.0)
    xl, yl = sampler.pair(case, LEFT)
    xr, yr = sampler.pair(case, RIGHT)
    assert yl.sum() > 500
    assert np.mean(yl == yr) > 0.99
    assert np.corrcoef(xl.ravel(), xr.ravel())[0, 1] > 0.95
    head_x = np.argwhere(yl[-12:] > 0)[:, 2].mean()  # top of the crop: the femoral head
    assert head_x < yl.shape[2] / 2  # medial = low x in a left-looking crop
    x_aug, y_aug = sampler.pair(case, RIGHT, np.random.default_rng(1))
    assert x_aug.shape == xl.shape and y_aug.any()


def test_load_case_refuses_swapped_sides(tmp_path):
    ct, mask = render(identity_grid(6.0))
    swapped = sitk.GetArrayFromImage(mask)
    swapped = np.array([0, 2, 1], np.uint8)[swapped]
    bad = sitk.GetImageFromArray(swapped)
    bad.CopyInformation(mask)
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(bad, str(tmp_path / "mask.nii.gz"))
    from femurscreen.errors import InputError

    with pytest.raises(InputError, match="swapped"):
        load_case({"case_id": "a", "ct": "ct.nii.gz", "mask": "mask.nii.gz"}, tmp_path)


# ----------------------------------------------------------------------------- weights


def _write_weights(folder: Path, coarse: VBNet, fine: VBNet, crop=(32, 32, 32)) -> None:
    models = {}
    for name, net, sp in (("coarse", coarse, 8.0), ("fine", fine, 2.0)):
        entry = save_model(net, folder / f"{name}.safetensors")
        entry.update({"architecture": net.config(), "spacing_mm": sp})
        entry["classes"] = ["background", "left", "right"][: net.config()["out_channels"]]
        models[name] = entry
    models["fine"]["crop_size_xyz"] = list(crop)
    manifest = {
        "format": "femurscreen-vbnet",
        "format_version": 1,
        "demo": True,
        "demo_notice": "DEMO",
        "intensity": IntensityNorm().to_dict(),
        "models": models,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_weights_round_trip_and_tamper_refusal(tmp_path):
    torch.manual_seed(0)
    coarse = VBNet(out_channels=3, base_channels=4)
    fine = VBNet(out_channels=2, base_channels=4)
    _write_weights(tmp_path, coarse, fine)
    loaded, entry = load_model(tmp_path, "fine")
    for k, v in fine.state_dict().items():  # stored as float16, loaded into float32
        assert loaded.state_dict()[k].dtype == v.dtype
        assert torch.equal(v.half().float() if v.is_floating_point() else v, loaded.state_dict()[k])
    assert entry["architecture"]["base_channels"] == 4
    engine = VBNetEngine(tmp_path, device="cpu")
    assert engine.demo and engine.settings.crop_xyz == (32, 32, 32)
    info = engine.describe()
    assert info["demo_notice"] == "DEMO" and info["models"]["fine"]["sha256"] == entry["sha256"]

    # one byte changed in the weights file -> refused before deserialising, file named
    path = tmp_path / "fine.safetensors"
    good = path.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="fine.safetensors") as err:
        load_model(tmp_path, "fine")
    assert "sha256" in str(err.value) and "retrain" in str(err.value)
    with pytest.raises(ModelError, match="fine.safetensors"):
        VBNetEngine(tmp_path)
    path.write_bytes(good)

    # the manifest's sha256 edited -> refused
    manifest = read_manifest(tmp_path)
    manifest["models"]["coarse"]["sha256"] = "0" * 64
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="coarse.safetensors"):
        load_model(tmp_path, "coarse")

    # a manifest pointing outside its folder -> refused
    manifest["models"]["coarse"]["file"] = "../coarse.safetensors"
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="unsafe"):
        load_model(tmp_path, "coarse")

    # missing file, missing manifest
    (tmp_path / "fine.safetensors").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(tmp_path, "fine")
    with pytest.raises(ModelError, match="manifest"):
        VBNetEngine(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- inference geometry


class BrightSidesCoarse(nn.Module):
    """Stand-in coarse net: bone-bright voxels, LEFT where array x is above their mean x.

    It only gives world-correct sides if the engine really shows it a world-aligned grid.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x > IntensityNorm()(np.array(550.0)).item()
        idx = torch.arange(x.shape[-1]).expand_as(x)
        mid = idx[bright].float().mean()
        left = bright & (idx > mid)
        right = bright & (idx <= mid)
        out = torch.cat([(~bright).float(), left.float(), right.float()], dim=1)
        return out * 20.0


class BrightFemurCoarse(nn.Module):
    """Stand-in two-class coarse net: bone-bright voxels are femur; sides come from the engine."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = (x > IntensityNorm()(np.array(550.0)).item()).float()
        return torch.cat([1 - bright, bright], dim=1) * 20.0


class LateralHalfFine(nn.Module):
    """Stand-in fine net: bright voxels in the upper-x half of the crop, i.e. the lateral half
    of a LEFT femur. A right femur gets its lateral half only if its crop was mirrored."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x > IntensityNorm()(np.array(550.0)).item()
        idx = torch.arange(x.shape[-1]).expand_as(x)
        fg = bright & (idx >= x.shape[-1] // 2)
        return torch.cat([(~fg).float(), fg.float()], dim=1) * 20.0


def _standin_engine(n_classes: int) -> VBNetEngine:
    classes = ("background", "left", "right") if n_classes == 3 else ("background", "femur")
    settings = InferenceSettings(
        coarse_spacing=8.0,
        fine_spacing=2.0,
        crop_xyz=(48, 48, 64),
        coarse_classes=classes,
        min_hip_ml=1.0,
    )
    coarse = BrightSidesCoarse() if n_classes == 3 else BrightFemurCoarse()
    return VBNetEngine.from_models(coarse, LateralHalfFine(), settings, "cpu")


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("make_grid", [identity_grid, flipped_grid, oblique_grid])
def test_engine_puts_each_side_in_world_place(make_grid, n_classes):
    engine = _standin_engine(n_classes)
    grid = make_grid(4.0)
    ct, truth = render(grid)
    labels, details = engine.predict_with_details(ct)
    assert Grid.of(labels) == Grid.of(ct) and labels.GetPixelID() == sitk.sitkUInt8
    centers = details["hip_centers_world"]
    assert centers[LEFT][0] > 20 and centers[RIGHT][0] < -20  # hips found on their own sides
    arr = sitk.GetArrayViewFromImage(labels)
    pts = {
        v: Grid.of(labels).index_to_world(np.argwhere(arr == v)[:, ::-1].astype(float))
        for v in (LEFT, RIGHT)
    }
    assert len(pts[LEFT]) > 30 and len(pts[RIGHT]) > 30
    # left label at world +x, right at -x, each on bone of the true femur of that side
    assert np.all(pts[LEFT][:, 0] > 0) and np.all(pts[RIGHT][:, 0] < 0)
    t = sitk.GetArrayViewFromImage(truth)
    assert (t[arr == LEFT] == LEFT).mean() > 0.8
    assert (t[arr == RIGHT] == RIGHT).mean() > 0.8
    # the fine stand-in marks the lateral half: for the right side that holds only if the
    # right crop was mirrored before the pass and mirrored back after it
    tol = 6.0
    assert np.mean(pts[LEFT][:, 0] >= centers[LEFT][0] - tol) > 0.95
    assert np.mean(pts[RIGHT][:, 0] <= centers[RIGHT][0] + tol) > 0.95
    # the same world anatomy gives the same world answer on every grid
    ref = {v: np.array([-72.0, 0, 0]) * (1 if v == RIGHT else -1) for v in (LEFT, RIGHT)}
    for v in (LEFT, RIGHT):
        assert abs(world_centroid(labels, v)[0] - ref[v][0]) < 20


def test_mirrored_crop_is_the_flipped_crop():
    ct, _ = render(identity_grid(2.0, (200.0, 120.0, 140.0)))
    center = np.array([40.0, 0.0, 0.0])  # on a voxel centre of the source grid
    plain = centered_grid(center, (32, 32, 32), (2.0,) * 3, mirror=False)
    mirrored = centered_grid(center, (32, 32, 32), (2.0,) * 3, mirror=True)
    a = sitk.GetArrayFromImage(plain.resample(ct))
    b = sitk.GetArrayFromImage(mirrored.resample(ct))
    np.testing.assert_allclose(b, a[..., ::-1], atol=1e-3)


def test_engine_without_weights_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="train-seg"):
        VBNetEngine(tmp_path)


# ----------------------------------------------------------------------------- training


def _tiny(epochs: int, **kw) -> TrainConfig:
    base = dict(
        epochs=epochs,
        seed=3,
        device="cpu",
        val_fraction=0.25,
        coarse_spacing=8.0,
        fine_spacing=3.0,
        fine_crop=(32, 32, 32),
        coarse_base_channels=4,
        fine_base_channels=4,
        batch_size=2,
        iters_per_epoch=6,
        lr=3e-3,
        threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_training_loss_falls_checkpoint_resume_and_manifest(tmp_path):
    from femurscreen.cli import main

    cohort = write_cohort(tmp_path, 4)
    out = tmp_path / "w"
    argv = f"train-seg {cohort} --out {out} --epochs 3 --seed 3 --device cpu --val-fraction 0.25"
    argv += " --coarse-spacing 8 --fine-spacing 3 --crop 32 32 32 --coarse-base-channels 4"
    argv += " --fine-base-channels 4 --iters-per-epoch 6 --lr 3e-3 --threads 1"
    code = main(argv.split())
    assert code == 0
    manifest = read_manifest(out)
    for stage in ("coarse", "fine"):
        hist = manifest["models"][stage]["training"]["history"]
        assert len(hist) == 3
        assert hist[-1]["loss"] < hist[0]["loss"], (stage, [h["loss"] for h in hist])
        assert 0.0 <= hist[-1]["val_dice_mean"] <= 1.0
    assert manifest["demo"] is True and "not for clinical use" in manifest["demo_notice"]
    assert manifest["training_data"]["n_cases"] == 4
    assert manifest["models"]["fine"]["crop_size_xyz"] == [32, 32, 32]
    assert (out / "checkpoints" / "fine.pt").is_file()

    # resume one more epoch of the fine stage: earlier history kept, optimizer state restored
    before = manifest["models"]["fine"]["training"]["history"]
    cfg = _tiny(4, stages=("fine",), resume=True)
    lines: list[str] = []
    resumed = train_seg(cohort, out, cfg, progress=lines.append)
    hist = resumed["models"]["fine"]["training"]["history"]
    assert any("resuming after epoch 3" in line for line in lines)
    assert len(hist) == 4 and hist[:3] == before
    assert resumed["models"]["coarse"] == manifest["models"]["coarse"]  # untouched

    # the written weights load through the verified path and segment in the input geometry
    engine = VBNetEngine(out, device="cpu")
    ct, _ = render(oblique_grid(4.0))
    labels = engine.predict(ct)
    assert Grid.of(labels) == Grid.of(ct)
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) <= {0, LEFT, RIGHT}


def test_resume_continues_like_an_uninterrupted_run(tmp_path):
    cohort = write_cohort(tmp_path, 3, spacing=5.0)
    kw = dict(stages=("coarse",), iters_per_epoch=3, val_fraction=0.0)
    straight = train_seg(cohort, tmp_path / "a", _tiny(2, **kw), progress=lambda s: None)
    train_seg(cohort, tmp_path / "b", _tiny(1, **kw), progress=lambda s: None)
    resumed = train_seg(
        cohort, tmp_path / "b", _tiny(2, resume=True, **kw), progress=lambda s: None
    )
    la = [h["loss"] for h in straight["models"]["coarse"]["training"]["history"]]
    lb = [h["loss"] for h in resumed["models"]["coarse"]["training"]["history"]]
    assert la == pytest.approx(lb, rel=1e-4)


def test_sampling_workers_change_speed_not_results(tmp_path):
    """Each draw is seeded by (seed, stage, epoch, k): forked samplers give the same pairs."""
    cohort = write_cohort(tmp_path, 3, spacing=5.0)
    kw = dict(stages=("fine",), iters_per_epoch=3, val_fraction=0.0)
    here = train_seg(cohort, tmp_path / "a", _tiny(1, **kw), progress=lambda s: None)
    forked = train_seg(cohort, tmp_path / "b", _tiny(1, workers=2, **kw), progress=lambda s: None)
    la = [h["loss"] for h in here["models"]["fine"]["training"]["history"]]
    lb = [h["loss"] for h in forked["models"]["fine"]["training"]["history"]]
    assert la == pytest.approx(lb, rel=1e-5)
    assert forked["models"]["fine"]["training"]["sampling_workers"] == 2


def test_coarser_scan_keeps_shape_and_blurs_edges():
    from femurscreen.segmentation.vbnet.data import coarser_scan

    hu = np.full((40, 40, 40), -100.0, np.float32)
    hu[:, :, 20:] = 1000.0  # a sharp bone edge along x
    out = coarser_scan(hu, np.random.default_rng(0), 1.0, in_plane=(3.0, 3.0), slices=(3.0, 3.0))
    assert out.shape == hu.shape
    profile = out[20, 20, :]
    assert profile[:15].max() < -50 and profile[26:].min() > 950  # far from the edge: kept
    assert np.sum((profile > 0) & (profile < 900)) >= 2  # the edge now spans voxels


def test_time_budget_stops_a_stage_and_still_writes_weights(tmp_path):
    cohort = write_cohort(tmp_path, 3, spacing=5.0)
    cfg = _tiny(5, stages=("coarse",), iters_per_epoch=2, val_fraction=0.0, max_minutes=1e-6)
    lines: list[str] = []
    manifest = train_seg(cohort, tmp_path / "w", cfg, progress=lines.append)
    training = manifest["models"]["coarse"]["training"]
    assert training["epochs_done"] == 1 and training["stopped_early_by_time_budget"] is True
    assert any("time budget" in line for line in lines)
    from femurscreen.segmentation.vbnet.weights import load_model

    model, _ = load_model(tmp_path / "w", "coarse", manifest, "cpu")
    assert model.config()["out_channels"] == 2


def test_init_from_starts_from_verified_weights(tmp_path):
    cohort = write_cohort(tmp_path, 3, spacing=5.0)
    kw = dict(stages=("coarse",), iters_per_epoch=2, val_fraction=0.0)
    first = train_seg(cohort, tmp_path / "a", _tiny(1, **kw), progress=lambda s: None)
    # learning rate 0: the weights written are those it started from
    again = train_seg(
        cohort,
        tmp_path / "b",
        _tiny(1, lr=0.0, init_from=tmp_path / "a", **kw),
        progress=lambda s: None,
    )
    entry = again["models"]["coarse"]
    start, _ = load_model(tmp_path / "a", "coarse", first)
    end, _ = load_model(tmp_path / "b", "coarse", again)
    for key, value in start.state_dict().items():
        assert torch.equal(value, end.state_dict()[key]), key
    assert entry["training"]["initialised_from"]["sha256"] == first["models"]["coarse"]["sha256"]
    assert entry["training"]["initialised_from"]["folder"] == "a"
    with pytest.raises(FemurScreenError, match="another architecture"):
        train_seg(
            cohort,
            tmp_path / "c",
            _tiny(1, coarse_base_channels=8, init_from=tmp_path / "a", **kw),
            progress=lambda s: None,
        )


# ------------------------------------------------- appearance randomisation (phantom tissue maps)


def test_tissue_ids_agree_with_the_phantom_renderer():
    from femurscreen.phantom.voxelize import TISSUES
    from femurscreen.segmentation.vbnet.data import TISSUE_IDS

    assert TISSUE_IDS == TISSUES


def test_synth_appearance_redraws_each_tissue_and_keeps_metal():
    from femurscreen.segmentation.vbnet.data import SYNTH_RANGES_HU, TISSUE_IDS, synth_appearance

    rng = np.random.default_rng(0)
    tissue = np.zeros((24, 24, 24), np.uint8)
    tissue[:, :, 6:] = TISSUE_IDS["fat"]
    tissue[:, :, 10:] = TISSUE_IDS["soft"]
    tissue[:, :8, 14:] = TISSUE_IDS["femur_trabecular"]
    tissue[:, 16:, 14:] = TISSUE_IDS["pelvis_trabecular"]
    tissue[:4, :4, 20:] = TISSUE_IDS["metal"]
    hu = np.select(
        [tissue == 0, tissue == 1, tissue == 2, tissue == 10],
        [-1000.0, -100.0, 40.0, 3000.0],
        250.0,
    )
    hu = (hu + rng.normal(0, 30, hu.shape)).astype(np.float32)
    means = {"femur": [], "pelvis": []}
    for k in range(30):
        out = synth_appearance(hu, tissue, np.random.default_rng(k))
        assert out.shape == hu.shape and out.dtype == np.float32
        inner = (slice(2, -2),) * 3  # away from the seams the blur softens
        for bone in means:
            sel = tissue[inner] == TISSUE_IDS[f"{bone}_trabecular"]
            means[bone].append(float(out[inner][sel].mean()))
        lo, hi = SYNTH_RANGES_HU["trabecular"]
        assert lo - 30 <= means["femur"][-1] <= hi + 30
        soft = out[inner][tissue[inner] == TISSUE_IDS["soft"]].mean()
        assert SYNTH_RANGES_HU["soft"][0] - 30 <= soft <= SYNTH_RANGES_HU["soft"][1] + 30
        assert np.median(out[1:3, 1:3, 21:23]) > 2500  # metal keeps its HU
    diff = np.abs(np.subtract(means["femur"], means["pelvis"]))
    assert (diff < 12.0).sum() >= 8  # pelvis drawn like the femur (seams blur a few HU)
    assert (diff > 50.0).sum() >= 5  # and otherwise either may be brighter
    assert np.std(means["femur"]) > 60.0  # the femur's own intensity varies per sample


@pytest.fixture(scope="module")
def hard_phantom_cohort(tmp_path_factory) -> Path:
    """Two real phantoms (femurscreen phantom --joint hard --tissues) at 3 mm."""
    from femurscreen.phantom import PhantomOptions, make_cohort

    out = tmp_path_factory.mktemp("hard")
    opts = PhantomOptions(spacing=(3.0, 3.0, 3.0), joint="hard", tissues=True)
    return make_cohort(out, 2, 11, options=opts, workers=1, progress=lambda line: None)


def test_fine_crops_of_phantoms_with_tissue_maps(hard_phantom_cohort):
    """Crops drawn with appearance, bias, deformation and coarser voxels keep labels on the
    femur: the label sits on bone-like voxels of that crop, the rest of the crop is mostly not
    femur, and head-focused crops hold the top of the femur (the joint)."""
    from femurscreen.segmentation.vbnet.data import read_cohort

    cohort = read_cohort(hard_phantom_cohort)
    case = load_case(cohort.rows[0], cohort.path.parent)
    assert case.tissue is not None and case.tissue.GetSize() == case.ct.GetSize()
    plain = FineSampler(crop_xyz=(48, 48, 64), spacing=2.0)
    head = FineSampler(crop_xyz=(48, 48, 64), spacing=2.0, head_p=1.0, synth_p=1.0, deform_p=1.0)
    norm = IntensityNorm()
    top_z = {s: case.femur_points[s][:, 2].max() for s in (LEFT, RIGHT)}
    for k in range(6):
        side = (LEFT, RIGHT)[k % 2]
        x, y = head.pair(case, side, np.random.default_rng(k))
        assert x.shape == (64, 48, 48) and y.shape == x.shape and np.isfinite(x).all()
        assert y.sum() > 200, k
        hu = x * norm.scale - norm.offset
        inside = np.median(hu[y == 1])
        assert inside > np.median(hu[y == 0]), k  # bone brighter than its surroundings
        # the head is in the crop: label reaches within 15 mm of the femur's top... of the crop's
        # own upper half (crops centred on the head)
        rows = np.argwhere(y)[:, 0]
        assert rows.max() > 32, k
    x0, y0 = plain.pair(case, LEFT)
    assert y0.sum() > 200 and np.isfinite(x0).all()
    assert top_z[LEFT] > case.centroids[LEFT][2] + 20.0


def test_fine_tuning_on_small_crops_keeps_the_inference_crop(hard_phantom_cohort, tmp_path):
    """--train-crop draws smaller crops (CPU fine-tuning); the manifest keeps the inference crop,
    validation runs on it, and the training record says what was drawn."""
    from femurscreen.cli import main

    out = tmp_path / "w"
    argv = f"train-seg {hard_phantom_cohort} --out {out} --fine-only --epochs 1 --seed 2"
    argv += (
        " --device cpu --val-fraction 0.5 --fine-spacing 3 --crop 48 48 64 --train-crop 32 32 32"
    )
    argv += (
        " --head-focus 0.5 --fine-base-channels 4 --iters-per-epoch 2 --batch-size 1 --threads 1"
    )
    assert main(argv.split()) == 0
    entry = read_manifest(out)["models"]["fine"]
    assert entry["crop_size_xyz"] == [48, 48, 64]
    training = entry["training"]
    assert training["train_crop_size_xyz"] == [32, 32, 32] and training["head_focus"] == 0.5
    assert training["threads"] == 1 and "appearance" in training["augmentation"]
    assert 0.0 <= training["final_metrics"]["val_dice_mean"] <= 1.0
    with pytest.raises(FemurScreenError, match="multiples of 16"):
        train_seg(hard_phantom_cohort, tmp_path / "x", _tiny(1, fine_train_crop=(30, 32, 32)))
    with pytest.raises(FemurScreenError, match="head-focus"):
        train_seg(hard_phantom_cohort, tmp_path / "x", _tiny(1, head_focus=1.5))


def test_a_resumed_fine_tune_still_says_what_it_started_from(tmp_path):
    cohort = write_cohort(tmp_path, 3, spacing=5.0)
    kw = dict(stages=("coarse",), iters_per_epoch=2, val_fraction=0.0)
    first = train_seg(cohort, tmp_path / "a", _tiny(1, **kw), progress=lambda s: None)
    train_seg(cohort, tmp_path / "b", _tiny(1, init_from=tmp_path / "a", **kw), progress=print)
    resumed = train_seg(
        cohort, tmp_path / "b", _tiny(2, resume=True, **kw), progress=lambda s: None
    )
    training = resumed["models"]["coarse"]["training"]
    assert training["epochs_done"] == 2
    assert training["initialised_from"]["sha256"] == first["models"]["coarse"]["sha256"]
