"""Slicer's real MRML core (``slicer-core`` from PyPI) set up the way the Slicer application does.

Desktop Slicer builds a ``vtkSlicerApplicationLogic`` at start-up, registers each module's
C++ logic in it, exposes them as ``slicer.modules.<name>.logic()`` and the scene as
``slicer.mrmlScene``. ``slicer.util`` helpers (``arrayFromSegmentBinaryLabelmap``,
``updateSegmentBinaryLabelmapFromArray``...) look the logics up there. ``slicer-core`` has the
classes but no application, so this harness does only that registration (as trame-slicer's
``SlicerApp`` does): every object is Slicer's own C++ class; nothing is replaced or imitated.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import slicer
import vtk


class _Module:
    """What ``slicer.modules.<name>`` offers scripts: the module's registered logic."""

    def __init__(self, app_logic: slicer.vtkSlicerApplicationLogic, name: str) -> None:
        self._app_logic = app_logic
        self._name = name

    def logic(self):
        return self._app_logic.GetModuleLogic(self._name)


@dataclass
class SlicerCore:
    """The scene, the application logic and the module logics registered in it."""

    scene: slicer.vtkMRMLScene
    app_logic: slicer.vtkSlicerApplicationLogic
    logics: dict[str, object] = field(default_factory=dict)
    modules: types.SimpleNamespace = field(default_factory=types.SimpleNamespace)

    def activate(self) -> SlicerCore:
        """Make this the application scripts see (``slicer.mrmlScene``, ``slicer.modules``)."""
        slicer.mrmlScene = self.scene
        slicer.modules = self.modules
        return self

    def close(self) -> None:
        """Empty the scene (nodes are released; the logics stay registered)."""
        self.scene.Clear(False)


# Module name in slicer.modules (lower case, as Slicer names them) -> (logic name, factory).
_LOGICS = {
    "colors": ("Colors", slicer.vtkMRMLColorLogic),
    "volumes": ("Volumes", slicer.vtkSlicerVolumesLogic),
    "segmentations": ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
    "subjecthierarchy": ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
    "tables": ("Tables", slicer.vtkSlicerTablesLogic),
    "plots": ("Plots", slicer.vtkSlicerPlotsLogic),
}


def start_slicer_core() -> SlicerCore:
    """A fresh scene with the Colors, Volumes, Segmentations, SubjectHierarchy, Tables and Plots
    logics registered in a ``vtkSlicerApplicationLogic``; sets ``slicer.mrmlScene`` and
    ``slicer.modules`` like the application does."""
    vtk.vtkObject.GlobalWarningDisplayOff()  # Slicer's logics warn about their share folders
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    core = SlicerCore(scene=scene, app_logic=app_logic)
    modules = core.modules
    for module_name, (logic_name, factory) in _LOGICS.items():
        logic = factory()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(logic_name, logic)
        core.logics[logic_name] = logic
        setattr(modules, module_name, _Module(app_logic, logic_name))
    vtk.vtkObject.GlobalWarningDisplayOn()
    return core.activate()
