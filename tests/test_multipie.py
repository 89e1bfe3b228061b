"""Multi-PIE importer: the file naming, camera -> yaw, malformed files, and TP-GAN's frontal pairs."""
import shutil

import numpy as np

import pytest
from PIL import Image

from facegan.config import SourceParams
from facegan.data.manifest import read_manifest, write_manifest
from facegan.data.multipie import CAMERA_YAW, camera_to_yaw, frontal_pairs, import_multipie, parse_name


def test_camera_to_yaw():
    assert (camera_to_yaw("051"), camera_to_yaw("110"), camera_to_yaw("240")) == (0, -90, 90)
    assert (camera_to_yaw("140"), camera_to_yaw("050"), camera_to_yaw("080"), camera_to_yaw("190")) == (-15, 15,
                                                                                                         -45, 45)
    assert sorted(CAMERA_YAW.values()) == list(range(-90, 91, 15))   # 13 cameras, 15 degrees apart
    with pytest.raises(KeyError, match="camera '081'"):
        camera_to_yaw("081")


def test_parse_name():
    assert parse_name("020_01_01_051_07_crop_128") == {"person": "020", "session": "01", "recording": "01",
                                                       "camera": "051", "flash": "07"}
    assert parse_name("020_01_01_051_07") is not None
    assert parse_name("020_01_051_07_crop") is None and parse_name("face") is None


@pytest.fixture(scope="module")
def two_people(mirror, tmp_path_factory):
    out = tmp_path_factory.mktemp("multipie")
    frame, images, quality = import_multipie(mirror / "multipie", SourceParams(folder="multipie", max_images=156), 128)
    return frame, quality, images


def test_import_real_subset(two_people, mirror):
    frame, quality, images = two_people
    assert quality.kept == quality.read == 156 and not quality.skipped
    assert sorted(frame["identity"].unique()) == ["020", "021"]
    assert sorted(frame["yaw"].unique()) == list(range(-90, 91, 15)) and frame["flash"].nunique() == 6
    assert images.shape == (156, 128, 128, 3) and images.dtype == np.uint8 and images.std() > 10
    first = sorted((mirror / "multipie" / "020").glob("*.png"))[0]
    assert frame["path"][0] == first.stem and (images[0] == np.asarray(Image.open(first).convert("RGB"))).all()


def test_pairs_never_cross_people_and_end_frontal(two_people, tmp_path):
    frame, _, _ = two_people
    frame["split"] = "train"
    write_manifest(frame, tmp_path)
    for table in (frame, read_manifest(tmp_path)):   # also after the manifest round trip ("051" -> 51)
        pairs = frontal_pairs(table)
        assert len(pairs) == len(table)              # every image, the frontal ones included, has its frontal
        inputs, targets = table.iloc[pairs["input_row"]], table.iloc[pairs["frontal_row"]]
        assert (inputs["identity"].to_numpy() == targets["identity"].to_numpy()).all()
        assert (inputs["flash"].astype(int).to_numpy() == targets["flash"].astype(int).to_numpy()).all()
        assert (targets["yaw"] == 0).all()


def test_missing_frontal_gets_no_pair(two_people):
    frame, _, _ = two_people
    without = frame[~((frame["identity"] == "021") & (frame["flash"] == "03") & (frame["yaw"] == 0))]
    pairs = frontal_pairs(without)
    assert len(pairs) == len(without) - 12   # the other 12 cameras of that person and flash lose their target


def test_malformed_files_are_counted(mirror, tmp_path):
    src = tmp_path / "src" / "020"
    src.mkdir(parents=True)
    good = sorted((mirror / "multipie" / "020").glob("*_051_00_*.png"))[0]
    shutil.copy(good, src / good.name)
    shutil.copy(good, src / "portrait.png")                          # not the naming
    shutil.copy(good, src / "020_01_01_999_00_crop_128.png")         # not a head-height camera
    (src / "020_01_01_050_00_crop_128.png").write_bytes(b"not a png")
    frame, images, quality = import_multipie(tmp_path / "src", SourceParams(folder="x"), 128)
    assert (quality.read, quality.kept) == (4, 1) and len(frame) == len(images) == 1
    assert dict(quality.skipped) == {"name_not_multipie": 1, "camera_not_at_head_height": 1, "not_an_image": 1}


def test_empty_folder_is_a_clear_error(tmp_path):
    from facegan.data.quality import DataError

    with pytest.raises(DataError, match="no images under"):
        import_multipie(tmp_path, SourceParams(folder="x"), 128)


def test_stage_on_two_people(mirror, tmp_path):
    """Landmarks by rule: the detector's up to trusted_yaw, the yaw model beyond; pairs; counts."""
    import json

    import numpy as np

    from facegan.config import Params, build
    from facegan.data.manifest import read_manifest
    from facegan.data.multipie import run_multipie

    params = build(Params, {"multipie": {"max_images": 156, "split": {"train": 0.5, "val": 0.0, "test": 0.5}}})
    summary = run_multipie(params, mirror, tmp_path)
    frame = read_manifest(tmp_path / "data" / "multipie")
    assert summary["images"] == len(frame) == 156 and summary["people"] == {"train": 1, "val": 0, "test": 1}
    assert summary["pairs"] == 156 and summary["unpaired"] == 0
    assert summary["detector_found_rate_by_yaw"][0] == 1.0
    assert sorted(summary["detector_found_rate_by_yaw"]) == list(range(-45, 46, 15))   # beyond: the yaw model
    assert (frame.loc[frame["yaw"].abs() > 45, "detector"] == "not_run").all()
    with np.load(tmp_path / "data" / "multipie" / "landmarks.npz") as f:
        landmarks, source = f["landmarks"], f["source"]
        assert landmarks.shape == (156, 68, 2) and np.isfinite(landmarks).all()
        assert f["frontal_template"].shape == (68, 2)
    profile = (frame["yaw"].abs() > 45).to_numpy()
    assert (source[profile] == "yaw_model").all() and (source[~profile & (frame["detector"] != "none")]
                                                       == "detector").all()
    assert np.load(tmp_path / "data" / "multipie" / "images.npy").shape == (156, 128, 128, 3)
    assert ((landmarks >= 0) & (landmarks < 128)).mean() > 0.95   # on the crops, profiles included
    assert json.loads((tmp_path / "reports" / "metrics" / "multipie.json").read_text())["images"] == 156
    assert (tmp_path / "reports" / "data_quality" / "multipie.json").exists()
