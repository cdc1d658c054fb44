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
    xs = [p["observed_hu"] for p in cal["points"] if p["observed_hu"] is not None]
    ys = [p["reference_hu"] for p in cal["points"] if p["observed_hu"] is not None]
    names = [p["name"] for p in cal["points"] if p["observed_hu"] is not None]
    ax.scatter(xs, ys, color="k", zorder=3)
    for x, y, n in zip(xs, ys, names, strict=True):
        ax.annotate(f"{n}\n{x:.0f} HU", (x, y), textcoords="offset points", xytext=(6, -18))
    if cal["slope"] is not None:
        line = np.array([-1100.0, 300.0])
        ax.plot(line, cal["slope"] * line + cal["intercept"], "b-", lw=1)
    ax.set_xlabel("observed HU")
    ax.set_ylabel("reference HU (x 0.80 = mg/cm³ K2HPO4)")
    ax.set_title(f"calibration: {cal['status']}", fontsize=10)
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

        ax.set_title(
            f"{side}: FN {f(s['fn_abmd_g_cm2'])} (T {s['fn_t_score']}), "
            f"TH {f(s['th_abmd_g_cm2'])} (T {s['th_t_score']})",
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
