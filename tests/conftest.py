import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


# Where this workplace's machines keep the mirror, for clones made outside its parent (CI may clone anywhere).
WORKPLACE_MIRROR = Path("/work/shared/datasets")


def find_mirror() -> Path:
    """FACEGAN_DATA, else shared/datasets beside the repository or any parent of it, else the workplace's."""
    if os.environ.get("FACEGAN_DATA"):
        return Path(os.environ["FACEGAN_DATA"]).resolve()
    candidates = [folder / "shared" / "datasets" for folder in (REPO, *REPO.parents)] + [WORKPLACE_MIRROR]
    for candidate in candidates:
        if (candidate / "README.md").exists():
            return candidate.resolve()
    raise RuntimeError("face data mirror not found: set FACEGAN_DATA to the shared datasets folder "
                       f"(looked in {', '.join(map(str, candidates))})")


@pytest.fixture(scope="session")
def mirror() -> Path:
    return find_mirror()


@pytest.fixture(scope="session")
def celeba_photo(mirror) -> Path:
    return mirror / "celeba" / "img_align_celeba" / "000001.jpg"


@pytest.fixture(scope="session")
def london_photo(mirror) -> Path:
    return mirror / "london" / "neutral_front" / "001_03.jpg"


@pytest.fixture(scope="session")
def facenet():
    """FaceNet converted here from the PyPI graph (tests never rely on pipeline outputs)."""
    from facegan.pretrained.facenet import FaceNet, convert_graph

    net, summary = convert_graph()
    assert summary["conv_layers"] == 132 and summary["residual_blocks"] == 21
    return FaceNet(net)


@pytest.fixture(scope="session")
def pretrained_root(tmp_path_factory, facenet) -> Path:
    """A project folder holding models/pretrained/facenet.pt, for methods with fixed networks."""
    import torch

    root = tmp_path_factory.mktemp("pretrained")
    (root / "models" / "pretrained").mkdir(parents=True)
    torch.save(facenet.net.state_dict(), root / "models" / "pretrained" / "facenet.pt")
    return root


@pytest.fixture
def no_face_photo(tmp_path) -> Path:
    """A smooth gradient: an image, but no face."""
    ramp = np.linspace(0, 255, 160, dtype=np.uint8)
    image = np.stack([np.tile(ramp, (160, 1)), np.tile(ramp[:, None], (1, 160)), np.full((160, 160), 90, np.uint8)], -1)
    path = tmp_path / "wall.png"
    Image.fromarray(image).save(path)
    return path


def truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def grayscale_copy(src: Path, dst: Path) -> Path:
    Image.open(src).convert("L").save(dst, format="JPEG")
    return dst


def copy_repo(dst: Path) -> Path:
    """The repository as git sees it (tracked + untracked-not-ignored), as a fresh git repo."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dst, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "copy"], cwd=dst, check=True)
    return dst


def headless_chromium():
    """A Selenium driver on Debian's chromium + chromedriver (`make test` installs them where it can),
    or a skip; .ci/run sets FACEGAN_REQUIRE_BROWSER=1, so in CI a missing browser fails instead."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        message = "headless browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("FACEGAN_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def open_report(html: Path) -> dict:
    """What a reader of reports/index.html sees: the comparison rows, and for every image whether the
    browser decoded it, and the inline loss-curve SVGs."""
    browser = headless_chromium()
    try:
        browser.get(Path(html).resolve().as_uri())
        return browser.execute_script("""
            const rows = [...document.querySelectorAll('#comparison tbody tr')].map(tr => ({
                method: tr.dataset.method,
                cells: [...tr.querySelectorAll('td')].map(td => td.innerText.trim())}));
            const images = [...document.images].map(img => ({alt: img.alt, complete: img.complete,
                                                             width: img.naturalWidth}));
            const svgs = [...document.querySelectorAll('.losses svg')].length;
            const papers = document.querySelectorAll('#papers tbody tr').length;
            const quality = document.querySelectorAll('#data-quality tbody tr').length;
            return {title: document.title, rows, images, svgs, papers, quality};""")
    finally:
        browser.quit()
