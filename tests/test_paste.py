"""Paste-back: a method's output crop returned into the user's photo (faces/paste.py)."""
import numpy as np
import pytest

from facegan.data.images import load_rgb
from facegan.faces.align import align_face
from facegan.faces.landmarks import Landmarker
from facegan.faces.paste import add_change, landmark_outline, paste_back, side_by_side


@pytest.fixture(scope="module")
def aligned(london_photo):
    photo = load_rgb(london_photo)
    found = Landmarker(detect_side=200).detect(photo, ["hog"])
    crop, points, matrix = align_face(photo, found.landmarks, 256, 0.28, 0.38)
    return photo, found, crop, points, matrix


def face_box(found, photo):
    x0, y0, x1, y1 = found.box.round().astype(int)
    return photo[max(y0, 0):y1, max(x0, 0):x1].astype(float)


def test_the_crop_itself_goes_back_where_it_came_from(aligned):
    """Pasting the unchanged crop reproduces the photo (the inverse similarity is right): a crop shifted
    by 6 px does not; nothing outside the crop's footprint changes."""
    photo, found, crop, points, matrix = aligned
    outline = landmark_outline(points)
    back = paste_back(photo, crop, matrix, outline)
    shifted = paste_back(photo, np.roll(crop, 6, axis=1), matrix, outline)
    error = np.abs(face_box(found, back) - face_box(found, photo)).mean()
    assert error < 2.5 and np.abs(face_box(found, shifted) - face_box(found, photo)).mean() > 2 * error
    far = np.abs(back.astype(int) - photo.astype(int)).sum(2)
    assert far[:40].max() == 0 and back.shape == photo.shape


def test_an_edit_shows_inside_the_outline_feathered_and_nowhere_else(aligned):
    photo, found, crop, points, matrix = aligned
    edited = crop.copy()
    centre = points[30].round().astype(int)                    # the nose tip, in crop pixels
    edited[centre[1] - 30:centre[1] + 30, centre[0] - 30:centre[0] + 30] = (0, 255, 0)
    back = paste_back(photo, edited, matrix, landmark_outline(points))
    nose = np.round(found.landmarks[30]).astype(int)
    assert tuple(back[nose[1], nose[0]]) == (0, 255, 0)
    jaw_mid = found.landmarks[8]                                  # the chin: on the outline, feathered
    row = [back[int(jaw_mid[1]) + dy, int(jaw_mid[0])].astype(int) for dy in range(-60, 40, 4)]
    changed = [np.abs(r - photo[int(jaw_mid[1]) + dy, int(jaw_mid[0])]).sum() for r, dy in zip(row, range(-60, 40, 4))]
    assert changed[-1] == 0                                       # below the chin: the photo's own
    hair = found.box.round().astype(int)
    assert np.array_equal(back[: max(hair[1] - 60, 1)], photo[: max(hair[1] - 60, 1)])


def test_a_tint_of_the_whole_output_is_corrected_at_the_seam(aligned):
    photo, found, crop, points, matrix = aligned
    tinted = np.clip(crop.astype(int) + (18, -12, 10), 0, 255).astype(np.uint8)
    back = paste_back(photo, tinted, matrix, landmark_outline(points))
    assert np.abs(face_box(found, back) - face_box(found, photo)).mean() < 4


def test_a_residual_change_is_added_to_the_photo_itself(aligned):
    """add_change: no change leaves the photo exactly (its full-resolution detail kept, unlike pasting a
    crop); a +40 change raises the face by 40 at the nose and nothing outside the outline."""
    photo, found, crop, points, matrix = aligned
    outline = landmark_outline(points)
    assert np.array_equal(add_change(photo, np.zeros(crop.shape, np.float32), matrix, outline), photo)
    raised = add_change(photo, np.full(crop.shape, 40.0, np.float32), matrix, outline).astype(int)
    nose = np.round(found.landmarks[30]).astype(int)
    assert np.allclose(raised[nose[1], nose[0]], np.minimum(photo[nose[1], nose[0]].astype(int) + 40, 255), atol=1)
    hair = found.box.round().astype(int)
    assert np.array_equal(raised[: max(hair[1] - 60, 1)], photo[: max(hair[1] - 60, 1)])


def test_side_by_side_is_readable():
    small = np.zeros((100, 150, 3), np.uint8)
    assert side_by_side(small, small).shape == (512, 2 * 768 + 8, 3)
