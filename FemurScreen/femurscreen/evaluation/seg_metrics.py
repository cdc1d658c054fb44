"""Segmentation accuracy per side: Dice, volume difference, 95 % Hausdorff distance.

Definitions (all in physical units, on the reference's voxel grid):
- Dice = 2 |P & R| / (|P| + |R|). Two empty masks have no overlap to measure: :func:`dice`
  returns ``empty`` for them, NaN by default (evaluation: a side absent from both reference and
  prediction has no score and drops out of the means). VB-Net validation passes ``empty=1.0``
  (a crop without a femur, correctly left empty, is a perfect answer, and its loss curve must
  not turn NaN). This is the package's only hard Dice; ``vbnet.losses`` has the soft one.
- Volume difference: signed ``pred - ref`` in ml and in % of the reference volume (the paper
  reports volume difference next to Dice); the mean row averages absolute values.
- HD95: surface voxels are the mask voxels with a face neighbour outside the mask; for each
  surface voxel of one mask, the distance (mm, Euclidean distance transform with the image's
  spacing) to the nearest surface voxel of the other. HD95 is the larger of the two directed
  95th percentiles (symmetric, as MONAI computes it). NaN when both masks are empty, inf when
  exactly one is.
A prediction on another grid is resampled onto the reference (nearest neighbour) first.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from femurscreen.labels import SIDE_NAMES


@dataclass
class SideMetrics:
    dice: float
    hd95_mm: float
    volume_ref_ml: float
    volume_pred_ml: float
    volume_diff_ml: float  # pred - ref
    volume_diff_pct: float  # (pred - ref) / ref * 100; NaN when ref is empty

    def to_dict(self) -> dict[str, float | None]:
        return {k: (None if not math.isfinite(v) else round(v, 4)) for k, v in asdict(self).items()}


def dice(pred: np.ndarray, ref: np.ndarray, *, empty: float = math.nan) -> float:
    """Dice of two masks (anything non-zero is inside); ``empty`` when both are empty (see the
    module docstring for which callers want NaN and which 1.0)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return float(empty)
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndi.binary_erosion(mask, border_value=0)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """Symmetric 95 % Hausdorff distance in mm (see module docstring)."""
    has_p, has_r = bool(pred.any()), bool(ref.any())
    if not has_p and not has_r:
        return float("nan")
    if has_p != has_r:
        return float("inf")
    both = pred | ref
    idx = np.argwhere(both)
    lo = np.maximum(idx.min(axis=0) - 2, 0)
    hi = np.minimum(idx.max(axis=0) + 3, both.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sp, sr = _surface(pred[box]), _surface(ref[box])
    to_r = ndi.distance_transform_edt(~sr, sampling=spacing_zyx)
    to_p = ndi.distance_transform_edt(~sp, sampling=spacing_zyx)
    return float(max(np.percentile(to_r[sp], 95), np.percentile(to_p[sr], 95)))


def side_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing_zyx: tuple[float, float, float]
) -> SideMetrics:
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    v_ref = float(ref.sum()) * voxel_ml
    v_pred = float(pred.sum()) * voxel_ml
    diff = v_pred - v_ref
    return SideMetrics(
        dice=dice(pred, ref),
        hd95_mm=hd95(pred, ref, spacing_zyx),
        volume_ref_ml=v_ref,
        volume_pred_ml=v_pred,
        volume_diff_ml=diff,
        volume_diff_pct=100.0 * diff / v_ref if v_ref > 0 else float("nan"),
    )


def compare_labels(pred: sitk.Image, ref: sitk.Image) -> dict[str, SideMetrics]:
    """Metrics for each side (``left`` = label 1, ``right`` = label 2) of two label images."""
    if not _same_grid(pred, ref):
        pred = sitk.Resample(pred, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    p = sitk.GetArrayViewFromImage(pred)
    r = sitk.GetArrayViewFromImage(ref)
    spacing_zyx = tuple(float(s) for s in ref.GetSpacing()[::-1])
    return {
        name: side_metrics(p == value, r == value, spacing_zyx)  # type: ignore[arg-type]
        for value, name in SIDE_NAMES.items()
    }


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
    )


# --------------------------------------------------------------------------- evaluate-seg

LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_PREFERRED_WORDS = ("femur", "label", "mask", "seg")
_IMAGE_WORDS = ("ct", "image", "img", "volume")


def evaluate_seg(pred: str | Path, ref: str | Path, *, json_path: str | Path | None = None) -> dict:
    """Compare predicted and reference label maps: one pair of files, or two folders.

    Folders are matched case by case: a label file directly in the folder is the case named
    by its file name (``case01.nii.gz`` -> ``case01``); a file in a sub-folder is the case
    named by that folder (``case01/femur.nii.gz`` -> ``case01``; when a case folder holds
    several images: the one with the same file name in both folders, else the one named like
    a label - femur, label, mask, seg - never ``ct.*``). Returns a report with per-case,
    per-side metrics and the mean over cases.
    """
    from femurscreen.atomic import write_text
    from femurscreen.errors import InputError
    from femurscreen.io.labelio import read_labels

    pred, ref = Path(pred), Path(ref)
    for path in (pred, ref):
        if not path.exists():
            raise InputError("not found", "check the path", path=path)
    if pred.is_file() != ref.is_file():
        raise InputError(
            "one of --pred/--ref is a file and the other a folder",
            "give two label files or two folders of label files",
            path=pred if pred.is_file() else ref,
        )
    if pred.is_file():
        pairs = {_case_name(ref): (pred, ref)}
        unmatched_pred: list[str] = []
        unmatched_ref: list[str] = []
    else:
        found_pred, found_ref = label_files(pred), label_files(ref)
        pairs = {}
        for key in sorted(set(found_pred) & set(found_ref)):
            pair = _match(found_pred[key], found_ref[key])
            if pair is not None:
                pairs[key] = pair
        unmatched_pred = sorted(set(found_pred) - set(pairs))
        unmatched_ref = sorted(set(found_ref) - set(pairs))
        if not pairs:
            raise InputError(
                "no case has both a predicted and a reference label file",
                "name predictions like the references (same file name, or same case folder)",
                path=pred,
            )
    cases = []
    for key, (p_path, r_path) in pairs.items():
        ref_img = read_labels(r_path)
        pred_img = read_labels(p_path)
        metrics = compare_labels(pred_img, ref_img)
        cases.append(
            {
                "case": key,
                "pred": str(p_path),
                "ref": str(r_path),
                "sides": {side: m.to_dict() for side, m in metrics.items()},
            }
        )
    report = {
        "cases": cases,
        "mean": _means(cases),
        "unmatched_pred": unmatched_pred,
        "unmatched_ref": unmatched_ref,
    }
    if json_path is not None:
        write_text(json_path, json.dumps(report, indent=2) + "\n")
    return report


def label_files(folder: Path) -> dict[str, list[Path]]:
    """Case name -> candidate label files in a folder (see ``evaluate_seg`` for the rules)."""
    out: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or not _is_image(path):
            continue
        if _strip_suffix(path.name).lower() in _IMAGE_WORDS:
            continue  # ct.nii.gz, image.nrrd: the CT beside its labels
        if path.parent == folder:
            out.setdefault(_strip_suffix(path.name), []).append(path)
        else:
            out.setdefault(path.parent.relative_to(folder).as_posix(), []).append(path)
    return out


def _match(preds: list[Path], refs: list[Path]) -> tuple[Path, Path] | None:
    """One predicted and one reference file of a case: the only ones, the same file name,
    or the ones named like a femur label."""
    if len(preds) == 1 and len(refs) == 1:
        return preds[0], refs[0]
    same = sorted({p.name for p in preds} & {r.name for r in refs})
    if len(same) == 1:
        return next(p for p in preds if p.name == same[0]), next(
            r for r in refs if r.name == same[0]
        )
    p, r = _pick_label(preds), _pick_label(refs)
    return (p, r) if p is not None and r is not None else None


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(LABEL_SUFFIXES) and not name.endswith(".seg.nrrd")


def _strip_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in LABEL_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _case_name(path: Path) -> str:
    """A case name for a single file: its name, or its folder's for generic names."""
    stem = _strip_suffix(path.name)
    if stem.lower() in _PREFERRED_WORDS and path.parent.name:
        return path.parent.name
    return stem


def _pick_label(files: list[Path]) -> Path | None:
    if len(files) == 1:
        return files[0]
    for word in _PREFERRED_WORDS:
        named = [f for f in files if word in _strip_suffix(f.name).lower()]
        if len(named) == 1:
            return named[0]
    return None


def _means(cases: list[dict]) -> dict:
    """Mean per side (and over both sides) of sides present in the reference."""
    out = {}
    for group in ("left", "right", "all"):
        rows = [
            c["sides"][side]
            for c in cases
            for side in (("left", "right") if group == "all" else (group,))
            if (c["sides"][side]["volume_ref_ml"] or 0) > 0
        ]

        def mean(key: str, absolute: bool = False, rows: list[dict] = rows) -> float | None:
            vals = [r[key] for r in rows if r[key] is not None]
            vals = [abs(v) for v in vals] if absolute else vals
            return round(float(np.mean(vals)), 4) if vals else None

        out[group] = {
            "n": len(rows),
            "dice": mean("dice"),
            "hd95_mm": mean("hd95_mm"),
            "abs_volume_diff_ml": mean("volume_diff_ml", absolute=True),
            "abs_volume_diff_pct": mean("volume_diff_pct", absolute=True),
        }
    return out


def format_seg_table(report: dict) -> str:
    """Human-readable table: a row per case and side, then the mean rows."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    head = (
        f"{'case':<24} {'side':<6} {'dice':>6} {'hd95_mm':>8} {'ref_ml':>8} {'pred_ml':>8} "
        f"{'vd_ml':>8} {'vd_%':>7}"
    )
    lines = [head, "-" * len(head)]
    for case in report["cases"]:
        for side, m in case["sides"].items():
            if not m["volume_ref_ml"] and not m["volume_pred_ml"]:
                continue
            lines.append(
                f"{case['case'][:24]:<24} {side:<6} {num(m['dice'], '.3f'):>6} "
                f"{num(m['hd95_mm'], '.1f'):>8} {num(m['volume_ref_ml'], '.1f'):>8} "
                f"{num(m['volume_pred_ml'], '.1f'):>8} {num(m['volume_diff_ml'], '+.1f'):>8} "
                f"{num(m['volume_diff_pct'], '+.1f'):>7}"
            )
    lines.append("-" * len(head))
    for group, m in report["mean"].items():
        lines.append(
            f"{'mean (n=' + str(m['n']) + ')':<24} {group:<6} {num(m['dice'], '.3f'):>6} "
            f"{num(m['hd95_mm'], '.1f'):>8} {'':>8} {'':>8} "
            f"{num(m['abs_volume_diff_ml'], '.1f'):>8} {num(m['abs_volume_diff_pct'], '.1f'):>7}"
        )
    lines.append("(mean rows: volume differences are means of absolute values)")
    for key in ("unmatched_pred", "unmatched_ref"):
        if report.get(key):
            lines.append(f"{key.replace('_', ' ')}: {', '.join(report[key])}")
    return "\n".join(lines)
