"""Classify femurs from their features with a verified model folder.

One output row per input row (case and side): the three class probabilities, the predicted
class, whether the case lies inside the training distribution (``applicable``) and a note when
the probabilities should not be trusted. A row whose features could not be extracted, or that
holds NaN in a feature the model needs, gets ``status = error`` and a message; the other rows
are still classified. Problems with the model itself (tampered, wrong features, other radiomics
parameters) stop everything with a :class:`~femurscreen.errors.ModelError`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from femurscreen.classifier import columns as col
from femurscreen.classifier.persistence import LoadedModel, load_model
from femurscreen.errors import InputError, ModelError
from femurscreen.resources import resource_path
from femurscreen.status import Status

log = logging.getLogger(__name__)

DEMO_MODEL = ("Models", "classifier-demo")
PROBA_PREFIX = "p_"
PREDICTED = "predicted"
APPLICABLE = "applicable"
RELIABILITY = "reliability"
TRUE_CLASS = "true_class"
UNRELIABLE = "outside the training distribution, probabilities unreliable"


def default_model_dir() -> Path:
    """The shipped demo model folder."""
    return resource_path(*DEMO_MODEL)


def _check_params(features: pd.DataFrame, loaded: LoadedModel) -> None:
    expected = loaded.manifest.get("radiomics_params_sha256")
    if not expected:
        return
    if col.PARAMS_SHA not in features.columns:
        log.warning(
            "the features table has no %s column: cannot check that it was extracted with the "
            "model's radiomics parameters (%s…)",
            col.PARAMS_SHA,
            expected[:16],
        )
        return
    ok = col.ok_mask(features)
    found = sorted(
        {str(v).strip() for v in features.loc[ok, col.PARAMS_SHA].dropna() if str(v).strip()}
    )
    other = [v for v in found if v != expected]
    if other:
        raise ModelError(
            f"model expects radiomics params {expected[:16]}…, features were extracted with "
            f"{', '.join(v[:16] + '…' for v in other)}",
            "extract the features with the radiomics parameter file the model was trained with "
            "(see radiomics_params_sha256 in its manifest.json), or use a model trained on "
            "features from this parameter file",
            loaded.path,
        )


def _check_columns(features: pd.DataFrame, loaded: LoadedModel) -> None:
    missing = [f for f in loaded.features if f not in features.columns]
    if missing:
        raise ModelError(
            f"the features table lacks {len(missing)} of the {len(loaded.features)} features "
            f"the model needs: {col.short_list(missing)}",
            "extract features with the model's radiomics parameter file (all features, or at "
            "least those listed in the model's manifest.json)",
            loaded.path,
        )


def classify(
    features: pd.DataFrame, model_dir: str | Path | LoadedModel | None = None
) -> pd.DataFrame:
    """Probabilities, prediction and applicability per row of a FEATURES table.

    ``model_dir`` defaults to the shipped demo model. The result's ``attrs`` carry ``demo``,
    ``demo_notice`` and ``model`` (the folder) so that callers can label what they show.
    """
    if isinstance(model_dir, LoadedModel):
        loaded = model_dir
    else:
        loaded = load_model(default_model_dir() if model_dir is None else model_dir)
    if col.CASE not in features.columns:
        raise InputError(
            "the features table has no 'case_id' column", "use a FEATURES.csv from extraction"
        )
    _check_params(features, loaded)
    _check_columns(features, loaded)
    classes = loaded.classes
    n = len(features)
    values = features[loaded.features].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    status = np.array([Status.OK] * n, dtype=object)
    error = np.array([""] * n, dtype=object)
    extracted = col.ok_mask(features).to_numpy()
    for i in np.flatnonzero(~extracted):
        status[i] = Status.ERROR
        message = features[col.ERROR].iloc[i] if col.ERROR in features.columns else ""
        error[i] = "feature extraction failed" + (
            f": {message}" if isinstance(message, str) and message.strip() else ""
        )
    bad = ~np.isfinite(values)
    for i in np.flatnonzero(extracted & bad.any(axis=1)):
        names = [loaded.features[j] for j in np.flatnonzero(bad[i])]
        status[i] = Status.ERROR
        error[i] = f"missing or non-finite value(s) in {col.short_list(names, 5)}"
    good = status == Status.OK
    proba = np.full((n, len(classes)), np.nan)
    applicable = np.zeros(n, dtype=bool)
    reliability = np.array(["not classified"] * n, dtype=object)
    if good.any():
        rows = pd.DataFrame(values[good], columns=loaded.features)
        raw = loaded.model.predict_proba(rows)
        order = [int(c) for c in loaded.model.classes_]
        proba[np.ix_(good, order)] = raw
        ok, reasons = loaded.applicability.assess(values[good])
        applicable[good] = ok
        reliability[good] = [
            "" if fine else f"{UNRELIABLE}: {why}" for fine, why in zip(ok, reasons, strict=True)
        ]
    out = pd.DataFrame({col.CASE: features[col.CASE].astype(str).to_numpy()})
    out[col.SIDE] = features[col.SIDE].to_numpy() if col.SIDE in features.columns else ""
    out[col.STATUS] = status
    out[col.ERROR] = error
    for j, name in enumerate(classes):
        out[PROBA_PREFIX + name] = proba[:, j]
    predicted = np.array([""] * n, dtype=object)
    predicted[good] = [classes[j] for j in np.argmax(proba[good], axis=1)]
    out[PREDICTED] = predicted
    out[APPLICABLE] = applicable
    out[RELIABILITY] = reliability
    for label in col.LABEL_COLUMNS:
        if label in features.columns:
            out[TRUE_CLASS] = features[label].to_numpy()
            break
    out.attrs.update(
        demo=loaded.demo,
        demo_notice=loaded.manifest.get("demo_notice"),
        model=str(loaded.path),
    )
    bad_rows = int((~good).sum())
    if bad_rows:
        log.warning("%d of %d row(s) could not be classified (status 'error')", bad_rows, n)
    return out
