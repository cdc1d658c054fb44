"""Draw the extension icon (FemurScreen.png, 128x128) and the module icon from code."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, FancyBboxPatch, Polygon  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def draw(path: Path, size_px: int = 128) -> None:
    fig = plt.figure(figsize=(1, 1), dpi=size_px)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.add_patch(
        FancyBboxPatch(
            (0.03, 0.03), 0.94, 0.94, boxstyle="round,pad=0,rounding_size=0.16", color="#16324f"
        )
    )
    bone = "#f3ead3"
    # proximal femur: head, neck, greater trochanter, shaft
    ax.add_patch(Circle((0.30, 0.74), 0.13, color=bone))
    ax.add_patch(Polygon([(0.33, 0.82), (0.40, 0.62), (0.60, 0.52), (0.52, 0.68)], color=bone))
    ax.add_patch(
        Polygon([(0.48, 0.68), (0.70, 0.78), (0.74, 0.66), (0.66, 0.46), (0.45, 0.55)], color=bone)
    )
    ax.add_patch(Polygon([(0.50, 0.55), (0.67, 0.50), (0.66, 0.10), (0.52, 0.10)], color=bone))
    # three-class bars: normal, osteopenia, osteoporosis
    for i, (height, colour) in enumerate(((0.30, "#4caf50"), (0.18, "#ffb300"), (0.10, "#e53935"))):
        ax.add_patch(
            FancyBboxPatch(
                (0.12 + i * 0.09, 0.10),
                0.06,
                height,
                boxstyle="round,pad=0,rounding_size=0.02",
                color=colour,
            )
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=size_px, transparent=True)
    plt.close(fig)


if __name__ == "__main__":
    draw(ROOT / "FemurScreen.png")
    draw(ROOT / "FemurScreen" / "Resources" / "Icons" / "FemurScreen.png")
    sys.exit(0)
