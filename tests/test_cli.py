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

    from test_config import REPO

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
