"""Importers on real samples from the mirror and on malformed input built in tmp."""
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.io

from conftest import grayscale_copy, truncate
from facegan.config import DataParams, IngestParams, Params, SourceParams, SplitParams
from facegan.data.celeba import import_celeba
from facegan.data.emoji import import_emoji
from facegan.data.ingest import run_ingest
from facegan.data.london import import_london
from facegan.data.quality import DataError
from facegan.data.ratings import read_ratings
from facegan.data.scut import clean_ratings, import_scut, read_labels, read_v1_ratings, v2_name
from facegan.data.umist import import_umist


def test_celeba_real_sample(mirror, tmp_path):
    frame, quality = import_celeba(mirror / "celeba", tmp_path, SourceParams(max_images=40), 0)
    assert len(frame) == quality.kept == quality.read == 40
    assert {"Smiling", "Male", "Young", "Eyeglasses"} <= set(frame.columns)
    assert set(frame["Male"].unique()) <= {0, 1}
    assert frame.loc[frame["source"] == "000001.jpg", "identity"].item() == "2880"
    assert all((tmp_path / p).exists() for p in frame["path"])


def test_celeba_malformed(mirror, tmp_path):
    real = mirror / "celeba"
    src = tmp_path / "celeba"
    images = src / "img_align_celeba"
    images.mkdir(parents=True)
    shutil.copy(real / "img_align_celeba/000001.jpg", images / "000001.jpg")
    truncate(real / "img_align_celeba/000002.jpg", images / "000002.jpg")
    grayscale_copy(real / "img_align_celeba/000003.jpg", images / "000003.jpg")
    shutil.copy(real / "img_align_celeba/000005.jpg", images / "000005.jpg")   # no attribute row
    shutil.copy(real / "img_align_celeba/000006.jpg", images / "000006.jpg")   # no identity
    lines = (real / "list_attr_celeba.txt").read_text().splitlines()
    rows = {line.split()[0]: line for line in lines[2:8]}
    (src / "list_attr_celeba.txt").write_text("\n".join(
        ["202599", lines[1], rows["000001.jpg"], rows["000002.jpg"], rows["000003.jpg"], rows["000004.jpg"],
         rows["000006.jpg"], "000007.jpg 1 -1"]) + "\n")
    (src / "identity_CelebA.txt").write_text("000001.jpg 1\n000002.jpg 2\n000003.jpg 3\n000004.jpg 4\n000005.jpg 5\n")

    frame, quality = import_celeba(src, tmp_path / "out", SourceParams(), 0)
    assert sorted(frame["source"]) == ["000001.jpg", "000003.jpg"]
    assert quality.read == 7 and quality.kept == 2
    assert dict(quality.skipped) == {"truncated": 1, "attribute_row_without_image": 1, "no_identity": 1,
                                     "malformed_attribute_row": 1, "image_without_attribute_row": 1}
    assert quality.notes["converted_L_to_rgb"] == 1
    stored = frame.loc[frame["source"] == "000003.jpg", "path"].item()
    assert stored.endswith(".png")


def test_celeba_bad_count_line(mirror, tmp_path):
    src = tmp_path / "celeba"
    (src / "img_align_celeba").mkdir(parents=True)
    (src / "list_attr_celeba.txt").write_text("lots\nSmiling\n")
    (src / "identity_CelebA.txt").write_text("")
    with pytest.raises(DataError, match="list_attr_celeba.txt: line 1 should be the image count"):
        import_celeba(src, tmp_path / "out", SourceParams(), 0)


def test_london_real(mirror, tmp_path):
    frame, quality = import_london(mirror / "london", tmp_path, SourceParams(), 0)
    assert quality.kept == 204 and len(frame) == 204
    assert set(frame["expression"]) == {"neutral", "smiling"}
    ratings, raters = read_ratings(tmp_path)
    assert ratings.shape == (102, 2513) and len(raters) == 2513
    assert ratings.notna().all().all()
    assert ratings.min().min() >= 1 and ratings.max().max() <= 7
    assert set(raters.columns) >= {"rater_id", "rater_sex", "rater_age"}


def test_london_malformed_cr_endings(mirror, tmp_path):
    src = tmp_path / "london"
    (src / "neutral_front").mkdir(parents=True)
    (src / "smiling_front").mkdir()
    for face in ("001", "002"):
        shutil.copy(mirror / f"london/neutral_front/{face}_03.jpg", src / f"neutral_front/{face}_03.jpg")
    shutil.copy(mirror / "london/smiling_front/001_08.jpg", src / "smiling_front/001_08.jpg")
    rows = ["rater_sex,rater_sexpref,rater_age,X001,X002,X003,favourite_colour",
            "female,men,20,3,,5,blue",
            "male,women,30,4,2,NA,red",
            "male,women,31,,,,green",
            "female,either,22,9,3,2,grey"]
    (src / "london_faces_ratings.csv").write_bytes("\r".join(rows).encode() + b"\r")
    (src / "london_faces_info.csv").write_text("face_id,face_age,face_sex,face_eth\nX001,24,female,white\n")

    frame, quality = import_london(src, tmp_path / "out", SourceParams(), 0)
    assert dict(quality.skipped) == {"unknown_column": 1, "rater_without_ratings": 1, "ratings_without_image": 1}
    assert quality.notes["missing_rating"] == 2 and quality.notes["invalid_rating"] == 1
    assert quality.kept == 3 and quality.read == 4
    ratings, raters = read_ratings(tmp_path / "out")
    assert list(ratings.index) == ["001", "002"] and len(raters) == 3
    assert np.isnan(ratings.loc["002", "r01"]) and ratings.loc["001", "r02"] == 4
    assert frame.loc[(frame.identity == "001") & (frame.expression == "neutral"), "face_age"].item() == "24"


def test_umist_real_and_malformed(mirror, tmp_path):
    frame, quality = import_umist(mirror / "umist", tmp_path / "out", SourceParams(), 0)
    assert quality.kept == 380 and frame["identity"].nunique() == 20
    assert frame.groupby("identity")["sequence_index"].max().eq(18).all()
    scipy.io.savemat(tmp_path / "UMIST.mat", {"x": np.zeros((4, 4, 2), np.uint8)})
    with pytest.raises(DataError, match="variable 'label' missing"):
        import_umist(tmp_path, tmp_path / "bad", SourceParams(), 0)


def test_emoji_real(mirror, tmp_path):
    frame, quality = import_emoji(mirror / "emoji", tmp_path, SourceParams(), 0)
    assert quality.kept == quality.read == 286
    assert {"person"} <= set(frame["subcategory"])
    assert (frame["skin_tone"] != "").all()


def test_scut_format(mirror, tmp_path):
    src = tmp_path / "SCUT-FBP5500"
    (src / "Images").mkdir(parents=True)
    photos = sorted((mirror / "celeba/img_align_celeba").glob("*.jpg"))[:3]
    for photo, name in zip(photos, ["AF1.jpg", "CM2.jpg", "AM3.jpg"]):
        shutil.copy(photo, src / "Images" / name)
    rows = [(rater, name, 1 + (rater + i) % 5, None) for i, name in enumerate(["AF1.jpg", "CM2.jpg", "CF9.jpg"])
            for rater in (1, 2, 3)]
    rows = [r for r in rows if not (r[0] == 3 and r[1] == "CM2.jpg")]    # one rating missing
    long = pd.DataFrame(rows, columns=["Rater", "Filename", "Rating", "original Rating"])
    with pd.ExcelWriter(src / "All_Ratings.xlsx") as writer:
        long.to_excel(writer, sheet_name="ALL", index=False)

    frame, quality = import_scut(src, tmp_path / "out", SourceParams(), 0)
    assert sorted(frame["identity"]) == ["AF1", "CM2"]
    assert dict(quality.skipped) == {"image_without_ratings_or_label": 1, "ratings_without_image": 1}
    assert quality.notes["face_with_fewer_raters"] == 1 and quality.notes["raters"] == 3
    assert set(frame["race"]) == {"asian", "caucasian"}
    ratings, _ = read_ratings(tmp_path / "out")
    assert ratings.shape == (2, 3) and ratings.loc["CM2"].isna().sum() == 1


def test_scut_v1_ratings_of_the_mirror_reproduce_the_official_labels(mirror):
    """MIRROR_NOTES.md's rule (ftw = CF, mtw = CM, fty = AF, mty = AM, numbers unchanged) checked by the data:
    the 60 raters' mean of every complete face equals its official label."""
    from facegan.data.quality import SetQuality

    src = mirror / "SCUT-FBP5500"
    quality = SetQuality("scut")
    long = clean_ratings(read_v1_ratings(src / "All_Ratings_v1", quality), quality)
    assert sum(quality.skipped.values()) == 0
    labels, split = read_labels(src)
    assert len(labels) == 5500 and split.value_counts().to_dict() == {"train": 3300, "test": 2200}
    per_face = long.groupby("Filename")["Rating"].agg(["mean", "count"])
    complete = per_face[per_face["count"] == 60]
    assert len(complete) == 3682 and set(per_face.index[per_face["count"] < 60]) == {"AF1092.jpg", "AM1981.jpg"}
    assert (complete["mean"] - labels[complete.index]).abs().max() < 1e-3
    assert {name[:2] for name in per_face.index} == {"AF", "AM", "CF", "CM"}


def test_scut_v1_real_sample(mirror, tmp_path):
    frame, quality = import_scut(mirror / "SCUT-FBP5500", tmp_path, SourceParams(max_images=150), 0)
    assert quality.kept == quality.read == 150 and quality.notes["ratings_source_v1_csv"] == 1
    ratings, raters = read_ratings(tmp_path)
    assert len(raters) == 60 and len(ratings) == frame["rated"].sum() == quality.notes["rated_faces"]
    assert quality.notes["image_without_ratings"] == (~frame["rated"]).sum() > 0    # kept, with the label
    assert frame.loc[~frame["rated"], "mean_rating"].notna().all()
    assert set(frame["official_split"]) == {"train", "test"}
    assert (ratings.notna().sum(axis=1) == 60).sum() == len(ratings) - quality.notes["face_with_fewer_raters"]


def test_scut_v1_malformed(mirror, tmp_path):
    """Unknown names, ratings outside 1-5, repeated (rater, face) pairs and a face with fewer raters: each
    counted by reason with the row named, nothing else lost."""
    src = tmp_path / "SCUT-FBP5500"
    (src / "Images").mkdir(parents=True)
    (src / "All_Ratings_v1").mkdir()
    photo = sorted((mirror / "celeba/img_align_celeba").glob("*.jpg"))[0]
    for name in ("CF1.jpg", "AM2.jpg", "AF3.jpg"):
        shutil.copy(photo, src / "Images" / name)
    rows = [f"{r},ftw1.jpg,{1 + r % 5}," for r in (1, 2, 3)] + [f"{r},mty2.jpg,3,4" for r in (1, 2)]
    rows += ["3,mty2.jpg,9,", "1,xyz7.jpg,3,", "2,ftw1.jpg,5,"]      # out of range, unknown name, repeated pair
    (src / "All_Ratings_v1/female_white_images.csv").write_text(
        "Email,Filename,Rating,original Rating,\n" + "\n".join(r + "," for r in rows))
    (src / "train_test_files/split_of_60%training and 40%testing").mkdir(parents=True)
    (src / "train_test_files/All_labels.txt").write_text("CF1.jpg 3.0\nAM2.jpg 3.0\nAF3.jpg 2.5\nCM9.jpg 4.0\n")
    (src / "train_test_files/split_of_60%training and 40%testing/train.txt").write_text("CF1.jpg 3.0\nAF3.jpg 2.5\n")

    frame, quality = import_scut(src, tmp_path / "out", SourceParams(), 0)
    assert dict(quality.skipped) == {"invalid_or_missing_rating": 1, "unknown_file_name": 1, "duplicate_rating": 1,
                                     "label_without_image": 1}
    items = {reason: item for item, reason, _ in quality.skipped_items}
    assert items["unknown_file_name"] == "All_Ratings_v1/female_white_images.csv:8"
    assert items["duplicate_rating"] == "All_Ratings_v1/female_white_images.csv:9"
    assert quality.notes["face_with_fewer_raters"] == 1 and quality.notes["image_without_ratings"] == 1
    assert quality.notes["raters_mean_differs_from_label"] == 0
    ratings, _ = read_ratings(tmp_path / "out")
    assert ratings.loc["CF1"].tolist() == [2.0, 3.0, 4.0] and ratings.loc["AM2"].isna().sum() == 1
    assert frame.set_index("identity").loc["AF3", ["rated", "mean_rating", "official_split"]].tolist() == \
        [False, 2.5, "train"]
    assert v2_name("mtw12.jpg") == "CM12.jpg" and v2_name("CM12.jpg") == "CM12.jpg" and v2_name("x.jpg") is None


def test_run_ingest_splits_are_identity_disjoint(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGAN_DATA", str(mirror))
    params = Params(data=DataParams(seed=3), ingest=IngestParams(
        sets=["london", "umist"], umist=SourceParams(folder="umist", split=SplitParams(0.6, 0.1, 0.3))))
    report = run_ingest(params, tmp_path / "raw", tmp_path / "quality.json")
    assert report["london"]["kept"] == 204 and (tmp_path / "quality.json").exists()
    for name in ("london", "umist"):
        manifest = pd.read_csv(tmp_path / "raw" / name / "manifest.csv", dtype={"identity": str})
        per_identity = manifest.groupby("identity")["split"].nunique()
        assert per_identity.max() == 1 and set(manifest["split"]) == {"train", "val", "test"}
    again = run_ingest(params, tmp_path / "raw2", tmp_path / "quality2.json")
    assert again == report
    assert (pd.read_csv(tmp_path / "raw/umist/manifest.csv")["split"]
            == pd.read_csv(tmp_path / "raw2/umist/manifest.csv")["split"]).all()


def test_missing_set_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGAN_DATA", str(tmp_path))
    params = Params(ingest=IngestParams(sets=["scut"]))
    with pytest.raises(DataError, match="scut: .*SCUT-FBP5500 not found"):
        run_ingest(params, tmp_path / "raw", tmp_path / "q.json")
