"""Evaluate the CT-derived aBMD (femurscreen.bmd) on unseen phantoms with varied scanners.

Each case is rendered twice: by the identity (120 kVp) scanner and by a random one (HU scale
and offset, kVp 100-140 and an effective energy off its kVp's nominal value,
femurscreen.phantom.scanner). The estimator gets the CT and the phantom's own femur label (so
this measures calibration + projection, not the segmentation), read three ways:

- ``kvp``: the tube voltage known, as from a DICOM header (tag 0018,0060 on the image);
- ``no_kvp``: no header (a NIfTI file): the energy fitted from the tissues and a 120 kVp prior;
- ``oracle``: the scanner's exact inverse as calibration (density = 0.80 x the painted
  reference HU), so only the projection's error is left.

and compared with the case's true aBMD (femurscreen.phantom.truth). Cases with a seed the
estimator was never tuned on (default 7100; 4000 was the development set):

    .venv/bin/python scripts/evaluate_bmd.py --cases 40 --seed 7100 --out output/bmd_eval
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from femurscreen.bmd import measure
from femurscreen.bmd.calibration import Calibration
from femurscreen.bmd.projection import project_side
from femurscreen.bmd.tscore import grade
from femurscreen.labels import bone_status
from femurscreen.phantom import PhantomOptions, case_seed, make_case, prepare, sample_t_score
from femurscreen.phantom.scanner import IDENTITY, MG_K2HPO4_PER_HU, Scanner, random_scanner

MODES = ("kvp", "no_kvp", "oracle")


class OracleCalibration(Calibration):
    """The exact inverse of the case's scanner and imaging gain/offset: what a perfect
    calibration would give (only for this evaluation; it knows the phantom)."""

    def __init__(self, scanner: Scanner, hu_scale: float, hu_offset: float) -> None:
        super().__init__("ok", "", [])
        h = np.linspace(-1100.0, 3000.0, 41001)
        self._written = scanner.hu(h) * hu_scale + hu_offset
        self._h = h

    def density(self, hu: np.ndarray) -> np.ndarray:
        ref = np.interp(np.asarray(hu, dtype=np.float64), self._written, self._h)
        return (ref * MG_K2HPO4_PER_HU).astype(np.float32)


def oracle_sides(ct, mask, scanner: Scanner, seed: int, t: float, opts) -> dict:
    anatomy, _grid = prepare(seed, t, opts)
    cal = OracleCalibration(scanner, anatomy.imaging.hu_scale, anatomy.imaging.hu_offset)
    hu = sitk.GetArrayViewFromImage(ct)
    lab = sitk.GetArrayViewFromImage(mask)
    out = {}
    for side, value in (("left", 1), ("right", 2)):
        proj = project_side(ct, hu, lab == value, cal)
        if proj.status != "ok":
            out[side] = {"status": proj.status, "fn_abmd_g_cm2": None, "th_abmd_g_cm2": None}
            continue
        g = grade(proj.fn_abmd_g_cm2, proj.th_abmd_g_cm2)
        out[side] = {
            "status": "ok",
            "fn_abmd_g_cm2": proj.fn_abmd_g_cm2,
            "th_abmd_g_cm2": proj.th_abmd_g_cm2,
            "fn_t_score": g["fn_t_score"],
            "who_class": g["who_class"],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7100)
    ap.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 1.5))
    ap.add_argument("--out", type=Path, default=Path("output/bmd_eval"))
    ap.add_argument("--png", type=Path, default=Path("Resources/bmd_phantom_eval.png"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(args.cases):
        seed = case_seed(args.seed, i)
        t = sample_t_score(seed)
        for label, scanner in (("identity", IDENTITY), ("random", random_scanner(seed))):
            opts = PhantomOptions(spacing=tuple(args.spacing), scanner=scanner)
            ct, mask, info = make_case(seed, t, opts)
            hu = sitk.GetArrayViewFromImage(ct)
            lab = sitk.GetArrayViewFromImage(mask)
            results = {}
            start = time.perf_counter()
            results["no_kvp"] = measure(ct, mask)
            seconds = time.perf_counter() - start
            ct.SetMetaData("0018|0060", f"{scanner.kvp:.0f}")  # as a DICOM header says it
            results["kvp"] = measure(ct, mask)
            results["oracle"] = oracle_sides(ct, mask, scanner, seed, t, opts)
            for mode in MODES:
                res = results[mode]
                cal = res.get("calibration", {})
                for side, value in (("left", 1), ("right", 2)):
                    s = res[side]
                    rows.append(
                        {
                            "case": i,
                            "seed": seed,
                            "scanner": label,
                            "mode": mode,
                            "kvp": round(scanner.kvp, 1),
                            "energy_kev": round(scanner.kev, 2),
                            "fit_energy_kev": cal.get("energy_kev"),
                            "fit_energy_sd_kev": cal.get("energy_sd_kev"),
                            "scale": round(scanner.scale, 4),
                            "offset": round(scanner.offset, 2),
                            "side": side,
                            "phantom_t": t,
                            "phantom_class": bone_status(t),
                            "status": s["status"],
                            "cal_status": cal.get("status", "oracle"),
                            "fn_est": s["fn_abmd_g_cm2"],
                            "th_est": s["th_abmd_g_cm2"],
                            "fn_true": info[f"true_fn_abmd_{side}_g_cm2"],
                            "th_true": info[f"true_th_abmd_{side}_g_cm2"],
                            "fn_t": s.get("fn_t_score"),
                            "who_est": s.get("who_class"),
                            "mask_mean_hu": round(float(hu[lab == value].mean()), 2),
                            "seconds": round(seconds, 3),
                        }
                    )
            print(
                f"case {i} {label} kvp={scanner.kvp:.0f} E={scanner.kev:.1f}: "
                + " ".join(
                    f"{r['mode']}:{r['side'][0]} {r['fn_est']} / {r['fn_true']}" for r in rows[-6:]
                ),
                flush=True,
            )
    with (args.out / "bmd_eval.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = summarise(rows)
    (args.out / "bmd_eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    plot(rows, args.png, summary)


def _stats(est: np.ndarray, true: np.ndarray) -> dict:
    err = est - true
    return {
        "n": int(est.size),
        "r": round(float(np.corrcoef(est, true)[0, 1]), 4),
        "mae": round(float(np.abs(err).mean()), 4),
        "bias": round(float(err.mean()), 4),
        "sd": round(float(err.std(ddof=1)), 4),
    }


def true_class(row: dict) -> str:
    """The WHO class the true aBMD itself gives (NHANES T-scores of the truth): what the
    estimate can be expected to reproduce (the phantom's own T-score is not an aBMD)."""
    g = grade(row["fn_true"], row["th_true"])
    return str(g["who_class"])


def summarise(rows: list[dict]) -> dict:
    out: dict = {}
    for mode in MODES:
        ok = [
            r
            for r in rows
            if r["mode"] == mode and r["status"] == "ok" and r["fn_true"] is not None
        ]
        entry: dict = {"sides": sum(r["mode"] == mode for r in rows), "graded": len(ok)}
        for scanner in ("identity", "random", "all"):
            sel = [r for r in ok if scanner == "all" or r["scanner"] == scanner]
            if not sel:
                continue
            e: dict = {}
            for site in ("fn", "th"):
                pairs = [(r[f"{site}_est"], r[f"{site}_true"]) for r in sel if r[f"{site}_est"]]
                est, true = np.array(pairs).T
                e[site] = _stats(est, true)
            who = [r for r in sel if r["who_est"]]
            e["who_agreement_with_phantom_class"] = round(
                float(np.mean([r["who_est"] == r["phantom_class"] for r in who])), 3
            )
            true_cls = [true_class(r) for r in who]
            e["who_agreement_with_true_abmd_class"] = round(
                float(np.mean([r["who_est"] == c for r, c in zip(who, true_cls, strict=True)])), 3
            )
            if mode != "oracle":
                e["median_seconds"] = round(float(np.median([r["seconds"] for r in sel])), 3)
            entry[scanner] = e
        # the same case and side under two scanners
        by = {(r["case"], r["side"], r["scanner"]): r for r in ok}
        dt, dhu, dfn = [], [], []
        for (case, side, scanner), r in by.items():
            other = by.get((case, side, "identity"))
            pair = other and r["fn_t"] is not None and other["fn_t"] is not None
            if scanner == "random" and pair:
                dt.append(abs(r["fn_t"] - other["fn_t"]))
                dhu.append(abs(r["mask_mean_hu"] - other["mask_mean_hu"]))
                dfn.append(abs(r["fn_est"] - other["fn_est"]))
        if dt:
            entry["two_scanners"] = {
                "pairs": len(dt),
                "fn_t_abs_diff_mean": round(float(np.mean(dt)), 3),
                "fn_t_abs_diff_max": round(float(np.max(dt)), 3),
                "fraction_within_0_3": round(float(np.mean(np.array(dt) <= 0.3)), 3),
                "raw_mask_mean_hu_abs_diff_mean": round(float(np.mean(dhu)), 2),
                "raw_mask_mean_hu_abs_diff_max": round(float(np.max(dhu)), 2),
            }
        rnd = [r for r in ok if r["scanner"] == "random"]
        if len(rnd) > 3:
            k = np.array([r["energy_kev"] for r in rnd])
            err = np.array([r["fn_est"] - r["fn_true"] for r in rnd])
            entry["random_fn_error_vs_energy_slope_g_cm2_per_10kev"] = round(
                float(np.polyfit(k, err, 1)[0] * 10), 4
            )
            fit = [r for r in rnd if r["fit_energy_kev"] is not None]
            if fit:
                entry["random_energy_error_kev_mae"] = round(
                    float(np.mean([abs(r["fit_energy_kev"] - r["energy_kev"]) for r in fit])), 2
                )
        out[mode] = entry
    return out


def plot(rows: list[dict], png: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.6))
    for ax, (mode, site) in zip(
        axes[:3], (("kvp", "fn"), ("kvp", "th"), ("no_kvp", "fn")), strict=True
    ):
        ok = [r for r in rows if r["mode"] == mode and r["status"] == "ok" and r["fn_true"]]
        for scanner, colour in (("identity", "tab:blue"), ("random", "tab:orange")):
            sel = [r for r in ok if r["scanner"] == scanner and r[f"{site}_est"]]
            ax.scatter(
                [r[f"{site}_true"] for r in sel],
                [r[f"{site}_est"] for r in sel],
                s=12,
                c=colour,
                label=f"{scanner} scanner",
            )
        st = summary[mode]["all"][site]
        lim = [0.3, 1.8]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel(f"true {site.upper()} aBMD (g/cm²)")
        ax.set_ylabel(f"CT-derived {site.upper()} aBMD (g/cm²)")
        ax.set_title(
            f"{site.upper()}, {'kVp known' if mode == 'kvp' else 'kVp unknown'}: "
            f"r {st['r']:.3f}, MAE {st['mae']:.3f}",
            fontsize=9,
        )
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for mode, colour in (("kvp", "tab:green"), ("no_kvp", "tab:red"), ("oracle", "0.4")):
        rnd = [
            r
            for r in rows
            if r["mode"] == mode
            and r["scanner"] == "random"
            and r["status"] == "ok"
            and r["fn_true"]
        ]
        axes[3].scatter(
            [r["energy_kev"] for r in rnd],
            [r["fn_est"] - r["fn_true"] for r in rnd],
            s=10,
            c=colour,
            label={"kvp": "kVp known", "no_kvp": "kVp unknown", "oracle": "true calibration"}[mode],
        )
    axes[3].axhline(0, color="k", lw=0.8)
    axes[3].set_xlabel("random scanner's effective energy (keV)")
    axes[3].set_ylabel("FN aBMD error (g/cm²)")
    axes[3].legend(fontsize=8)
    axes[3].grid(alpha=0.3)
    n = len({r["case"] for r in rows})
    fig.suptitle(
        f"femurscreen bmd on {n} unseen phantoms x 2 scanners (phantom femur labels given)",
        fontsize=10,
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)


if __name__ == "__main__":
    main()
