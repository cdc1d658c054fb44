"""Proximal femur segmentation: engines (classical, VB-Net), shared post-processing, flags.

``segment(image, engine=...)`` in :mod:`femurscreen.segmentation.pipeline` is the entry point.
Names are resolved lazily so that importing a subpackage (e.g. ``vbnet``) stays cheap and
free of import cycles.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "SegmentationResult",
    "SideResult",
    "get_engine",
    "segment",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from femurscreen.segmentation import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
