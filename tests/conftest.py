import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegan.config import Params, build

REPO = Path(__file__).resolve().parents[1]


def find_mirror() -> Path:
    """FACEGAN_DATA, else a shared/datasets folder beside the repository or beside any folder above it."""
    if os.environ.get("FACEGAN_DATA"):
        return Path(os.environ["FACEGAN_DATA"]).resolve()
    candidates = [folder / "shared" / "datasets" for folder in (REPO, *REPO.parents)]
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
def two_face_photo(tmp_path, london_photo, mirror) -> Path:
    """London's 001 (large, left) and 002 (smaller, right) on one white canvas, 795 x 455."""
    from PIL import Image

    big = Image.open(london_photo).crop((110, 110, 565, 565))
    small = Image.open(mirror / "london/neutral_front/002_03.jpg").crop((110, 110, 565, 565)).resize((340, 340))
    canvas = Image.new("RGB", (795, 455), "white")
    canvas.paste(big, (0, 0))
    canvas.paste(small, (455, 60))
    canvas.save(tmp_path / "two.jpg")
    return tmp_path / "two.jpg"


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


# ---------------------------------------------------------------- tiny methods, shared by the method tests
TINY_METHODS = {"cgan": {"g_width": 4, "d_width": 4, "z_dim": 16},
                "beholder": {"g_width": 4, "d_width": 4, "z_dim": 16, "raters": 5},
                "fader": {"width": 4, "max_width": 16, "lambda_warmup": 1, "lambda_steps": 2,
                          "attributes": ["Blond_Hair", "Attractive", "Male", "Young"]},
                "dtn": {"g_width": 4, "h_width": 16, "d_width": 4, "batch_size": 4, "tid_warmup": 0, "alpha_ramp": 0,
                        "f_components": 8, "assign_bank": 8, "assign_steps": 0, "assign_synthetic": 8},
                "tpgan": {"size": 64, "width": 4, "local_width": 4, "d_width": 4, "z_dim": 8},
                "geogan": {"width": 4, "d_width": 4, "warmup": 0, "refine_start": 0}}


def tiny_params(tmp_steps: int = 4, widened: dict | None = None, **common) -> Params:
    """The tiny params; `widened`: {method: {param: value}} on top of TINY_METHODS."""
    methods = {name: {**own, **(widened or {}).get(name, {})} for name, own in TINY_METHODS.items()}
    return build(Params, {"train": {
        "common": {"batch_size": 8, "max_steps": tmp_steps, "checkpoint_every": 2, "sample_every": 2,
                   "log_every": 1, "max_minutes": 5, "progress_samples": 0, **common},
        **methods}})


def tiny_data(n: int = 32, attributes: int = 6, seed: int = 0, method: str = "cgan"):
    """Random faces and each method's kind of condition (the method's synthetic_data at the tiny params;
    `attributes`: how many binary conditions a cgan gets)."""
    from facegan.methods import method_class

    params = getattr(tiny_params().train, method)
    if method == "cgan":
        params = dataclasses.replace(params, attributes=params.attributes[:attributes])
    return method_class(method).synthetic_data(params, n, 64, seed)


def train(tmp: Path, steps: int, method: str = "cgan", root: Path | None = None, widened: dict | None = None,
          **common):
    """A tiny run; `root` holds models/pretrained/ for methods with fixed networks (dtn); `widened`: the
    method's params over the tiny ones."""
    from facegan.train.data import make_batches
    from facegan.train.loop import Context, Trainer, build_for_training

    built = build_for_training(method, tiny_params(steps, {method: widened or {}}, **common), 64)
    trainer = Trainer(built, make_batches(tiny_data(method=method), 8, 0, flip=built.flip_augment), tmp / "models",
                      tmp / "reports", Context(), root=root)
    trainer.fit()
    return trainer


def trained_project(root: Path, method: str, pretrained: Path | None = None) -> Path:
    """A project folder (params.yaml, models/pretrained/ when given) holding a 2-step `method`
    in models/<method>/, for the CLI tests."""
    import shutil

    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    if pretrained is not None:
        shutil.copytree(pretrained / "models", root / "models")
    train(root / "run", 2, method=method, root=root if pretrained is not None else None)
    (root / "models").mkdir(exist_ok=True)
    (root / "run" / "models").rename(root / "models" / method)
    return root


def eval_context(root: Path, method: str, **own):
    """The EvalContext evaluate@<method> builds, on default params, with keys of evaluate.<method> set."""
    import dataclasses

    from facegan.evaluation import EvalContext

    params = build(Params, {})
    section = dataclasses.replace(getattr(params.evaluate, method), **own)
    return EvalContext(Path(root), Path(root) / "reports" / "eval" / method, params.eval, section, params.align)


def term_reaches(method_name: str, weight: str, network: str, batch_size: int = 8, root: Path | None = None) -> bool:
    """Does the loss term weighted by train.<method>.<weight> reach `network`'s update? One step from the same
    initial weights and batch with the weight as set and with it 0: the network's weights must differ."""
    import dataclasses

    import torch

    from facegan.methods import build_method
    from facegan.train.data import make_batches
    from facegan.train.loop import step_generator

    params = tiny_params()
    outcomes = []
    for value in (getattr(getattr(params.train, method_name), weight), 0.0):
        own = dataclasses.replace(getattr(params.train, method_name), **{weight: value})
        torch.manual_seed(0)
        method = build_method(method_name, dataclasses.replace(params, train=dataclasses.replace(
            params.train, **{method_name: own})))
        if root is not None:
            method.setup(root, "cpu")
        batches = make_batches(tiny_data(method=method_name), batch_size, 0, flip=method.flip_augment)
        method.prepare(batches.labels)
        method.fit_to_training_data(batches)
        method.start_training(batches.examples(8, "cpu"))
        method.train_step(batches.batch(0, "cpu"), 0, step_generator(0, 0, 0))
        outcomes.append(getattr(method, network).state_dict())
    return any(not torch.equal(outcomes[0][k], outcomes[1][k]) for k in outcomes[0])
