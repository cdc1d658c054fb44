"""Radiomics features and density readouts per proximal femur side.

Public API:

- ``extract_case_features(ct, mask, *, case_id, params=None, only=None, cache_dir=None,
  sides=("left", "right")) -> list[dict]``: one row per side.
- ``extract_cohort_features(cohort_csv, *, params=None, only=None, cache_dir=None, workers=1)
  -> pandas.DataFrame``.
- ``extract_features(out, cohort_csv=None, *, ct=None, mask=None, ...)``: the CLI verb's work.
- ``write_features_csv(rows_or_df, path)``: the table, columns in a fixed order, atomically.
- ``params_sha256(path)``, ``default_params_path()``: the versioned pyradiomics parameter file.
- ``density_readouts(ct, side_mask, side)``: trabecular HU in head, neck, intertrochanteric region.
- ``default_cache_dir()``: where the CLI caches rows unless told otherwise.
"""

from __future__ import annotations

from femurscreen.features.cache import default_cache_dir
from femurscreen.features.case import LEADING_COLUMNS, extract_case_features
from femurscreen.features.cohort_extract import (
    extract_cohort_features,
    extract_features,
    read_cohort,
)
from femurscreen.features.density import DENSITY_KEYS, density_readouts
from femurscreen.features.params import (
    default_params_path,
    params_sha256,
    plan_features,
    sort_features,
)
from femurscreen.features.table import features_frame, write_features_csv

__all__ = [
    "DENSITY_KEYS",
    "LEADING_COLUMNS",
    "default_cache_dir",
    "default_params_path",
    "density_readouts",
    "extract_case_features",
    "extract_cohort_features",
    "extract_features",
    "features_frame",
    "params_sha256",
    "plan_features",
    "read_cohort",
    "sort_features",
    "write_features_csv",
]
