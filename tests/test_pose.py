"""The yaw model of landmark positions and TP-GAN's patch geometry."""
import numpy as np
import pytest

from facegan.faces.pose import PATCHES, fit_yaw_model, patch_box, patch_centres, predict_landmarks


def rigid_projection(points_3d: np.ndarray, yaw_deg: float, axis_x: float = 64.0) -> np.ndarray:
    """Orthographic image of (X, Y, Z) points turned by yaw about a vertical axis at x = axis_x."""
    t = np.deg2rad(yaw_deg)
    x = axis_x + points_3d[:, 0] * np.cos(t) + points_3d[:, 2] * np.sin(t)
    return np.stack([x, points_3d[:, 1]], axis=1)


def test_yaw_model_extrapolates_a_rigid_head_to_profile():
    rng = np.random.default_rng(0)
    head = np.stack([rng.uniform(-30, 30, 68), rng.uniform(30, 100, 68), rng.uniform(-20, 25, 68)], axis=1)
    trusted = np.arange(-45, 46, 15)
    model = fit_yaw_model(trusted, np.stack([rigid_projection(head, y) for y in trusted]))
    for yaw in (-90, -75, -60, 60, 75, 90):
        assert np.abs(predict_landmarks(model, yaw) - rigid_projection(head, yaw)).max() < 1e-3


def test_yaw_model_needs_three_yaws():
    with pytest.raises(ValueError, match="3 or more distinct yaws"):
        fit_yaw_model([0, 15, 15], np.zeros((3, 68, 2)))


def test_patches_land_inside_the_image_at_the_template_positions():
    from facegan.faces.align import template_pixels

    template = template_pixels(128, 0.3, 0.4)   # the 68-point template on a 128-pixel crop
    centres = patch_centres(template)
    assert list(centres) == list(PATCHES)
    assert centres["left_eye"][0] < centres["right_eye"][0] and centres["nose"][1] < centres["mouth"][1]
    for name, centre in centres.items():
        size = 40 if name == "mouth" else 32
        x0, y0, x1, y1 = patch_box(centre, size, 128)
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128 and (x1 - x0, y1 - y0) == (size, size)
        assert abs((x0 + x1) / 2 - centre[0]) <= 1 and abs((y0 + y1) / 2 - centre[1]) <= 1
    assert patch_box((2, 126), 32, 128) == (0, 96, 32, 128)   # a centre at the edge: shifted inside
    with pytest.raises(ValueError, match="does not fit"):
        patch_box((64, 64), 200, 128)
