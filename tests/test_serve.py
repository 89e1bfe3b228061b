"""`facegan serve`: the local page, through its API and in headless Chromium."""
import base64
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from test_beauty import beholder_project  # noqa: F401  (tiny trained projects, one per method)
from test_dtn import dtn_project  # noqa: F401
from test_fader import fader_project  # noqa: F401
from test_geogan import geogan_project  # noqa: F401
from test_tpgan import tpgan_project  # noqa: F401


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# README's picture: FACEGAN_SCREENSHOT=page.png FACEGAN_SERVE_PROJECT=. pytest tests/test_serve.py -k browser
# (the page over this project's trained models; without FACEGAN_SERVE_PROJECT, a tiny trained Fader)
SERVED = os.environ.get("FACEGAN_SERVE_PROJECT")


@pytest.fixture(scope="module")
def server(fader_project):  # noqa: F811
    import uvicorn

    from facegan.serve import create_app

    port = free_port()
    app = create_app(Path(SERVED).resolve() if SERVED else fader_project)
    app_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning"))
    thread = threading.Thread(target=app_server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if app_server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    app_server.should_exit = True
    thread.join(timeout=10)


def post(url: str, payload) -> tuple[int, dict]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(url + "/api/apply", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def data_url(raw: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(raw).decode()


def test_the_api_answers_every_bad_request_with_a_message(server, london_photo, no_face_photo):
    with urllib.request.urlopen(server + "/api/methods") as response:
        methods = json.loads(response.read())
    assert methods["fader"]["trained"] and methods["fader"]["attributes"] == ["Blond_Hair", "Attractive", "Male",
                                                                             "Young"]
    assert methods["tpgan"] == {"trained": False, "stage": "dvc repro train@tpgan", "residual": False}
    assert methods["fader"]["residual"] and methods["beholder"]["residual"]
    cases = {
        "not JSON": (b"{oops", 400, "not JSON"),
        "a text file": ({"method": "fader", "photo": data_url(b"just some text")}, 400, "not an image"),
        "no face": ({"method": "fader", "photo": data_url(no_face_photo.read_bytes())}, 400, "no face found"),
        "untrained": ({"method": "tpgan", "photo": data_url(london_photo.read_bytes())}, 400,
                      "run `dvc repro train@tpgan`"),
        "unknown method": ({"method": "nope", "photo": data_url(london_photo.read_bytes())}, 400, "unknown method"),
        "out of range": ({"method": "fader", "photo": data_url(london_photo.read_bytes()),
                          "settings": {"attributes": {"Male": 7}}}, 400, "Male = 7"),
        "too large": ({"method": "fader", "photo": "A" * (17 * 2**20)}, 413, "larger than 12 MB"),
    }
    for case, (payload, status, message) in cases.items():
        got_status, answer = post(server, payload)
        assert got_status == status and message in answer["error"], (case, got_status, answer)


def test_a_photo_comes_back_edited_at_its_own_size(server, london_photo):
    from PIL import Image
    import io

    def edited(**settings):
        status, answer = post(server, {"method": "fader", "photo": data_url(london_photo.read_bytes()),
                                       "settings": {"attributes": {"Male": 2}, **settings}})
        assert status == 200 and answer["faces"] == 1
        return Image.open(io.BytesIO(base64.b64decode(answer["image"].split(",", 1)[1]))).convert("RGB")

    photo = Image.open(london_photo).convert("RGB")
    result = edited()
    assert result.size == photo.size
    # "keep the photo's face": only the change is added, so the result stays nearer the photo
    distance = {name: np.abs(np.asarray(image, float) - np.asarray(photo, float)).mean()
                for name, image in (("redrawn", result), ("residual", edited(residual=True)))}
    assert 0 < distance["residual"] < distance["redrawn"], distance


def test_the_page_in_a_browser(server, london_photo, tmp_path):
    """Upload a real face, move a slider: the result changes; upload a text file: the message shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from conftest import headless_chromium

    browser = headless_chromium()
    try:
        browser.set_window_size(1300, 900)
        browser.get(server + "/")
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: b.find_elements(By.ID, "slider_Male"))
        options = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#method option")]
        assert "fader" in options and (SERVED or "tpgan (not trained: dvc repro train@tpgan)" in options)
        browser.find_element(By.ID, "photo").send_keys(str(london_photo))
        wait.until(lambda b: (b.find_element(By.ID, "result").get_attribute("src") or "").startswith("data:image/png"))
        first = browser.find_element(By.ID, "result").get_attribute("src")
        browser.execute_script("""const s = document.getElementById('slider_Male'); s.value = 2;
                                  s.dispatchEvent(new Event('change'));""")
        wait.until(lambda b: b.find_element(By.ID, "result").get_attribute("src") != first)
        assert browser.find_element(By.ID, "message").text == ""
        browser.save_screenshot(str(tmp_path / "serve.png"))
        if os.environ.get("FACEGAN_SCREENSHOT"):   # README's picture of the page comes from here
            shutil.copy(tmp_path / "serve.png", os.environ["FACEGAN_SCREENSHOT"])
        text = tmp_path / "notes.jpg"
        text.write_text("not a photo at all")
        browser.find_element(By.ID, "photo").send_keys(str(text))
        wait.until(lambda b: "not an image" in b.find_element(By.ID, "message").text)
    finally:
        browser.quit()
    from PIL import Image

    assert np.asarray(Image.open(tmp_path / "serve.png")).std() > 5


@pytest.mark.parametrize("name, settings", [("beholder", {"delta": 1.5}), ("tpgan", {"yaw": "auto"}),
                                            ("tpgan", {"yaw": 15}), ("geogan", {}), ("dtn", {})])
def test_every_method_answers_on_the_page(request, name, settings, london_photo, mirror):
    """What the page asks of each method (its settings, GeoGAN's reference) gives the photo back."""
    from facegan.serve import Models

    models = Models(request.getfixturevalue(f"{name}_project"))
    reference = data_url((mirror / "london/smiling_front/002_08.jpg").read_bytes())
    answer = models.apply({"method": name, "photo": data_url(london_photo.read_bytes()), "settings": settings,
                           "reference": reference})
    assert answer["image"].startswith("data:image/png;base64,") and answer["faces"] == 1 and answer["notes"]
