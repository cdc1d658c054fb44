"""VB-Net proximal femur segmentation: network, coarse-to-fine inference, training, weights.

``VBNetEngine(weights_dir=None, device=None).predict(ct) -> labels`` (0 / 1 = patient's left /
2 = right, in the CT's geometry). Heavy imports (torch) happen when this package is imported,
so the segmentation pipeline imports it lazily, only when the VB-Net engine is chosen.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait make PyTorch 3-4x slower whenever another process
# holds one of the cores (2-core machines, Slicer's own work): measured 15.5 s vs 6.3 s for one
# CT. Passive waiting costs nothing when the machine is idle. It only takes effect if torch is
# not imported yet; a value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .engine import InferenceSettings, VBNetEngine, default_weights_dir
from .network import VBNet, parameter_count
from .training import TrainConfig, train_seg
from .weights import DEMO_NOTICE, load_model, read_manifest, save_model

__all__ = [
    "DEMO_NOTICE",
    "InferenceSettings",
    "TrainConfig",
    "VBNet",
    "VBNetEngine",
    "default_weights_dir",
    "load_model",
    "parameter_count",
    "read_manifest",
    "save_model",
    "train_seg",
]
