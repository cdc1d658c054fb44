"""Evaluate the CT-derived aBMD (femurscreen.bmd) on unseen phantoms with varied scanners.

Each case is rendered twice: by the identity (120 kVp) scanner (``--first random``: by another
random one) and by a random one (HU scale and offset, kVp 100-140 and an effective energy off
its kVp's nominal value, femurscreen.phantom.scanner). The estimator gets the CT and the
phantom's own femur label (so this measures calibration + projection, not the segmentation),
read four ways:

- ``kvp``: the tube voltage known, as from a DICOM header (tag 0018,0060 on the image);
- ``no_kvp``: no header (a NIfTI file): the energy fitted from the tissues and a 120 kVp prior;
- ``site``: kVp known and a site calibration: each scanner's K2HPO4 rods phantom
  (femurscreen.phantom.rods, its own noise and day's drift) rendered through that scanner and
  fitted (femurscreen.bmd.site.fit_rods, as ``femurscreen calibrate-scanner`` does), its entry
  then fixing the energy of that scanner's case;
- ``oracle``: the scanner's exact inverse as calibration (density = 0.80 x the painted
  reference HU), so only the projection's error is left.

and compared with the case's true aBMD (femurscreen.phantom.truth). Per mode, ``two_scanners``
puts the same case and side's FN/TH T-score difference between its two scanners beside the raw
HU difference of its femur (mask mean), and ``site_energy_fit`` how well the rods recovered
each scanner's energy. Cases with a seed the estimator was never tuned on (default 7100; 4000
was the development set):

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
from femurscreen.bmd.site import SiteCalibration, SiteEntry, fit_rods_image
from femurscreen.bmd.tscore import grade
from femurscreen.errors import InputError
from femurscreen.labels import bone_status
from femurscreen.phantom import PhantomOptions, case_seed, make_case, prepare, sample_t_score
from femurscreen.phantom.rods import make_rods_phantom
from femurscreen.phantom.scanner import IDENTITY, MG_K2HPO4_PER_HU, Scanner, random_scanner

MODES = ("kvp", "no_kvp", "site", "oracle")
ROD_SEED_OFFSET = 1  # the rods phantom's scan: a seed of its own (noise, the day's drift)
FIRST_RANDOM = "random_first"  # --first random: the first scanner's label
FIRST_SEED_OFFSET = 500_000  # its scanner's seed: another random scanner than the second's


def _first(rows: list[dict]) -> str:
    """The label of each case's first scanner (identity, or a second random one)."""
    return FIRST_RANDOM if any(r["scanner"] == FIRST_RANDOM for r in rows) else "identity"


def site_for(scanner: Scanner, seed: int) -> tuple[SiteEntry, list[str]]:
    """The site entry of ``scanner``: its rods phantom rendered and fitted (no truth used).
    A refused fit (e.g. that day's drift put the air below the -1024 floor) is what a site
    would answer by scanning the phantom again: up to 3 days, the refusals returned."""
    refused = []
    for day in range(3):
        ct, lab, rods, _info = make_rods_phantom(scanner, seed=seed + ROD_SEED_OFFSET + 7 * day)
        try:
            entry = fit_rods_image(
                ct,
                lab,
                rods,
                {"kvp": scanner.kvp},
            )
        except InputError as exc:
            refused.append(exc.what)
            continue
        return entry, refused
    raise SystemExit(f"no rods fit in 3 scans of {scanner}: {refused}")


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
            "th_t_score": g["th_t_score"],
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
    ap.add_argument(
        "--first",
        choices=("identity", "random"),
        default="identity",
        help="each case's first scanner: the identity one (default) or another random one, "
        "so that neither of the two scanners is the nominal 120 kVp one",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(args.cases):
        seed = case_seed(args.seed, i)
        t = sample_t_score(seed)
        first = (
            (FIRST_RANDOM, random_scanner(seed + FIRST_SEED_OFFSET))
            if args.first == "random"
            else ("identity", IDENTITY)
        )
        for label, scanner in (first, ("random", random_scanner(seed))):
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
            entry, refused = site_for(scanner, seed)
            results["site"] = measure(ct, mask, site=SiteCalibration((entry,), "site.json"))
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
                            "cal_source": cal.get("source", "oracle"),
                            "site_energy_kev": entry.energy_kev,
                            "site_energy_sd_kev": entry.energy_sd_kev,
                            "site_rods_refused": len(refused),
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
                            "th_t": s.get("th_t_score"),
                            "who_est": s.get("who_class"),
                            "mask_mean_hu": round(float(hu[lab == value].mean()), 2),
                            "seconds": round(seconds, 3),
                        }
                    )
            print(
                f"case {i} {label} kvp={scanner.kvp:.0f} E={scanner.kev:.1f}: "
                + " ".join(
                    f"{r['mode']}:{r['side'][0]} {r['fn_est']} / {r['fn_true']}"
                    for r in rows[-2 * len(MODES) :]
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
        for scanner in (_first(rows), "random", "all"):
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
        # the same case and side under two scanners: T-scores, and the raw HU beside them
        by = {(r["case"], r["side"], r["scanner"]): r for r in ok}
        dt, dth, dhu, dfn = [], [], [], []
        for (case, side, scanner), r in by.items():
            other = by.get((case, side, _first(rows)))
            pair = other and r["fn_t"] is not None and other["fn_t"] is not None
            if scanner == "random" and pair:
                dt.append(abs(r["fn_t"] - other["fn_t"]))
                if r.get("th_t") is not None and other.get("th_t") is not None:
                    dth.append(abs(r["th_t"] - other["th_t"]))
                dhu.append(abs(r["mask_mean_hu"] - other["mask_mean_hu"]))
                dfn.append(abs(r["fn_est"] - other["fn_est"]))
        if dt:
            t = np.array(dt)
            hu = np.array(dhu)
            entry["two_scanners"] = {
                "pairs": len(dt),
                "fn_t_abs_diff_mean": round(float(t.mean()), 3),
                "fn_t_abs_diff_p95": round(float(np.percentile(t, 95)), 3),
                "fn_t_abs_diff_max": round(float(t.max()), 3),
                "fraction_within_0_3": round(float(np.mean(t <= 0.3)), 3),
                "th_t_abs_diff_mean": round(float(np.mean(dth)), 3) if dth else None,
                "th_t_abs_diff_max": round(float(np.max(dth)), 3) if dth else None,
                "th_fraction_within_0_3": round(float(np.mean(np.array(dth) <= 0.3)), 3)
                if dth
                else None,
                "fn_abmd_abs_diff_mean_g_cm2": round(float(np.mean(dfn)), 4),
                "raw_mask_mean_hu_abs_diff_mean": round(float(hu.mean()), 2),
                "raw_mask_mean_hu_abs_diff_median": round(float(np.median(hu)), 2),
                "raw_mask_mean_hu_abs_diff_max": round(float(hu.max()), 2),
            }
        rnd = [r for r in ok if r["scanner"] == "random"]
        if len(rnd) > 3:
            k = np.array([r["energy_kev"] for r in rnd])
            err = np.array([r["fn_est"] - r["fn_true"] for r in rnd])
            entry["random_fn_error_vs_energy_slope_g_cm2_per_10kev"] = round(
                float(np.polyfit(k, err, 1)[0] * 10), 4
            )
            fit = [r for r in rnd if r["fit_energy_kev"] is not None]
            if mode == "site":
                z = [
                    (r["site_energy_kev"] - r["energy_kev"]) / r["site_energy_sd_kev"]
                    for r in rnd
                    if r["side"] == "left"
                ]
                entry["site_energy_fit"] = {
                    "scanners": len(z),  # the random ones (the first ones' refusals counted too)
                    "rods_scans_refused": int(
                        sum(r.get("site_rods_refused", 0) for r in ok if r["side"] == "left")
                    ),
                    "error_kev_mae": round(
                        float(
                            np.mean(
                                [
                                    abs(r["site_energy_kev"] - r["energy_kev"])
                                    for r in rnd
                                    if r["side"] == "left"
                                ]
                            )
                        ),
                        3,
                    ),
                    "z_sd": round(float(np.std(z)), 2),
                    "fraction_within_1_sd": round(float(np.mean(np.abs(z) <= 1.0)), 3),
                    "fraction_within_2_sd": round(float(np.mean(np.abs(z) <= 2.0)), 3),
                }
            if fit:
                entry["random_energy_error_kev_mae"] = round(
                    float(np.mean([abs(r["fit_energy_kev"] - r["energy_kev"]) for r in fit])), 2
                )
        out[mode] = entry
    return out


def _pairs(rows: list[dict], mode: str) -> tuple[list[float], list[float]]:
    """Raw mask-mean HU difference and FN T-score difference of each case and side's two
    scanners, in ``mode``."""
    ok = {
        (r["case"], r["side"], r["scanner"]): r
        for r in rows
        if r["mode"] == mode and r["status"] == "ok" and r["fn_t"] is not None
    }
    dhu, dt = [], []
    for (case, side, scanner), r in ok.items():
        other = ok.get((case, side, _first(rows)))
        if scanner == "random" and other:
            dhu.append(abs(r["mask_mean_hu"] - other["mask_mean_hu"]))
            dt.append(abs(r["fn_t"] - other["fn_t"]))
    return dhu, dt


def plot(rows: list[dict], png: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {
        "kvp": "phantomless, kVp known",
        "no_kvp": "phantomless, kVp unknown",
        "site": "site calibration",
        "oracle": "true calibration",
    }
    fig, axes = plt.subplots(1, 5, figsize=(23, 4.8))
    for ax, (mode, site) in zip(
        axes[:3], (("kvp", "fn"), ("site", "fn"), ("site", "th")), strict=True
    ):
        ok = [r for r in rows if r["mode"] == mode and r["status"] == "ok" and r["fn_true"]]
        for scanner, colour in ((_first(rows), "tab:blue"), ("random", "tab:orange")):
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
            f"{site.upper()}, {names[mode]}: r {st['r']:.3f}, MAE {st['mae']:.3f}", fontsize=9
        )
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax = axes[3]
    for mode, colour in (("kvp", "tab:green"), ("site", "tab:purple")):
        dhu, dt = _pairs(rows, mode)
        two = summary[mode].get("two_scanners", {})
        ax.scatter(
            dhu,
            dt,
            s=12,
            c=colour,
            label=f"{names[mode]}: {100 * two.get('fraction_within_0_3', 0):.0f} % within 0.3, "
            f"max {two.get('fn_t_abs_diff_max', 0):.2f}",
        )
    ax.axhline(0.3, color="k", lw=0.8, ls="--")
    ax.set_xlabel("raw HU difference, femur mask mean (two scanners, same case)")
    ax.set_ylabel("FN T-score difference (two scanners)")
    ax.set_title("same case, two scanners: raw HU vs T-score", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    for mode, colour in (
        ("kvp", "tab:green"),
        ("no_kvp", "tab:red"),
        ("site", "tab:purple"),
        ("oracle", "0.4"),
    ):
        rnd = [
            r
            for r in rows
            if r["mode"] == mode
            and r["scanner"] == "random"
            and r["status"] == "ok"
            and r["fn_true"]
        ]
        axes[4].scatter(
            [r["energy_kev"] for r in rnd],
            [r["fn_est"] - r["fn_true"] for r in rnd],
            s=10,
            c=colour,
            label=names[mode],
        )
    axes[4].axhline(0, color="k", lw=0.8)
    axes[4].set_xlabel("random scanner's effective energy (keV)")
    axes[4].set_ylabel("FN aBMD error (g/cm²)")
    axes[4].legend(fontsize=8)
    axes[4].grid(alpha=0.3)
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
