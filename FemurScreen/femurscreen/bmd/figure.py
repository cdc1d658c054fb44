"""A picture of one CT's density read: the calibration line with its tissue points and, per
side, the DXA-like projection with the femoral-neck box and the total-hip region. Why: a
density number must be checkable by eye (right tissue peaks, ROIs where DXA puts them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from femurscreen.atomic import atomic_path


def save_figure(result: dict, projections: dict, out: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.8))
    cal = result["calibration"]
    ax = axes[0]
    pts = [p for p in cal["points"] if p["observed_hu"] is not None]
    xs = [p["observed_hu"] for p in pts]
    ys = [p["reference_hu"] for p in pts]
    ax.scatter(xs, ys, color="k", zorder=3)
    for p in pts:
        res = "" if p.get("residual_hu") is None else f", fit {p['residual_hu']:+.0f}"
        ax.annotate(
            f"{p['name']}\n{p['observed_hu']:.0f} HU{res}",
            (p["observed_hu"], p["reference_hu"]),
            textcoords="offset points",
            xytext=(8, 4) if p["name"] == "air" else (8, -22),
            fontsize=8,
        )
    if cal["slope"] is not None:
        # the map: tissue by tissue through the fitted points, then the bone line above muscle
        knots = sorted((p["fitted_hu"], p["reference_hu"]) for p in pts)
        top = max(xs + [300.0])
        kx = [k[0] for k in knots] + [top + 300.0]
        ky = [k[1] for k in knots] + [cal["slope"] * (top + 300.0) + cal["intercept"]]
        ax.plot(kx, ky, "b-", lw=1, label="observed -> 120 kVp HU")
        ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("observed HU")
    ax.set_ylabel(f"120 kVp HU (x {cal['mg_per_hu']:.2f} = mg/cm³ K2HPO4)")
    if cal.get("energy_kev") is not None:
        kvp = f"{cal['kvp']:.0f} kVp" if cal.get("kvp") else "kVp unknown"
        site = cal.get("site") or {}
        source = (
            "site calibration"
            if cal.get("source") == "site"
            else "phantomless" + (f", site file {site['status']}" if site else "")
        )
        ax.set_title(
            f"calibration {cal['status']} ({source}): {cal['energy_kev']:.1f} ± "
            f"{cal['energy_sd_kev']:.1f} keV ({kvp})\n"
            f"bone {cal['density_slope_mg_cm3_per_hu']:.3f} mg/cm³ per HU "
            f"{cal['density_intercept_mg_cm3']:+.1f}",
            fontsize=9,
        )
    else:
        ax.set_title(f"calibration: {cal['status']}", fontsize=10)
    if cal["status"] != "ok" and cal.get("reason"):
        import textwrap

        ax.text(
            0.03,
            0.97,
            "\n".join(textwrap.wrap(cal["reason"], 48)),
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            color="firebrick",
        )
    ax.grid(alpha=0.3)
    for ax, side in zip(axes[1:], ("right", "left"), strict=True):
        s = result[side]
        p = projections.get(side)
        ax.set_xticks([])
        ax.set_yticks([])
        if p is None or p.areal is None:
            ax.set_title(f"{side}: {s['status']}", fontsize=10)
            ax.set_facecolor("0.9")
            continue
        img = np.where(p.bone, p.areal, np.nan)
        # medial (towards the head) on the image's right for the patient's left femur and on
        # its left for the right femur, as a DXA printout of each hip would show it
        flip = side == "right"
        show = img[::-1, ::-1] if flip else img[::-1]
        im = ax.imshow(show, cmap="magma", vmin=0, vmax=max(1.6, np.nanpercentile(img, 99)))
        for roi, colour in ((p.th_roi, "cyan"), (p.fn_roi, "lime")):
            if roi is not None and roi.any():
                r = roi[::-1, ::-1] if flip else roi[::-1]
                ax.contour(r.astype(float), levels=[0.5], colors=colour, linewidths=1)

        def f(v):
            return "-" if v is None else f"{v:.3f}"

        def t(v):
            return "-" if v is None else f"{v:.1f}"

        ax.set_title(
            f"{side}: FN {f(s['fn_abmd_g_cm2'])} (T {t(s['fn_t_score'])}), "
            f"TH {f(s['th_abmd_g_cm2'])} (T {t(s['th_t_score'])})",
            fontsize=9,
        )
        fig.colorbar(im, ax=ax, fraction=0.04, label="g/cm²")
    fig.suptitle(
        (title + "  " if title else "") + "CT-derived estimate, not a DXA (green: neck box, "
        "cyan: total hip)",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(out)
