"""The feature table: one row per case and side, columns in a fixed order, written atomically.

Columns: case_id, side, status, error, radiomics_params_sha256, then the pyradiomics features in
pyradiomics' own order, then the ``density_*`` readouts, then (when the rows carry them, as
``femurscreen screen``'s do) the calibrated-density numbers :data:`BMD_COLUMNS`. A fixed order
means two runs of the same cohort give byte-identical CSVs, and a model can check its columns by
name. The BMD columns are not features (no feature prefix, see
``femurscreen.classifier.columns``): a model trained on a screen's table never learns from them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from femurscreen.features.case import LEADING_COLUMNS
from femurscreen.features.density import DENSITY_KEYS
from femurscreen.features.params import sort_features
from femurscreen.output.columns import BMD_COLUMNS, QUALITY_COLUMNS


def ordered_columns(columns: Iterable[str]) -> list[str]:
    """Leading columns, features in pyradiomics order, density readouts, then the BMD numbers."""
    columns = list(dict.fromkeys(columns))
    density = [c for c in DENSITY_KEYS if c in columns]
    density += sorted(c for c in columns if c.startswith("density_") and c not in density)
    trailing = (*BMD_COLUMNS, *QUALITY_COLUMNS)  # not features: the density, the mask check
    bmd = [c for c in trailing if c in columns]
    features = sort_features(
        c
        for c in columns
        if c not in LEADING_COLUMNS and not c.startswith("density_") and c not in trailing
    )
    return list(LEADING_COLUMNS) + features + density + bmd


def features_frame(rows: Iterable[Mapping] | pd.DataFrame) -> pd.DataFrame:
    """A DataFrame of feature rows with the table's column order (missing leading columns added)."""
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for column in LEADING_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    frame["error"] = frame["error"].fillna("")
    return frame[ordered_columns(frame.columns)].reset_index(drop=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_features_csv(rows_or_df: Iterable[Mapping] | pd.DataFrame, path: str | Path) -> Path:
    """Write the feature table to ``path`` via a temporary file and ``os.replace``."""
    path = Path(path)
    frame = features_frame(rows_or_df)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            frame.to_csv(handle, index=False)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a table is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
