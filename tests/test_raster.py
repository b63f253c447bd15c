"""densprune.app.raster: points drawn into an image on the server."""

from __future__ import annotations

import numpy as np
import pytest

from densprune.app.raster import colour_lut, splat


def test_each_point_lands_where_its_coordinates_say():
    x, y = np.array([0.0, 10.0, 0.0]), np.array([0.0, 0.0, 5.0])
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    img = splat(x, y, rgb, (0.0, 10.0, 0.0, 5.0), width=11, height=6, radius=0.0, alpha=1.0)
    assert img.shape == (6, 11, 4)
    assert tuple(img[5, 0]) == (255, 0, 0, 255)  # (0, 0): bottom left (row 0 is the top)
    assert tuple(img[5, 10]) == (0, 255, 0, 255)  # (10, 0): bottom right
    assert tuple(img[0, 0]) == (0, 0, 255, 255)  # (0, 5): top left
    assert (img[..., 3] > 0).sum() == 3


def test_overlaps_blend_and_grow_more_opaque():
    x = np.zeros(3)
    rgb = np.array([[200, 0, 0], [0, 100, 0], [0, 0, 50]], dtype=np.uint8)
    one = splat(x[:1], x[:1], rgb[:1], (-1, 1, -1, 1), 5, 5, radius=0.0, alpha=0.5)
    three = splat(x, x, rgb, (-1, 1, -1, 1), 5, 5, radius=0.0, alpha=0.5)
    assert tuple(three[2, 2, :3]) == (67, 33, 17)  # the mean colour, rounded
    assert one[2, 2, 3] == 128 and three[2, 2, 3] == round(255 * (1 - 0.5 ** 3))


def test_discs_are_clipped_at_the_edges_and_outside_points_or_nan_left_out():
    img = splat(np.array([0.0, 50.0, np.nan]), np.array([0.0, 0.0, 0.0]), np.full((3, 3), 9, dtype=np.uint8),
                (0.0, 10.0, 0.0, 10.0), 11, 11, radius=1.5)
    covered = np.argwhere(img[..., 3] > 0)
    # a disc of radius 1.5 has 9 pixels; at the corner (row 10, column 0) a quarter-ish of it remains
    assert {tuple(p) for p in covered} == {(10, 0), (9, 0), (10, 1), (9, 1)}


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="non-empty extent"):
        splat(np.zeros(1), np.zeros(1), np.zeros((1, 3)), (0, 0, 0, 1), 10, 10)
    with pytest.raises(ValueError, match="same points"):
        splat(np.zeros(2), np.zeros(1), np.zeros((2, 3)), (0, 1, 0, 1), 10, 10)


def test_colour_scales_run_from_their_first_to_their_last_colour():
    lut = colour_lut("Viridis")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert tuple(lut[0]) == (68, 1, 84) and tuple(lut[-1]) == (253, 231, 37)
