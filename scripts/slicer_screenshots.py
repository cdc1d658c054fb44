"""Render README screenshots with Slicer's own MRML displayable managers, off-screen.

Loads the shipped sample CT into a ``slicer-core`` scene, segments it with the module's Logic
(the same code the Slicer module runs) and renders, with Slicer's slice logic and its
segmentation displayable managers (2D and 3D) into an off-screen VTK window (EGL/OSMesa):

- ``Resources/slicer_axial.png``: axial slice through the femoral heads, segments overlaid;
- ``Resources/slicer_coronal.png``: coronal slice through both heads;
- ``Resources/slicer_3d.png``: the segments' surfaces seen from the front;
- ``FemurScreen/Resources/Icons/FemurScreen{CT,Phantom}.png``: Sample Data thumbnails.

Views follow Slicer's radiological convention (patient's right on the left of the screen).

    python scripts/slicer_screenshots.py [--out-dir Resources] [--icons-dir ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "FemurScreen"), str(ROOT / "Testing")]

import slicer  # noqa: E402
import vtk  # noqa: E402
from FemurScreenLib.logic import FemurScreenLogic  # noqa: E402
from slicer_harness import start_slicer_core  # noqa: E402

SAMPLE_DATA = ROOT / "FemurScreen" / "Resources" / "SampleData"
SAMPLE_CT = SAMPLE_DATA / "totalseg_example_ct.nii.gz"
# Sample Data thumbnails: (file in SampleData, thumbnail name in Icons), as FemurScreen.py lists.
THUMBNAILS = (
    ("totalseg_example_ct.nii.gz", "FemurScreenCT.png"),
    ("femurscreen_phantom_ct.nii.gz", "FemurScreenPhantom.png"),
)
BONE_WINDOW = (1500.0, 300.0)  # width, level (HU)


class OffscreenView:
    """A render window with a displayable-manager group, as a Slicer view widget holds."""

    def __init__(self, app_logic, factory, managers: list[str], size: tuple[int, int]) -> None:
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetSize(*size)
        self.renderer = vtk.vtkRenderer()
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        self.interactor.Initialize()
        instance = factory.GetInstance()
        instance.SetMRMLApplicationLogic(app_logic)
        for name in managers:
            if not instance.IsDisplayableManagerRegistered(name):
                instance.RegisterDisplayableManager(name)
        self.group = slicer.vtkMRMLDisplayableManagerGroup()
        self.group.SetRenderer(self.renderer)
        self.group.Initialize(instance, self.renderer)

    def save(self, path: Path) -> Path:
        self.window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.Update()
        writer = vtk.vtkPNGWriter()
        path.parent.mkdir(parents=True, exist_ok=True)
        writer.SetFileName(str(path))
        writer.SetInputConnection(grab.GetOutputPort())
        writer.Write()
        return path


class SliceView(OffscreenView):
    """Slicer's slice logic (reslice + window/level + blending) with its 2D managers."""

    def __init__(self, core, name: str, size: tuple[int, int]) -> None:
        super().__init__(
            core.app_logic,
            slicer.vtkMRMLSliceViewDisplayableManagerFactory,
            ["vtkMRMLSegmentationsDisplayableManager2D"],
            size,
        )
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        if core.app_logic.GetSliceLogics() is None:
            core.app_logic.SetSliceLogics(vtk.vtkCollection())
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(core.app_logic)
        self.logic.SetMRMLScene(core.scene)
        core.app_logic.GetSliceLogics().AddItem(self.logic)
        self.node = self.logic.AddSliceNode(name)
        self.group.SetMRMLDisplayableNode(self.node)
        # The slice image itself: in Slicer a CTK light-box manager draws it; here an actor.
        mapper = vtk.vtkImageMapper()
        mapper.SetColorWindow(255)
        mapper.SetColorLevel(127.5)
        self.actor = vtk.vtkActor2D()
        self.actor.SetMapper(mapper)
        self.actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self.actor)
        self.size = size

    def show(self, volume, orientation: str, centre, zoom: float = 1.0) -> None:
        """Show ``volume`` on the plane through ``centre`` (RAS), centred on it."""
        self.logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
        self.node.SetOrientation(orientation)
        self.logic.ResizeSliceNode(*self.size)
        self.logic.FitSliceToBackground()
        if zoom != 1.0:
            fov = self.node.GetFieldOfView()
            self.node.SetFieldOfView(fov[0] / zoom, fov[1] / zoom, fov[2])
        self.node.JumpSliceByCentering(*centre)
        self.actor.GetMapper().SetInputConnection(self.logic.GetImageDataConnection())


class ThreeDView(OffscreenView):
    """Slicer's 3D view managers: camera, view and segmentation surfaces."""

    def __init__(self, core, size: tuple[int, int]) -> None:
        super().__init__(
            core.app_logic,
            slicer.vtkMRMLThreeDViewDisplayableManagerFactory,
            [
                "vtkMRMLCameraDisplayableManager",
                "vtkMRMLViewDisplayableManager",
                "vtkMRMLSegmentationsDisplayableManager3D",
            ],
            size,
        )
        self.node = core.scene.AddNewNodeByClass("vtkMRMLViewNode")
        self.node.SetBackgroundColor(0.0, 0.0, 0.0)
        self.node.SetBackgroundColor2(0.0, 0.0, 0.0)
        self.node.SetBoxVisible(False)
        self.node.SetAxisLabelsVisible(False)
        self.group.SetMRMLDisplayableNode(self.node)

    def look_from_front(self, centre: tuple[float, float, float]) -> None:
        camera = self.renderer.GetActiveCamera()
        camera.SetFocalPoint(*centre)
        camera.SetPosition(centre[0], centre[1] + 1000.0, centre[2] + 250.0)  # anterior, above
        camera.SetViewUp(0.0, 0.0, 1.0)
        self.renderer.ResetCamera()
        camera.Zoom(1.3)


def load_ct(scene, path: Path, name: str):
    """A CT volume read by Slicer's reader, shown with a bone window."""
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(volume):
        raise SystemExit(f"cannot read {path}")
    volume.CreateDefaultDisplayNodes()
    display = volume.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(*BONE_WINDOW)
    return volume


def render(out_dir: Path, icons_dir: Path) -> list[Path]:
    core = start_slicer_core()
    scene = core.scene
    volume = load_ct(scene, SAMPLE_CT, "sample CT")
    logic = FemurScreenLogic(scene)
    started = time.perf_counter()
    segmentation = logic.process(volume)
    print(f"segmented in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    segmentation.GetDisplayNode().SetOpacity2DFill(0.45)
    centres = [
        segmentation.GetSegmentCenterRAS(segment_id)
        for segment_id in segmentation.GetSegmentation().GetSegmentIDs()
    ]
    centre = tuple(sum(c[i] for c in centres) / len(centres) for i in range(3))

    written = []
    slice_view = SliceView(core, "Red", (640, 520))
    slice_view.show(volume, "Axial", centre, zoom=1.3)
    written.append(slice_view.save(out_dir / "slicer_axial.png"))
    # The sample CT ends just below the femoral heads: look a little above them.
    slice_view.show(volume, "Coronal", (centre[0], centre[1], centre[2] + 60.0), zoom=1.3)
    written.append(slice_view.save(out_dir / "slicer_coronal.png"))

    segmentation.CreateClosedSurfaceRepresentation()
    view = ThreeDView(core, (640, 520))
    view.look_from_front(centre)
    written.append(view.save(out_dir / "slicer_3d.png"))

    # Sample Data thumbnails: each CT alone, axial through its femoral heads.
    segmentation.GetDisplayNode().SetVisibility(False)
    thumbnail = SliceView(core, "Yellow", (260, 280))
    for file_name, icon in THUMBNAILS:
        path = SAMPLE_DATA / file_name
        if not path.exists():
            continue
        ct = volume if path == SAMPLE_CT else load_ct(scene, path, file_name)
        heads = centre
        if ct is not volume:
            other = logic.process(ct)
            other.GetDisplayNode().SetVisibility(False)
            points = [other.GetSegmentCenterRAS(i) for i in other.GetSegmentation().GetSegmentIDs()]
            heads = tuple(sum(p[i] for p in points) / len(points) for i in range(3))
        thumbnail.show(ct, "Axial", heads)
        written.append(thumbnail.save(icons_dir / icon))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "Resources")
    parser.add_argument(
        "--icons-dir", type=Path, default=ROOT / "FemurScreen" / "Resources" / "Icons"
    )
    args = parser.parse_args(argv)
    for path in render(args.out_dir, args.icons_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
