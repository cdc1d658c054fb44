"""Label values, side names and bone-status classes shared by every part of the pipeline.

Images are handled in SimpleITK's LPS world frame: +x points to the patient's LEFT,
+y to posterior, +z to superior. Label values never depend on the voxel order of a file.
"""

from __future__ import annotations

import math

BACKGROUND = 0
LEFT = 1  # the patient's LEFT proximal femur (world +x in LPS)
RIGHT = 2  # the patient's RIGHT proximal femur (world -x in LPS)

SIDES: dict[str, int] = {"left": LEFT, "right": RIGHT}
SIDE_NAMES: dict[int, str] = {LEFT: "left", RIGHT: "right"}

CLASSES: tuple[str, ...] = ("normal", "osteopenia", "osteoporosis")

# Tissue labels of a phantom's tissue map (``femurscreen phantom --tissues``): written by the
# renderer (phantom/voxelize.py), redrawn per tissue by segmentation training (vbnet/data.py).
TISSUES: dict[str, int] = {
    "air": 0,
    "fat": 1,
    "soft": 2,  # muscle, skin, organs, vessels, cartilage, joint capsule
    "dense_soft": 3,  # above soft tissue but not bone (table shell, dense vessel walls)
    "femur_cortex": 4,
    "femur_trabecular": 5,
    "pelvis_cortex": 6,
    "pelvis_trabecular": 7,
    "spine_cortex": 8,
    "spine_trabecular": 9,
    "metal": 10,
}

# WHO (1994) thresholds on the DXA T-score.
T_NORMAL_MIN = -1.0  # T >= -1.0 normal
T_OSTEOPOROSIS_MAX = -2.5  # T <= -2.5 osteoporosis


def bone_status(t_score: float) -> str:
    """WHO class for a T-score: normal (T >= -1), osteopenia (-2.5 < T < -1), osteoporosis."""
    if not math.isfinite(t_score):
        raise ValueError(f"t_score must be a finite number, got {t_score!r}")
    if t_score >= T_NORMAL_MIN:
        return "normal"
    if t_score > T_OSTEOPOROSIS_MAX:
        return "osteopenia"
    return "osteoporosis"


# Display colours (RGB 0..1) used by previews, reports and Slicer segments alike.
SIDE_COLORS: dict[str, tuple[float, float, float]] = {
    "left": (0.90, 0.42, 0.05),  # orange
    "right": (0.19, 0.51, 0.74),  # blue
}
