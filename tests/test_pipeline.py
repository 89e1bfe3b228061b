"""End to end: `dvc repro` of the DAG with tiny params in a temporary git copy of the repository."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import copy_repo, open_report
from facegan.data.datasets import read_image_set
from facegan.data.manifest import read_manifest
from facegan.methods import REGISTRY

TINY = {
    "ingest.celeba.max_images": 300, "ingest.celeba.split": {"train": 0.5, "val": 0.1, "test": 0.4},
    "ingest.umist.max_images": 40, "ingest.emoji.max_images": 30, "features.mirrored": ["avatars"],
    "render_avatars.n": 20, "render_avatars.split": {"train": 0.5, "val": 0.2, "test": 0.3},
    "attr_classifier.epochs": 1, "attr_classifier.width": 8, "identity.pairs": 50,
    "avatar_reader.epochs": 1, "avatar_reader.width": 4,
    "train.common.max_steps": 3, "train.common.batch_size": 8, "train.common.sample_every": 2,
    "train.common.log_every": 1, "train.common.progress_samples": 16,
    "train.cgan.g_width": 4, "train.cgan.d_width": 4, "eval.n_samples": 24, "eval.kid_subsets": 5,
    "ingest.london.max_images": 40, "beauty.raters": 5, "beauty.folds": 5,
    "train.beholder.raters": 5, "train.beholder.g_width": 4, "train.beholder.d_width": 4,
    "train.beholder.z_dim": 16, "train.beholder.batch_size": 8, "evaluate.beholder.inversion": {"steps": 2, "starts": 2, "lr": 0.05, "alpha": 0.5},
    "evaluate.beholder.levels": 3, "evaluate.beholder.strips": 4, "evaluate.beholder.beautify_faces": 4,
    "train.fader.width": 4, "train.fader.max_width": 16, "train.fader.lambda_warmup": 1,
    "train.fader.lambda_steps": 1, "evaluate.fader.identity_faces": 8,
    "train.dtn.g_width": 4, "train.dtn.d_width": 4, "train.dtn.batch_size": 4, "train.dtn.tid_warmup": 1,
    "train.dtn.f_components": 4,   # the tiny run renders 10 training avatars
    "train.dtn.assign_bank": 16, "train.dtn.assign_steps": 1, "train.dtn.assign_synthetic": 8,
    "multipie.max_images": 156, "multipie.split": {"train": 0.5, "val": 0.0, "test": 0.5},
    "evaluate.dtn.retrieval": 8, "evaluate.dtn.retrieval_sets": 2, "evaluate.dtn.identity_faces": 8,
    "train.tpgan.size": 64, "train.tpgan.width": 4, "train.tpgan.local_width": 4, "train.tpgan.d_width": 4,
    "train.tpgan.z_dim": 8,
    "train.geogan.width": 4, "train.geogan.d_width": 4, "train.geogan.warmup": 0, "evaluate.geogan.identity_faces": 8,
    "evaluate.geogan.landmark_faces": 8,
}


def dvc(args, cwd: Path, env) -> str:
    done = subprocess.run([str(Path(sys.executable).with_name("dvc")), *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mirror):
    """`dvc repro` of the whole DAG with TINY params in a fresh git copy of the repository."""
    tmp_path = tmp_path_factory.mktemp("e2e")
    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["mirror"] = str(mirror)
    for dotted, value in TINY.items():
        node = params
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("FACEGAN_DATA", None)
    env.pop("DVC_ROOT", None)
    dvc(["repro"], repo, env)
    return tmp_path, repo, params, env


@pytest.mark.slow
def test_report_of_the_tiny_run_in_a_browser(tiny_run):
    """Every method's row filled, linked to its MLflow runs, every image decoded by a browser."""
    _, repo, _, _ = tiny_run
    page = open_report(repo / "reports/index.html")
    assert [row["method"] for row in page["rows"]] == list(REGISTRY)
    for row in page["rows"]:
        assert "not evaluated" not in " ".join(row["cells"]) and row["cells"][-2].startswith("3 steps"), row
        assert len(re.findall(r"\b[0-9a-f]{32}\b", row["cells"][-1])) == 2, row   # evaluate and train run ids
    grids = [p for m in REGISTRY for p in (repo / "reports/eval" / m).glob("*.png")]
    assert len(page["images"]) == len(grids) + len(REGISTRY)          # + each method's last training grid
    assert all(img["complete"] and img["width"] > 0 for img in page["images"])
    assert page["svgs"] == 2 * len(REGISTRY) and page["quality"] > 0   # losses and quality while training


@pytest.mark.slow
def test_dvc_repro_tiny(tiny_run):
    tmp_path, repo, params, env = tiny_run

    quality = json.loads((repo / "reports/data_quality.json").read_text())["sets"]
    assert quality["celeba"]["stages"]["ingest"]["kept"] == 300
    assert quality["celeba"]["stages"]["align"]["read"] == 300
    assert quality["london"]["stages"]["align"]["face_found_rate"] > 0.9
    assert quality["avatars"]["stages"]["render_avatars"]["kept"] == 20
    assert quality["multipie"]["stages"]["multipie"]["kept"] == 156
    for name in ("celeba", "london"):                  # umist is not aligned by default
        images, manifest = read_image_set(repo / f"data/aligned/{name}")
        assert len(manifest) == len(images) == quality[name]["stages"]["align"]["kept"]
        assert images.shape[1:] == (64, 64, 3) and (repo / f"data/aligned/{name}/contact_sheet.png").exists()
    assert (repo / "mlflow.db").exists()
    metrics = {p.stem: json.loads(p.read_text()) for p in (repo / "reports/metrics").glob("*.json")}
    assert metrics["fid_stats"]["celeba"]["images"] > 0 and metrics["facenet_conversion"]["conv_layers"] == 132
    assert set(metrics["attr_classifier"]["test"]) == set(params["attr_classifier"]["attributes"])
    # 120 test faces of CelebA's frequent identities hold people with two photos: dlib's verification is measured
    assert 0.5 <= metrics["face_verification"]["dlib"]["accuracy"] <= 1
    for name in ("models/pretrained/facenet.pt", "models/attr_classifier/model.pt", "data/identity/celeba_test.npz"):
        assert (repo / name).exists(), name
    # the feature cache: every stored image of each set and of its mirror, Multi-PIE's frontals per size
    with np.load(repo / "data/features/celeba.npz") as cached:
        names = list(read_manifest(repo / "data/aligned/celeba")["path"])
        assert list(cached["path"]) == names
        assert cached["pool"].shape == (len(names), 1792) and "embedding_mirrored" not in cached.files
        np.testing.assert_allclose(np.linalg.norm(cached["embedding"], axis=1), 1, atol=1e-3)
    with np.load(repo / "data/features/avatars.npz") as cached:   # features.mirrored: also the mirror images
        assert cached["embedding_mirrored"].shape == cached["embedding"].shape == (20, 512)
        assert not np.allclose(cached["embedding_mirrored"], cached["embedding"])
    assert (repo / "data/features/multipie_frontal_64.npz").exists()
    assert sorted(p.name for p in (repo / "data/fid_stats").iterdir()) == ["avatars_test_64.npz", "celeba_test_64.npz"]
    cgan = metrics["cgan"]
    assert {"fid", "kid", "kid_std", "attr_acc", "attr_acc_Male"} <= set(cgan) and cgan["fid"] > 0
    assert (repo / "reports/eval/cgan/attribute_combinations.png").exists()
    assert (repo / "reports/train/cgan/losses.csv").read_text().count("\n") == 4   # header + 3 steps


    beauty = metrics["beauty"]
    assert beauty["raters_used"] == 5 and -1 <= beauty["ensemble_r"] <= 1 and beauty["faces"] >= 10
    with np.load(repo / "data/pseudo_labels/celeba.npz") as pseudo:
        aligned = read_manifest(repo / "data/aligned/celeba")
        assert pseudo["beta"].shape == (len(aligned), 5) and list(pseudo["path"]) == list(aligned["path"])
        assert pseudo["beta"].min() >= 1 and pseudo["beta"].max() <= 7
    beholder = metrics["beholder"]
    assert {"fid", "kid", "beauty_spearman", "beauty_spearman_within_z", "strip_neighbours_same_rate",
            "beautify_rise_rate", "beautify_rise_rate_se", "identity_acc_beautified", "identity_acc_beautified_se",
            "identity_acc_reconstruction", "identity_ceiling"} <= set(beholder)
    assert all((repo / "reports/eval/beholder" / name).exists() for name in ("beauty_strips.png",
                                                                            "beautification.png"))

    fader = metrics["fader"]
    assert {"reconstruction_psnr", "reconstruction_l1", "swap_acc", "swap_acc_Male", "swap_acc_Young", "fid",
            "identity_acc", "identity_ceiling", "identity_acc_reconstruction", "lat_dis_acc_test",
            "majority_rate_test"} <= set(fader)
    assert all((repo / "reports/eval/fader" / name).exists() for name in ("swaps.png", "sliders.png",
                                                                         "latent_discriminator.png"))
    curve = pd.read_csv(repo / "reports/train/fader/losses.csv")
    assert list(curve["lambda_e"]) == [0, 0, 0.05] and curve["lat_dis_acc"].between(0, 1).all()

    dtn = metrics["dtn"]
    assert {"f_constancy", "f_constancy_random_pairs", "retrieval_rank1", "retrieval_chance", "l_tid_test",
            "fid", "kid", "identity_acc", "identity_ceiling", "retrieval_rank1_perturbed", "tv_ratio",
            "agreement_hair_light", "agreement_glasses"} <= set(dtn)
    assert dtn["retrieval_chance"] == 1 / 8 and dtn["target"] == "avatars" and 0 <= dtn["retrieval_rank1_perturbed"] <= 1
    assert all((repo / "reports/eval/dtn" / name).exists() for name in ("faces_to_avatars.png",
                                                                       "target_identity.png"))
    # step 1: h alone on the part-space terms (assign_steps), step 2: warm-up (g on L_TID), step 3: the game
    curve = pd.read_csv(repo / "reports/train/dtn/losses.csv")
    assert curve["loss_const"].isna().tolist() == [True, True, False]
    assert curve["loss_tid"].isna().tolist() == [True, False, False] and curve["loss_const_parts"].notna().all()

    tpgan = metrics["tpgan"]
    assert {"psnr", "l1", "symmetry_error", "rank1_facenet_raw", "rank1_facenet_frontalized", "rank1_dlib_raw",
            "rank1_dlib_frontalized", "dlib_face_found_raw", "umist"} <= set(tpgan) and tpgan["size"] == 64
    assert list(tpgan["rank1_facenet_frontalized"]) == [str(y) for y in range(0, 91, 15)]
    assert tpgan["umist"]["images"] == 40
    assert all((repo / "reports/eval/tpgan" / name).exists() for name in ("frontalization_by_yaw.png",
                                                                         "umist_frontalization.png"))
    curve = pd.read_csv(repo / "reports/train/tpgan/losses.csv")
    assert len(curve) == 3 and curve[["loss_pixel", "loss_sym", "loss_ip", "loss_adv"]].notna().all().all()

    geogan = metrics["geogan"]
    assert {"transfer_success", "judge_sees_attribute_on_a", "judge_sees_attribute_on_b", "identity_acc",
            "identity_ceiling", "landmark_error_before", "landmark_error_after_flow", "fid", "kid",
            "london_people"} <= set(geogan) and geogan["attribute"] == "Smiling"
    assert all((repo / "reports/eval/geogan" / name).exists() for name in ("transfers.png",))
    curve = pd.read_csv(repo / "reports/train/geogan/losses.csv")
    assert len(curve) == 3 and curve[["loss_lm", "loss_rec", "loss_mask", "loss_cls"]].notna().all().all()

    # every method's declared headline figures are produced by its evaluate (a typo would show as "–")
    for name in REGISTRY:
        missing = set(REGISTRY[name].headline_keys()) - set(metrics[name])
        assert not missing, f"{name} declares headline figures its evaluate does not produce: {missing}"
    summary = (repo / "reports/summary.md").read_text()
    assert all(f"| {m} |" in summary for m in REGISTRY)
    headline = json.loads((repo / "reports/headline.json").read_text())
    assert set(headline) == set(REGISTRY) and headline["cgan"]["fid"] == cgan["fid"]
    # `dvc exp show` lists each method's headline figures; `dvc plots show` every logged loss of every method
    shown = dvc(["exp", "show", "--csv", "--drop", ".*", "--keep", "^(" + "|".join(REGISTRY) + r")\."], repo, env)
    assert {"cgan.fid", "beholder.beauty_spearman", "dtn.retrieval_rank1", "geogan.transfer_success"} <= set(
        shown.splitlines()[0].split(","))
    plots = yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
    for m in REGISTRY:
        (declared,) = next(p[f"{m}_losses"] for p in plots if f"{m}_losses" in p)["y"].values()
        logged = pd.read_csv(repo / f"reports/train/{m}/losses.csv").columns.drop(["step", "img_per_s"])
        assert declared == list(logged), m
    for m in REGISTRY:   # each method's quality figure while training, scored by its judge on the real data
        progress = pd.read_csv(repo / f"reports/train/{m}/progress.csv")
        assert list(progress.columns[:2]) == ["step", "minutes"] and len(progress.columns) == 3, m
        assert progress["step"].iloc[-1] == 3 and np.isfinite(progress.iloc[-1, 2]), m
    assert "Quality while training" in (repo / "reports/index.html").read_text()
    dvc(["plots", "show", "-o", str(tmp_path / "plots")], repo, env)
    assert (tmp_path / "plots/index.html").read_text().count("vegaEmbed(") >= 2 * len(REGISTRY)

    assert "Data and pipelines are up to date" in dvc(["repro"], repo, env)
    dag = dvc(["dag", "--md"], repo, env)
    assert all(stage in dag for stage in ("ingest", "multipie", "align", "render_avatars", "data_quality",
                                          "fid_stats", "convert_facenet", "features", "identity_gallery",
                                          "attr_classifier", "avatar_reader",
                                          "train@cgan", "evaluate@cgan", "beauty", "pseudo_label",
                                          "train@beholder", "evaluate@beholder", "train@fader",
                                          "evaluate@fader", "train@dtn", "evaluate@dtn", "train@tpgan",
                                          "evaluate@tpgan", "train@geogan", "evaluate@geogan", "report"))
    # an evaluation key re-judges the method and keeps its training: evaluate@fader and report run, nothing else
    checkpoint = (repo / "models/fader/checkpoint.pt").read_bytes()
    params["evaluate"]["fader"]["identity_faces"] = 6
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = {line[:-1] for line in dvc(["status"], repo, env).splitlines() if line.endswith(":") and
               not line.startswith((" ", "\t"))}
    assert changed == {"evaluate@fader"}, changed
    ran = re.findall(r"Running stage '([^']+)'", dvc(["repro"], repo, env))
    assert sorted(ran) == ["evaluate@fader", "report"], ran
    assert (repo / "models/fader/checkpoint.pt").read_bytes() == checkpoint

    # a changed cgan param invalidates cgan's training alone
    params["train"]["cgan"]["lr_g"] = 0.0001
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc(["status"], repo, env)
    assert "train@cgan:" in status and "attr_classifier:" not in status and "ingest:" not in status

    # train.common.nproc = 2: the stage re-launches itself under torchrun; rank 0 alone writes and logs
    params["train"]["common"]["nproc"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(["repro", "--single-item", "train@cgan"], repo, env)
    assert json.loads((repo / "models/cgan/model.json").read_text())["processes"] == 2
    assert [int(s) for s in pd.read_csv(repo / "reports/train/cgan/losses.csv")["step"]] == [1, 2, 3]
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    names = set(mlflow.search_runs(search_all_experiments=True)["tags.mlflow.runName"])
    assert "train@cgan" in names and not any(":rank" in n for n in names)
