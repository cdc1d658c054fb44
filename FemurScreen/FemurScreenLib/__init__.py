# ruff: noqa: N999 (Slicer names a module's helper package <ModuleName>Lib)
"""Slicer-side code of the FemurScreen module that needs MRML but never Qt.

``FemurScreen.py`` (the Qt widget) imports this package; this package imports the Slicer-free
``femurscreen`` core. Nothing here imports ``qt`` or ``ctk``, so the Logic runs in Slicer's
Python console, in the module's self-test and in pytest on ``slicer-core``.
"""

import sys

__all__ = ["ReloadsPackages", "forget_packages"]


def forget_packages() -> None:
    """Drop this package and the core from ``sys.modules`` so that a module's *Reload* picks
    up their edits too (Slicer reloads only the module file itself)."""
    for name in list(sys.modules):
        if name.startswith(("FemurScreenLib", "femurscreen")):
            del sys.modules[name]


class ReloadsPackages:
    """Mixin for a module widget, listed before ``ScriptedLoadableModuleWidget``: the developer
    *Reload* button reloads this package and the core too, then the module as Slicer does."""

    def onReload(self) -> None:
        forget_packages()
        super().onReload()  # type: ignore[misc]
