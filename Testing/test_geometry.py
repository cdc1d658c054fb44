"""The one voxel grid: its conventions agree with SimpleITK's on flipped, permuted and oblique
images, boxes are boxes of voxel centres, and the VB-Net, phantom and classical-style uses give
the numbers they gave before."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from femurscreen.geometry import IDENTITY, MIRROR_X, Grid
from femurscreen.phantom.grid import SIGNED_PERMUTATIONS, grid_around
from femurscreen.segmentation.vbnet.geometry import centered_grid, world_box, world_grid


def _oblique_direction(degrees: float = 25.0) -> tuple[float, ...]:
    a, b = math.radians(degrees), math.radians(10.0)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((rz @ rx).ravel().tolist())


DIRECTIONS = {
    "lps": IDENTITY,
    "mirror_x": MIRROR_X,
    "permuted": SIGNED_PERMUTATIONS[17],
    "oblique": _oblique_direction(),
}


def _image(direction: tuple[float, ...]) -> sitk.Image:
    image = sitk.Image([7, 5, 4], sitk.sitkInt16)
    image.SetSpacing((0.8, 1.1, 2.5))
    image.SetOrigin((-12.0, 30.5, 101.0))
    image.SetDirection(direction)
    return image


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_index_and_array_orders_agree_with_simpleitk(name):
    image = _image(DIRECTIONS[name])
    grid = Grid.of(image)
    assert (
        grid.size == (7, 5, 4)
        and grid.shape == (4, 5, 7) == sitk.GetArrayViewFromImage(image).shape
    )
    assert grid.spacing_zyx == (2.5, 1.1, 0.8)
    ijk = np.array([[0, 0, 0], [6, 4, 3], [2.5, 1.25, 0.5]])
    expected = np.array([image.TransformContinuousIndexToPhysicalPoint(p) for p in ijk.tolist()])
    np.testing.assert_allclose(grid.index_to_world(ijk), expected, atol=1e-9)
    np.testing.assert_allclose(grid.array_to_world(ijk[:, ::-1]), expected, atol=1e-9)
    np.testing.assert_allclose(grid.world_to_index(expected), ijk, atol=1e-9)
    np.testing.assert_allclose(grid.world_to_array(expected), ijk[:, ::-1], atol=1e-9)
    assert grid.index_to_world(ijk[1]).shape == (3,)  # a single point stays a single point


def test_boxes_are_boxes_of_voxel_centres_grown_by_a_margin():
    image = _image(MIRROR_X)
    grid = Grid.of(image)
    corners = grid.corners_world()
    centres = [
        image.TransformIndexToPhysicalPoint([i, j, k])
        for i in (0, 6)
        for j in (0, 4)
        for k in (0, 3)
    ]
    np.testing.assert_allclose(np.sort(corners, axis=0), np.sort(centres, axis=0))
    lo, hi = grid.world_bounds()
    lo_out, hi_out = world_box(image)  # the VB-Net's physical extent: outer voxel faces
    np.testing.assert_allclose(lo - lo_out, np.array(grid.spacing) / 2)
    np.testing.assert_allclose(hi_out - hi, np.array(grid.spacing) / 2)


def test_slices_and_sub_grid_cover_the_points_and_miss_when_outside():
    grid = Grid.of(_image(DIRECTIONS["oblique"]))
    inside = grid.index_to_world(np.array([[1.2, 1.1, 0.4], [3.7, 2.1, 2.2]]))
    slices = grid.slices_covering(inside)
    assert slices == (slice(0, 4), slice(1, 4), slice(1, 5))
    sub, sub_slices = grid.sub_grid(inside)
    assert sub_slices == slices and sub.shape == (4, 3, 4) and sub.direction == grid.direction
    # the sub-grid's voxel (0, 0, 0) is the parent's voxel at the slices' start
    np.testing.assert_allclose(sub.origin, grid.index_to_world(np.array([1.0, 1.0, 0.0])))
    far = grid.index_to_world(np.array([[100.0, 100.0, 100.0], [120.0, 130.0, 140.0]]))
    assert grid.slices_covering(far) is None and grid.sub_grid(far) is None


def test_image_reference_and_resample_carry_the_geometry():
    grid = Grid.of(_image(DIRECTIONS["permuted"]))
    array = np.arange(np.prod(grid.shape), dtype=np.int16).reshape(grid.shape)
    image = grid.image(array)
    assert Grid.of(image) == grid
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), array)
    with pytest.raises(ValueError, match="does not match grid shape"):
        grid.image(array.T)
    assert Grid.of(grid.reference(sitk.sitkUInt8)) == grid
    back = grid.resample(image, sitk.sitkNearestNeighbor, 0, sitk.sitkInt16)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), array)


def test_axis_aligned_lattice_uses_for_the_classical_engine():
    """What the classical engine's grid does (origin + index * spacing, division back,
    axes, growing by whole voxels), with the same numbers."""
    origin, spacing = np.array([-50.3, 20.1, -7.7]), np.array([0.7, 0.7, 1.3])
    grid = Grid.make((9, 8, 6), spacing, origin)
    kji = np.array([[5.0, 3.5, 2.25], [0.0, 7.0, 8.0]])
    assert np.array_equal(grid.array_to_world(kji), origin + kji[:, ::-1] * spacing)
    xyz = np.array([[-49.0, 21.0, -3.3]])
    assert np.array_equal(grid.world_to_array(xyz), ((xyz - origin) / spacing)[:, ::-1])
    z, y, x = grid.axes_world()
    assert np.array_equal(x, origin[0] + np.arange(9) * spacing[0]) and len(z) == 6
    grown = grid.grown(2)
    assert grown.size == (13, 12, 10)
    assert np.array_equal(grown.origin, origin - 2 * spacing)
    np.testing.assert_allclose(grown.array_to_world(np.array([2.0, 2.0, 2.0])), origin)
    with pytest.raises(ValueError, match="axis-aligned"):
        Grid.of(_image(MIRROR_X)).axes_world()


def test_vbnet_and_phantom_grids_are_this_grid():
    image = _image(DIRECTIONS["oblique"])
    net = world_grid(image, 4.0, multiple=16)
    assert isinstance(net, Grid) and net.direction == IDENTITY
    assert all(s % 16 == 0 for s in net.size)
    lo, hi = world_box(image)
    assert np.all(net.world_bounds(0.5)[0] <= lo) and np.all(net.world_bounds(0.5)[1] >= hi)
    mirrored = centered_grid(np.zeros(3), (4, 4, 4), (1.0, 1.0, 1.0), mirror=True)
    np.testing.assert_allclose(
        mirrored.index_to_world(np.array([0.0, 0.0, 0.0])), [1.5, -1.5, -1.5]
    )
    ph = grid_around(
        np.array([-10.0, -5.0, 0.0]),
        np.array([10.0, 5.0, 20.0]),
        (1.0, 1.0, 2.0),
        SIGNED_PERMUTATIONS[5],
    )
    assert isinstance(ph, Grid)
    a, b = ph.world_bounds(margin=0.5)  # the phantom's box is the voxels' outer extent
    np.testing.assert_allclose(a, [-10.0, -5.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(b, [10.0, 5.0, 20.0], atol=1e-9)


def test_make_refuses_malformed_geometry():
    with pytest.raises(ValueError, match="3 values"):
        Grid.make((1, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="9 values"):
        Grid.make((1, 2, 3), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0))
