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
