"""HU landmarks: the Hounsfield values the package treats as fixed physical reference points.

One home for each, so that "what counts as metal" is the same number in the segmentation, the
flags and the classical engine. Module-specific tuning thresholds (a bone threshold for one
step of one algorithm) stay in their module; only values with a physical meaning live here.
"""

from __future__ import annotations

AIR_HU = -1000.0  # air by definition; also what is written outside the scanned field of view
WATER_HU = 0.0  # water by definition
METAL_HU = 2000.0  # above bone: metal (an implant) or its streaks, near or in a femur
# The BMD measurement's own, stricter test: it refuses a side when more than a small fraction
# of the voxels *inside the mask* are at or above this. A different test from METAL_HU's
# (metal near the mask), with its own value; kept as chosen so BMD results do not change.
METAL_IN_MASK_HU = 2500.0

__all__ = ["AIR_HU", "METAL_HU", "METAL_IN_MASK_HU", "WATER_HU"]
