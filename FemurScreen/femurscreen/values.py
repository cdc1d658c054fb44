"""Turning numbers from numpy, pandas and pyradiomics into plain, strict-JSON values.

Result files and Slicer tables must never carry NaN tokens or numpy scalars: both the CLI and
the Slicer logic write the same ``result.json``, so they share these two helpers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def finite_number(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not numeric, NaN or infinite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def json_safe(value: Any) -> Any:
    """Plain JSON types (NaN/inf -> null, numpy scalars -> Python, anything else -> str)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
