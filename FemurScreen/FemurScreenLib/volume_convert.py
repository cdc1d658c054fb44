"""MRML volume nodes <-> SimpleITK images, with the geometry kept exactly.

Slicer describes a volume in RAS: its ``IJKToRAS`` matrix maps voxel indices to millimetres
toward the patient's Right, Anterior and Superior. SimpleITK and the FemurScreen core use LPS
(Left, Posterior, Superior). The two frames differ by negating the first two world axes, so the
LPS direction is the RAS direction with its first two rows negated and the LPS origin is the RAS
origin with x and y negated. Voxel order is the same in both: VTK
stores x fastest, as does a numpy array of shape (k, j, i) from ``sitk.GetArrayFromImage``.

Parent transforms are not applied here: the image is the volume in its own frame, and whatever
is made from it (the segmentation) is placed under the volume's parent transform.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import vtk
from femurscreen.errors import InputError
from vtk.util import numpy_support

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def matrix_to_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """A 4x4 VTK matrix as a numpy array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def array_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A 4x4 numpy array as a VTK matrix."""
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def ijk_to_ras(volume_node) -> np.ndarray:
    """The volume's 4x4 voxel-index -> RAS matrix (spacing, direction and origin together)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return matrix_to_array(matrix)


def image_ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """The image's 4x4 voxel-index -> LPS matrix."""
    out = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    out[:3, :3] = direction @ np.diag(image.GetSpacing())
    out[:3, 3] = image.GetOrigin()
    return out


def volume_array(volume_node) -> np.ndarray:
    """A copy of the voxels as a numpy array in (k, j, i) order."""
    image_data = volume_node.GetImageData() if volume_node is not None else None
    name = volume_node.GetName() if volume_node is not None else "(none)"
    if image_data is None or image_data.GetNumberOfPoints() == 0:
        raise InputError(f"volume '{name}' has no voxels", "load a CT volume and select it")
    if image_data.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"volume '{name}' has {image_data.GetNumberOfScalarComponents()} components per "
            "voxel (colour or vector image)",
            "select a grey-scale CT volume",
        )
    dims = image_data.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
    return np.array(scalars.reshape(dims[::-1]), copy=True)


def volume_to_image(volume_node) -> sitk.Image:
    """The volume as a SimpleITK image in LPS with identical voxels and world geometry."""
    array = volume_array(volume_node)
    ijk_to_ras_matrix = ijk_to_ras(volume_node)
    # The first array element is the voxel at the extent's minimum corner, which is index 0
    # only when the extent starts at 0 (it does for volumes Slicer reads, not always otherwise).
    extent = volume_node.GetImageData().GetExtent()
    first = np.array([extent[0], extent[2], extent[4], 1.0])
    origin_ras = (ijk_to_ras_matrix @ first)[:3]
    spacing = np.array(volume_node.GetSpacing(), dtype=float)
    if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
        raise InputError(
            f"volume '{volume_node.GetName()}' has invalid voxel spacing {tuple(spacing)}",
            "fix the volume's spacing in the Volumes module",
        )
    direction_ras = ijk_to_ras_matrix[:3, :3] / spacing  # columns: unit axis directions
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in RAS_TO_LPS @ origin_ras))
    image.SetDirection(tuple(float(v) for v in (RAS_TO_LPS @ direction_ras).ravel()))
    return image


def set_volume_geometry(volume_node, image: sitk.Image) -> None:
    """Give the volume node the image's world geometry (converted from LPS to RAS)."""
    spacing = np.array(image.GetSpacing(), dtype=float)
    direction_lps = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    direction_ras = RAS_TO_LPS @ direction_lps  # the flip is its own inverse
    volume_node.SetSpacing(*spacing)
    volume_node.SetOrigin(*(RAS_TO_LPS @ np.array(image.GetOrigin(), dtype=float)))
    matrix = np.eye(4)
    matrix[:3, :3] = direction_ras
    volume_node.SetIJKToRASDirectionMatrix(array_to_matrix(matrix))


def set_volume_array(volume_node, array: np.ndarray) -> None:
    """Replace the voxels of a volume node (deep copy; shape (k, j, i))."""
    array = np.ascontiguousarray(array)
    if array.ndim != 3:
        raise ValueError(f"expected a 3-D array, got shape {array.shape}")
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    vtk_array = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image_data.GetPointData().SetScalars(vtk_array)
    volume_node.SetAndObserveImageData(image_data)


def image_to_volume(image: sitk.Image, volume_node) -> None:
    """Fill a volume node (scalar or label map) with a SimpleITK image, geometry included."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("only 3-D single-component images can become volume nodes")
    set_volume_array(volume_node, sitk.GetArrayFromImage(image))
    set_volume_geometry(volume_node, image)


def corner_points_world(ijk_to_world: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """World coordinates of the 8 corner voxel centres of a grid (rows: points)."""
    corners = np.array(
        [
            [i, j, k, 1.0]
            for i in (0, size[0] - 1)
            for j in (0, size[1] - 1)
            for k in (0, size[2] - 1)
        ]
    )
    return (ijk_to_world @ corners.T).T[:, :3]
