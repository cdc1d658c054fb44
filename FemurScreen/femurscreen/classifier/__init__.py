"""Bone-status classifier: selection + random forest, safe persistence, applicability flag.

- :func:`train_classifier` / :func:`fit_classifier` (``training``): nested grouped CV and the
  final model on the selected features;
- :func:`train_classifier_from_cohort` (``cohort``): the ``train-classifier`` verb's work;
- :func:`load_model` (``persistence``): sha256- and type-checked loading, never pickle;
- :func:`classify` (``predict``): probabilities, prediction and applicability per femur.
"""

from __future__ import annotations

from femurscreen.classifier.applicability import Applicability
from femurscreen.classifier.from_cohort import train_classifier_from_cohort
from femurscreen.classifier.persistence import (
    DEMO_NOTICE,
    TRUSTED_TYPES,
    LoadedModel,
    load_model,
    read_manifest,
)
from femurscreen.classifier.predict import classify, default_model_dir
from femurscreen.classifier.training import (
    TrainedClassifier,
    fit_classifier,
    save_classifier,
    train_classifier,
)

__all__ = [
    "DEMO_NOTICE",
    "TRUSTED_TYPES",
    "Applicability",
    "LoadedModel",
    "TrainedClassifier",
    "classify",
    "default_model_dir",
    "fit_classifier",
    "load_model",
    "read_manifest",
    "save_classifier",
    "train_classifier",
    "train_classifier_from_cohort",
]
