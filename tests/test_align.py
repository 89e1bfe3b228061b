"""Detection, landmarks and alignment on real faces; the FAN backend's plumbing offline."""
import numpy as np
import pandas as pd
import pytest

from facegan.config import AlignParams, AlignSetParams
from facegan.data.images import load_rgb
from facegan.faces.align import (LEFT_EYE, MOUTH_CORNERS, RIGHT_EYE, align_face, dataset_crop, load_template,
                                 transform_points, umeyama)
from facegan.faces.landmarks import FAN_WEIGHTS, Landmarker
from facegan.faces.stage import align_set


def check_plausible(points: np.ndarray, size: int):
    assert points.shape == (68, 2) and np.isfinite(points).all()
    eyes_y = points[RIGHT_EYE + LEFT_EYE, 1].mean()
    nose_y = points[33, 1]
    mouth_y = points[48:68, 1].mean()
    assert eyes_y < nose_y < mouth_y
    assert points[RIGHT_EYE, 0].mean() < points[33, 0] < points[LEFT_EYE, 0].mean()
    assert (points >= 0).all() and (points < size).all()


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 2))
    angle, scale, shift = 0.3, 1.7, np.array([4.0, -2.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rotation.T + shift
    matrix = umeyama(src, dst)
    np.testing.assert_allclose(transform_points(src, matrix), dst, atol=1e-4)


def test_template_is_a_face():
    template = load_template()
    np.testing.assert_allclose(template[RIGHT_EYE].mean(0), [-0.5, 0.0], atol=1e-3)
    np.testing.assert_allclose(template[LEFT_EYE].mean(0), [0.5, 0.0], atol=1e-3)
    assert template[33, 1] > 0 and template[MOUTH_CORNERS, 1].mean() > template[33, 1] and template[8, 1] > 1.2


@pytest.mark.parametrize("photo", ["celeba_photo", "london_photo"])
def test_landmarks_on_a_real_face(photo, request):
    image = load_rgb(request.getfixturevalue(photo))
    found = Landmarker(detect_side=200).detect(image, ["hog"])
    assert found is not None and found.detector == "hog"
    check_plausible(found.landmarks, max(image.shape))
    crop, aligned, _ = align_face(image, found.landmarks, 64, 0.28, 0.38)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    check_plausible(aligned, 64)
    eyes = np.stack([aligned[RIGHT_EYE].mean(0), aligned[LEFT_EYE].mean(0)])
    np.testing.assert_allclose(eyes[:, 1], 0.38 * 64, atol=3)            # the template's eye line
    assert abs((eyes[1, 0] - eyes[0, 0]) - 0.28 * 64) < 3


def test_no_face(no_face_photo):
    assert Landmarker().detect(load_rgb(no_face_photo), ["hog", "cnn"]) is None


def test_dataset_crop_pads_to_square():
    image = np.zeros((112, 92, 3), np.uint8)
    image[:, 40:50] = 255
    crop, matrix = dataset_crop(image, 64)
    assert crop.shape == (64, 64, 3)
    np.testing.assert_allclose(transform_points(np.array([[46.0, 56.0]]), matrix), [[32, 32]], atol=0.5)


def test_align_set_counts_faces_not_found(tmp_path, celeba_photo, london_photo, no_face_photo):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    rows = []
    for name, src in [("a.jpg", celeba_photo), ("b.jpg", london_photo), ("c.png", no_face_photo)]:
        (raw / "images" / name).write_bytes(src.read_bytes())
        rows.append({"path": f"images/{name}", "identity": name[0], "split": "train"})
    pd.DataFrame(rows).to_csv(raw / "manifest.csv", index=False)
    params = AlignParams(workers=1)
    quality = align_set("mix", raw, tmp_path / "out", params, AlignSetParams(detectors=["hog"]), "cpu")
    assert quality.read == 3 and quality.kept == 2 and dict(quality.skipped) == {"no_face_found": 1}
    assert quality.rates["face_found_rate"] == pytest.approx(2 / 3)
    manifest = pd.read_csv(tmp_path / "out/manifest.csv")
    landmarks = np.load(tmp_path / "out/landmarks.npz")
    assert list(manifest["raw_path"]) == ["images/a.jpg", "images/b.jpg"] and list(manifest["path"]) == ["a", "b"]
    assert np.load(tmp_path / "out/images.npy").shape == (2, 64, 64, 3)
    assert landmarks["aligned"].shape == (2, 68, 2)
    assert "c.png" in (tmp_path / "out/skipped.csv").read_text()

    kept = align_set("mix", raw, tmp_path / "crop", params, AlignSetParams(mode="dataset_crop",
                                                                           detectors=["hog"]), "cpu")
    assert kept.kept == 3 and kept.notes["found_by_none"] == 1
    assert np.isnan(np.load(tmp_path / "crop/landmarks.npz")["aligned"][2]).all()


def test_face_alignment_backend_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match=f"FAN weights not found at .*{FAN_WEIGHTS}.*align.backend: dlib"):
        Landmarker(backend="face_alignment")


def test_face_alignment_backend_plumbing(tmp_path, monkeypatch, london_photo):
    """A randomly initialised FAN where the package looks for its weights: the
    landmarks are meaningless, the code path and shapes are the real ones."""
    import torch
    from face_alignment.models import FAN

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), checkpoints / FAN_WEIGHTS)
    landmarker = Landmarker(backend="face_alignment", device="cpu")
    image = load_rgb(london_photo)
    found = landmarker.detect(image, ["hog"])
    assert found is not None and found.landmarks.shape == (68, 2) and np.isfinite(found.landmarks).all()
    crop, aligned, _ = align_face(image, found.landmarks, 64, 0.28, 0.38)
    assert crop.shape == (64, 64, 3)


def test_box_sample_places_the_rest_in_the_median_box(tmp_path, mirror):
    """With box_sample, HOG runs on the sample only; the other faces get landmarks in its median box,
    close to where HOG's own box puts them for a pre-aligned release."""
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, 9)]
    for name in names:
        (raw / "images" / name).write_bytes((mirror / "celeba" / "img_align_celeba" / name).read_bytes())
    pd.DataFrame([{"path": f"images/{n}", "identity": n, "split": "train"} for n in names]).to_csv(
        raw / "manifest.csv", index=False)
    params = AlignParams(workers=1)
    full = align_set("c", raw, tmp_path / "full", params, AlignSetParams(detectors=["hog", "median_box"]), "cpu")
    sampled = align_set("c", raw, tmp_path / "boxed", params,
                        AlignSetParams(detectors=["hog", "median_box"], box_sample=3), "cpu")
    assert sampled.kept == full.kept == 8
    assert full.notes.get("found_by_median_box", 0) < sampled.notes["found_by_median_box"] >= 5
    a, b = (np.load(tmp_path / d / "landmarks.npz")["aligned"] for d in ("full", "boxed"))
    assert np.median(np.linalg.norm(a - b, axis=2)) < 1.5   # pixels in the 64-px crop
