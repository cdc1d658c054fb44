"""Column names of the tables FemurScreen writes beside result.json (contracts: add, never
rename). Kept in a module that imports nothing heavy, so the Slicer module and the batch can
name the columns without loading pandas or pyradiomics."""

from __future__ import annotations

from femurscreen.labels import CLASSES

# The calibrated-density numbers of a side (femurscreen.bmd's block), empty when that side's
# density was not graded: the last columns of features.csv (screen) and of the batch summary.
BMD_COLUMNS: tuple[str, ...] = (
    "fn_abmd_g_cm2",
    "th_abmd_g_cm2",
    "fn_t_score",
    "th_t_score",
    "who_class",
)

# A side's segmentation quality (femurscreen.segmentation.pipeline's quality signal: Dice with
# the other engine, 0..1, empty when not computed) and how it was obtained (``dice_with_vbnet``,
# ``dice_with_vbnet_unavailable``, ``edited``; empty when the check was off): in features.csv
# (screen) and the batch summary, after the density columns. result.json calls them ``quality``
# and ``quality_method`` inside each side.
QUALITY_COLUMNS: tuple[str, ...] = ("seg_quality", "seg_quality_method")

# The batch summary CSV (and the Slicer panel's CSV): one row per case and side.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "case_id",
    "side",
    "status",
    "predicted",
    *(f"p_{c}" for c in CLASSES),
    "volume_ml",
    "flags",
    "error",
    "applicable",
    "graded",
    *BMD_COLUMNS,
    *QUALITY_COLUMNS,
)

__all__ = ["BMD_COLUMNS", "QUALITY_COLUMNS", "SUMMARY_COLUMNS"]
