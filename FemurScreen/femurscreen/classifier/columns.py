"""Which columns of a FEATURES table are features, and which describe the row.

A FEATURES table (written by :mod:`femurscreen.features`) has one row per case and side, a few
bookkeeping columns, then one column per feature named as pyradiomics names it plus our own
``density_`` columns. Features are recognised by prefix so that extra columns a user adds
(labels, T-scores, notes) can never leak into a model as if they were measurements.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from femurscreen.status import Status

CASE = "case_id"
SIDE = "side"
STATUS = "status"
ERROR = "error"
PARAMS_SHA = "radiomics_params_sha256"
META_COLUMNS: tuple[str, ...] = (CASE, SIDE, STATUS, ERROR, PARAMS_SHA)

# pyradiomics image types (original, LoG, wavelet[level], the point filters, LBP) + our density.
FEATURE_PREFIXES: tuple[str, ...] = (
    "original_",
    "log-sigma-",
    "wavelet",
    "square_",
    "squareroot_",
    "logarithm_",
    "exponential_",
    "gradient_",
    "lbp-2D",
    "lbp-3D",
    "density_",
)
LABEL_COLUMNS: tuple[str, ...] = ("true_class", "bone_status")  # first one present wins


def feature_columns(columns: Iterable[str]) -> list[str]:
    """The feature columns, in table order."""
    return [c for c in columns if str(c).startswith(FEATURE_PREFIXES)]


def ok_mask(table: pd.DataFrame) -> pd.Series:
    """Rows whose extraction succeeded (all rows when the table has no status column)."""
    if STATUS not in table.columns:
        return pd.Series(True, index=table.index)
    return table[STATUS].fillna("ok").astype(str).str.strip().str.lower().eq(Status.OK)


def row_names(table: pd.DataFrame) -> list[str]:
    """``case_id/side`` for messages."""
    sides = table[SIDE] if SIDE in table.columns else pd.Series("", index=table.index)
    return [f"{c}/{s}" if s else str(c) for c, s in zip(table[CASE], sides, strict=True)]


def short_list(items: Iterable[str], limit: int = 10) -> str:
    """``a, b, c and 7 more`` for messages that must stay readable."""
    items = [str(i) for i in items]
    head = ", ".join(items[:limit])
    return head if len(items) <= limit else f"{head} and {len(items) - limit} more"
