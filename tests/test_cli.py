import numpy as np
from PIL import Image

from facegan.cli import main


def test_align_a_photo_and_a_folder(tmp_path, london_photo, capsys):
    assert main(["align", str(london_photo), "--out", str(tmp_path / "out"), "--size", "80"]) == 0
    crop = np.asarray(Image.open(tmp_path / "out/001_03_aligned.png"))
    assert crop.shape == (80, 80, 3)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(london_photo.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    assert main(["align", str(folder), "--out", str(tmp_path / "batch")]) == 0
    assert (tmp_path / "batch/a_aligned.png").exists()


def test_align_reports_bad_inputs(tmp_path, no_face_photo, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert main(["align", str(no_face_photo), str(broken), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "wall.png: no face found" in err and "broken.jpg: cannot read image" in err
    assert main(["align", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.jpg: no such file" in capsys.readouterr().err


def test_info_lists_methods_trained_or_not(tmp_path, monkeypatch, capsys):
    import json
    import shutil

    from conftest import REPO

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    assert main(["info"]) == 0
    assert "nothing produced yet" in capsys.readouterr().out
    (tmp_path / "reports" / "metrics").mkdir(parents=True)
    (tmp_path / "reports" / "data_quality.json").write_text(json.dumps(
        {"sets": {"celeba": {"stages": {"ingest": {"kept": 9, "read": 10}}}}}))
    (tmp_path / "models" / "tpgan").mkdir(parents=True)
    (tmp_path / "models" / "tpgan" / "model.json").write_text(json.dumps({"steps": 317, "minutes_this_run": 6.0,
                                                                          "stopped_by": "max_minutes"}))
    (tmp_path / "reports" / "metrics" / "tpgan.json").write_text(json.dumps(
        {"psnr": 17.9034, "rank1_facenet_frontalized_with_distractors": {"15": 0.19444, "90": 0.0833}, "other": 1}))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "celeba     ingest 9/10" in out
    assert "cgan       not trained: run `dvc repro train@cgan`" in out
    assert "tpgan      trained 317 steps" in out and "psnr: 17.9" in out
    assert "rank1_facenet_frontalized_with_distractors: 15=0.194 90=0.0833" in out and "other" not in out


SUBCOMMANDS = {   # subcommand and arguments -> the method it needs trained
    ("generate", "cgan"): "cgan", ("generate", "beholder"): "beholder", ("beautify", "P"): "beholder",
    ("edit", "P", "--attr", "Male=1"): "fader", ("emojify", "P"): "dtn", ("frontalize", "P", "--yaw", "30"): "tpgan",
    ("transfer", "P", "--ref", "P"): "geogan",
}


def test_every_subcommand_has_help(capsys):
    import pytest

    for command in ("align", "generate", "beautify", "edit", "emojify", "frontalize", "transfer", "serve", "info"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        assert f"usage: facegan {command}" in capsys.readouterr().out


def test_untrained_methods_name_the_stage_to_run(tmp_path, monkeypatch, london_photo, capsys):
    monkeypatch.chdir(tmp_path)   # an empty project: nothing trained
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    for command, method in SUBCOMMANDS.items():
        args = [str(london_photo) if a == "P" else a for a in command]
        assert main([*args, "--out", str(tmp_path / "o.png")]) == 2, command
        assert f"not trained yet: run `dvc repro train@{method}`" in capsys.readouterr().err, command


def test_several_faces_use_the_largest_and_say_so(tmp_path, london_photo, two_face_photo, capsys):
    from PIL import Image as PILImage

    canvas = PILImage.new("RGB", (795, 455), "white")   # the same canvas without the second face
    canvas.paste(PILImage.open(london_photo).crop((110, 110, 565, 565)), (0, 0))
    alone = tmp_path / "alone.jpg"
    canvas.save(alone)
    assert main(["align", str(two_face_photo), str(alone), "--out", str(tmp_path / "out")]) == 0
    assert "two.jpg: 2 faces found, used the largest (--all-faces: every one)" in capsys.readouterr().err
    two, single = (np.asarray(Image.open(tmp_path / f"out/{n}_aligned.png")).astype(float) for n in ("two", "alone"))
    assert np.abs(two - single).mean() < 2   # the large face's crop, not the small one's
    assert main(["align", str(two_face_photo), "--all-faces", "--out", str(tmp_path / "all")]) == 0
    first, second = (np.asarray(Image.open(tmp_path / f"all/two_aligned_face{k}.png")).astype(float) for k in (1, 2))
    assert np.abs(first - single).mean() < 2 and np.abs(second - single).mean() > 10   # largest first, then the other


def test_non_images_are_named_not_dropped(tmp_path, london_photo, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(london_photo.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.png").write_text("a text file named like an image")
    assert main(["align", str(folder), str(folder / "notes.txt"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "skipped 1 file(s) that are not images by their extension: notes.txt" in err
    assert "fake.png: cannot read image" in err and "notes.txt: cannot read image" in err
    assert (tmp_path / "out/a_aligned.png").exists()
