"""TP-GAN: patches at the template, every loss term, the identification protocol, `facegan frontalize`."""
import shutil

import numpy as np
import pytest
import torch

from facegan import cli
from facegan.faces.pose import PATCHES, patch_box
from facegan.methods import build_method
from facegan.methods.tpgan import (LABEL_COLUMNS, frontal_prior, landmarks_from_centres, mirror_half,
                                   patch_sizes, symmetry_loss)
from facegan.metrics.frontalization import face_region, rank1, symmetry_error, verification_by_group
from facegan.metrics.pixels import psnr
from facegan.train.data import make_batches
from facegan.train.loop import step_generator
from conftest import eval_context, term_reaches, tiny_data, tiny_params


@pytest.fixture
def tpgan(pretrained_root):
    method = build_method("tpgan", tiny_params())
    method.setup(pretrained_root, "cpu")
    batches = make_batches(tiny_data(method="tpgan"), 8, 0, flip=False)
    method.prepare(batches.labels)
    method.fit_to_training_data(batches)
    method.optimizers = method.configure_optimizers()
    return method, batches


def test_every_loss_term_is_finite_and_l_syn_is_their_weighted_sum(tpgan):
    method, batches = tpgan
    f_before = {k: v.clone() for k, v in method.f.state_dict().items()}
    losses = method.train_step(batches.batch(0, "cpu"), 0, step_generator(0, 0, 0))
    assert set(losses) == {"loss_d", "loss_pixel", "loss_pixel_local", "loss_sym", "loss_adv", "loss_ip", "loss_id",
                           "loss_tv", "loss_drawn", "loss_g"}
    assert 0 < losses["loss_drawn"] < 0.05   # the prior's weight starts at sigmoid(4) = 0.98
    assert all(np.isfinite(v) for v in losses.values())
    assert losses["loss_ip"] > 0 and losses["loss_pixel_local"] > 0 and losses["loss_id"] > 0
    p = method.params
    assert (p.lambda_sym, p.lambda_adv, p.lambda_tv) == (0.3, 1e-3, 1e-4)   # the paper's (L_ip: ours, docstring)
    assert all(torch.equal(v, f_before[k]) for k, v in method.f.state_dict().items())   # FaceNet is fixed
    assert not any(k.startswith("f.") for k in method.state_dict())


def tpgan_on_synthetic_pairs(pretrained_root, **overrides):
    """A tiny TP-GAN with train.tpgan `overrides`, ready to train on 16 synthetic pairs (its batches)."""
    import dataclasses

    from facegan.methods.tpgan import TPGAN

    params = tiny_params()
    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, tpgan=dataclasses.replace(params.train.tpgan, **overrides)))
    method = build_method("tpgan", params)
    method.setup(pretrained_root, "cpu")
    batches = make_batches(TPGAN.synthetic_data(params.train.tpgan, 16, method.size), 8, 0, flip=False)
    method.prepare(batches.labels)
    method.fit_to_training_data(batches)
    method.optimizers = method.configure_optimizers()
    return method, batches


def test_a_training_step_with_mirror_augment(pretrained_root):
    method, batches = tpgan_on_synthetic_pairs(pretrained_root, mirror_augment=True)
    losses = method.train_step(batches.batch(0, "cpu"), 0, step_generator(0, 0, 0))
    assert all(np.isfinite(v) for v in losses.values()) and losses["loss_ip"] > 0


def test_frontalising_uses_the_moving_average_of_g_when_asked(pretrained_root):
    """ema_decay 0: frontalize() runs the trained G; ema_decay 0.9: a moving average that lags behind it,
    saved with the method (G_ema's weights in the state dict)."""
    outputs = {}
    for decay in (0.0, 0.9):
        torch.manual_seed(0)
        method, batches = tpgan_on_synthetic_pairs(pretrained_root, ema_decay=decay)
        for step in range(4):
            method.train_step(batches.batch(step % 2, "cpu"), step, step_generator(0, step, 0))
            method.after_step(step)
        batch = batches.batch(0, "cpu")
        centres = batch["attributes"][:, :8].reshape(-1, 4, 2)
        if decay > 0:   # the average lags: its weights are not the trained ones
            assert not all(torch.equal(a, b) for a, b in zip(method.G_ema.parameters(), method.G.parameters()))
            with torch.no_grad():   # and it is the G used: moving its prior mask moves the output
                method.G_ema.prior_mask.bias.fill_(-10.0)
        used = method.frontalize(batch["image"], centres, batch["attributes"][:, 8])
        method.average = None   # the trained G itself
        trained = method.frontalize(batch["image"], centres, batch["attributes"][:, 8])
        outputs[decay] = (used, trained)
        assert any(k.startswith("G_ema.") for k in method.state_dict()) == (decay > 0)
    assert torch.allclose(*outputs[0.0], atol=1e-6)
    assert not torch.allclose(*outputs[0.9], atol=1e-2)


def test_template_is_the_mean_of_the_frontal_inputs(tpgan):
    method, batches = tpgan
    labels = batches.labels
    frontal = labels[labels[:, 8] == 0, :8].reshape(-1, 4, 2)
    assert torch.allclose(method.template, frontal.mean(0))
    assert method.yaw_model.abs().sum() > 0
    with pytest.raises(ValueError, match="no frontal"):
        method.prepare(labels[labels[:, 8] != 0])
    with pytest.raises(ValueError, match=f"{LABEL_COLUMNS} columns"):
        method.prepare(labels[:, :8])


def test_patches_land_inside_the_image_at_the_template_positions(tpgan):
    method, _ = tpgan
    g, size = method.G, method.size
    image = torch.zeros(1, 3, size, size)
    for k, name in enumerate(PATCHES):
        height, width = patch_sizes(size)[name]
        centre = method.template[k]
        x0, y0, x1, y1 = patch_box(centre.tolist(), (height, width), size)
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        assert abs((x0 + x1) / 2 - centre[0]) <= 1 and abs((y0 + y1) / 2 - centre[1]) <= 1
        marked = image.clone()
        marked[:, :, y0:y1, x0:x1] = 1
        crop = g.crop(marked, method.template[None], name)
        assert crop.shape == (1, 3, height, width) and bool((crop == 1).all())
        placed = g.place(torch.ones(1, 1, height, width), (x0, y0, x1, y1))
        assert placed.shape[-2:] == (size, size) and placed.sum() == height * width
        assert placed[0, 0, y0:y1, x0:x1].all()
        # centres off the image still give whole patches inside it
        corner = g.crop(image, torch.full((1, 4, 2), -50.0), name)
        assert corner.shape == (1, 3, height, width)


def test_mirror_half_flips_whole_pairs_and_swaps_the_eyes():
    g = torch.Generator().manual_seed(0)
    x, frontal = torch.randn(16, 3, 64, 64), torch.randn(16, 3, 64, 64)
    centres = torch.tensor([[22.0, 27], [42, 27], [33, 38], [30, 48]]).expand(16, -1, -1).clone()
    batch = {"frontal_pool": torch.zeros(16, 1792), "frontal_pool_mirrored": torch.ones(16, 1792),
             "frontal_embedding": torch.zeros(16, 512), "frontal_embedding_mirrored": torch.ones(16, 512)}
    yaws = torch.full((16,), 45.0)
    fx, ffrontal, fcentres, fyaws, features = mirror_half(x, frontal, centres, yaws, batch, g)
    flipped = features["pool"][:, 0] == 1
    assert torch.equal(fyaws[flipped], -yaws[flipped]) and torch.equal(fyaws[~flipped], yaws[~flipped])
    assert 0 < flipped.sum() < 16 and torch.equal(features["embedding"][:, 0] == 1, flipped)
    assert torch.equal(fx[flipped], x[flipped].flip(-1)) and torch.equal(ffrontal[flipped], frontal[flipped].flip(-1))
    assert torch.equal(fx[~flipped], x[~flipped]) and torch.equal(fcentres[~flipped], centres[~flipped])
    # the image-left eye (x = 63 - 42 = 21) is again patch 0; the nose and mouth mirror in place
    assert fcentres[flipped][0].tolist() == [[21.0, 27], [41, 27], [30, 38], [33, 48]]


def test_frontal_prior_warps_onto_the_template_and_mirrors_the_visible_half():
    """At the template's own landmarks the prior is the input; turned past prior_mirror_at, the hidden half is
    the visible half's mirror image: a face turned to the image's left (yaw < 0) shows its image-right half."""
    template = torch.from_numpy(landmarks_from_centres(np.array([[[22.0, 27], [42, 27], [32, 38], [32, 48]]])))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    same = frontal_prior(x, template, template[0], torch.tensor([0.0]), 30.0)
    assert (same - x)[..., 4:-4, 4:-4].abs().max() < 1e-3
    middle = int(round(float(template[0, [8, 27, 28, 29, 30, 33, 51, 57, 62, 66], 0].mean())))
    halves = torch.full((1, 3, 64, 64), -0.5)
    halves[..., middle:] = 0.5                                   # image-left half dark, image-right half light
    for yaw, shown in ((-60.0, 0.5), (60.0, -0.5)):
        prior = frontal_prior(halves, template, template[0], torch.tensor([yaw]), 30.0)
        inner = torch.cat([prior[..., 8:-8, 4:middle - 3], prior[..., 8:-8, middle + 3:-4]], -1)
        assert (inner - shown).abs().max() < 1e-3, yaw


def test_symmetry_and_pixel_metrics():
    half = torch.rand(2, 3, 8, 4) * 2 - 1
    mirrored = torch.cat([half, half.flip(3)], 3)
    assert symmetry_loss(mirrored) == 0 and symmetry_error(mirrored) == 0
    assert symmetry_loss(torch.cat([half, -half.flip(3)], 3)) > 0
    a = torch.zeros(1, 3, 4, 4)
    assert psnr(a, a + 0.2)[0] == pytest.approx(20.0, abs=1e-4)   # error 0.1 on [0, 1]: 20 dB


def test_rank1_counts_a_face_not_found_as_a_miss():
    gallery = np.eye(3)
    probes = np.array([[1, 0.1, 0], [0, 1, 0.1], [np.nan] * 3, [0.1, 0, 1]])
    ids = ["a", "b", "c", "c"]
    assert rank1(probes, ids, gallery, ["a", "b", "c"], "cosine").tolist() == [True, True, False, True]
    assert rank1(probes, ids, gallery, ["a", "b", "c"], "euclidean").tolist() == [True, True, False, True]


def test_verification_separates_own_frontal_from_strangers():
    rng = np.random.default_rng(0)
    gallery, gallery_ids = rng.normal(size=(30, 16)), np.arange(30)
    probe_ids = np.repeat(np.arange(6), 20)
    groups = np.tile(["15", "90"], 60)
    close = gallery[probe_ids] + rng.normal(0, 0.1, (120, 16))
    accuracy = verification_by_group(close, probe_ids, gallery, gallery_ids, groups)
    assert list(accuracy) == ["15", "90"] and min(accuracy.values()) > 0.95
    unrelated = verification_by_group(rng.normal(size=(120, 16)), probe_ids, gallery, gallery_ids, groups)
    assert max(unrelated.values()) < 0.75


def test_face_region_keeps_the_face_and_greys_the_rest():
    """The face drawn inside the landmark hull fills the cut's centre; the background below the chin and in
    the corners goes grey."""
    import cv2

    side = 64
    jaw = [np.r_[32 + 20 * np.cos(t), 30 + 22 * np.sin(t)] for t in np.linspace(0, np.pi, 17)]
    brows = [np.r_[17 + 3 * k, 24] for k in range(10)]
    inner = [np.r_[24 + k % 17, 30 + k // 17 * 4] for k in range(41)]
    points = np.stack(jaw + brows + inner).astype(np.float32)
    assert points.shape == (68, 2)
    image = np.full((1, side, side, 3), 255, np.uint8)                  # white background
    cv2.fillConvexPoly(image[0], cv2.convexHull(points.astype(np.int32)), (200, 120, 90))
    cut = face_region(image, points)
    assert cut.shape == image.shape
    assert tuple(cut[0, side // 2, side // 2]) == (200, 120, 90)       # the face, centred
    assert tuple(cut[0, 0, 0]) == tuple(cut[0, -1, -1]) == (128, 128, 128)
    assert (cut[0, -1] == 128).all()                                    # below the chin: grey


def test_umist_pose_from_the_sequence(mirror, tmp_path):
    from facegan.config import SourceParams
    from facegan.data.manifest import write_manifest
    from facegan.data.umist import import_umist
    from facegan.metrics.frontalization import umist_inputs

    out = tmp_path / "data" / "raw" / "umist"
    frame, _ = import_umist(mirror / "umist", out, SourceParams(folder="umist", max_images=40), 0)
    write_manifest(frame.assign(split="test"), out)
    images, frame = umist_inputs(tmp_path, 64)
    assert images.shape == (len(frame), 64, 64, 3)
    first = frame.groupby("identity")["sequence_index"].idxmin()
    last = frame.index[frame["sequence_index"] == frame["sequence_length"] - 1]
    assert (frame.loc[first, "yaw_estimate"] == 90).all() and (frame.loc[last, "yaw_estimate"] == 0).all()


@pytest.fixture(scope="module")
def tpgan_project(tmp_path_factory, pretrained_root, mirror):
    """Four Multi-PIE people through the `multipie` stage (2 train, 2 test) and a 2-step TP-GAN."""
    from facegan.config import Params, build
    from facegan.data.multipie import run_multipie
    from facegan.methods.tpgan import TPGAN
    from facegan.train.loop import Context, Trainer, build_for_training
    from conftest import REPO

    root = tmp_path_factory.mktemp("tpgan_project")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copytree(pretrained_root / "models", root / "models")
    run_multipie(build(Params, {"multipie": {"max_images": 312, "split": {"train": 0.5, "val": 0.0, "test": 0.5}}}),
                 mirror, root)
    from facegan.config import SourceParams
    from facegan.data.manifest import write_manifest
    from facegan.data.umist import import_umist

    umist = root / "data" / "raw" / "umist"
    frame, _ = import_umist(mirror / "umist", umist, SourceParams(folder="umist", max_images=60), 0)
    write_manifest(frame.assign(split="test"), umist)
    from facegan.pretrained.feature_stage import run_features

    run_features(build(Params, {"features": {"sets": [], "multipie_sizes": [64]}}).features, root, "cpu")
    params = tiny_params(2)
    data = TPGAN.training_data(root, params.train.tpgan)
    Trainer(build_for_training("tpgan", params, data.image_size), make_batches(data, 8, 0, flip=False),
            root / "models" / "tpgan", root / "reports" / "train" / "tpgan", Context(), root=root).fit()
    return root


def test_training_pairs_never_cross_people(tpgan_project):
    from facegan.data.multipie import load_pairs

    pairs = load_pairs(tpgan_project, "train", 64)
    rows = pairs["rows"]
    person = rows["identity"].astype(int)
    assert (rows["path"].str[:3].astype(int) == person).all()
    assert (rows["frontal_path"].str[:3].astype(int) == person).all()
    assert rows["frontal_path"].str.contains("_051_").all()
    assert pairs["inputs"].shape == pairs["frontals"].shape == (len(rows), 64, 64, 3)
    assert set(np.unique(pairs["labels"][:, 8])) == set(range(-90, 91, 15))


def test_evaluation_on_held_out_people(tpgan_project):
    from facegan.train.loop import load_trained

    method = load_trained("tpgan", tpgan_project)
    context = eval_context(tpgan_project, "tpgan", umist=True)
    report = context.report_dir
    result = method.evaluate(context)
    assert result["test_people"] == 2 and result["gallery_people"] == 2 and result["chance"] == 0.5
    assert result["gallery_people_with_distractors"] == 4 and result["chance_with_distractors"] == 0.25
    yaws = [str(y) for y in range(0, 91, 15)]
    for key in ("rank1_facenet_raw", "rank1_facenet_frontalized", "rank1_dlib_raw", "rank1_dlib_frontalized",
                "rank1_facenet_frontalized_with_distractors", "rank1_dlib_raw_with_distractors"):
        assert list(result[key]) == yaws and all(0 <= v <= 1 for v in result[key].values())
    found = result["dlib_face_found_raw"]
    assert found["0"] == 1.0 and found["90"] < 1.0    # dlib's frontal detector misses profiles: counted as misses
    assert result["probes_per_group"]["90"] == 24      # 2 people x 2 profiles x 6 flashes
    assert np.isfinite(result["psnr"]) and 0 < result["l1"] < 1
    for key in ("face_region_rank1_facenet_raw_with_distractors", "face_region_rank1_facenet_frontalized",
                "face_region_rank1_dlib_frontalized_with_distractors", "verification_facenet_raw",
                "verification_facenet_frontalized", "face_region_verification_facenet_frontalized"):
        assert list(result[key]) == yaws and all(0 <= v <= 1 for v in result[key].values()), key
    assert (report / "face_region.png").exists()
    assert list(result["collapse_dlib_by_yaw"]) == yaws and result["collapse_min"] == min(
        result["collapse_pixels_min"], result["collapse_dlib_min"])
    assert result["umist"]["people"] == 4 and result["umist"]["images"] == 60   # 19 images a person
    assert (report / "frontalization_by_yaw.png").exists() and (report / "umist_frontalization.png").exists()


def test_progress_probe_identifies_among_every_person(tpgan_project):
    """The training-time figure uses the evaluation's harder gallery: the training people's frontals too."""
    from facegan.train.loop import load_trained

    method = load_trained("tpgan", tpgan_project)
    method.setup(tpgan_project, "cpu")
    figure = method.progress_probe(tpgan_project, None, 8)()
    assert list(figure) == ["rank1_yaw60plus_with_distractors_8"] and 0 <= figure[list(figure)[0]] <= 1


def test_collapse_measures_see_through_copied_tones(tpgan_project):
    """The true frontals are as distinct as the people (1 on both measures); one mean face wearing each
    person's mean colour differs in pixels but not in dlib's descriptor, so the partner measure catches it."""
    from facegan.data.datasets import to_tensor
    from facegan.data.multipie import load_pairs
    from facegan.metrics.frontalization import collapse_measures

    pairs = load_pairs(tpgan_project, "test", 64)
    assert pairs["frontal_template"].shape == (68, 2) and (pairs["frontal_template"] < 64).all()
    truth = to_tensor(pairs["frontals"])
    honest = collapse_measures(truth, truth, pairs["rows"], pairs["frontal_template"])
    assert honest["collapse_pixels_min"] == pytest.approx(1) and honest["collapse_dlib_min"] == pytest.approx(1)
    mean_face = truth.mean(0, keepdim=True)
    toned = (mean_face - mean_face.mean((2, 3), keepdim=True) + truth.mean((2, 3), keepdim=True)).clamp(-1, 1)
    copied = collapse_measures(toned, truth, pairs["rows"], pairs["frontal_template"])
    assert copied["collapse_dlib_min"] < 0.5 and copied["collapse_min"] == copied["collapse_dlib_min"], copied


def test_frontalize_a_real_profile(tpgan_project, mirror, no_face_photo, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(tpgan_project)
    profile = sorted((mirror / "multipie" / "020").glob("020_01_01_090_07_*.png"))[0]   # camera 090: -60 degrees
    out = tpgan_project / "out" / "frontal.png"
    assert cli.main(["frontalize", str(profile), "--yaw", "-60", "--out", str(out), "--crop"]) == 0
    assert Image.open(out).size == (64, 64) and (out.parent / "frontal_compare.png").exists()
    assert "yaw -60 degrees (given)" in capsys.readouterr().out
    assert cli.main(["frontalize", str(profile), "--yaw", "-60", "--out", str(out)]) == 0
    assert Image.open(out).size == Image.open(profile).size                  # pasted back into the photo
    assert cli.main(["frontalize", str(profile), "--out", str(out)]) == 0
    assert "estimated from the landmarks" in capsys.readouterr().out
    assert cli.main(["frontalize", str(profile), "--as-is", "--yaw", "-60", "--out", str(out)]) == 0
    assert "photo used as framed" in capsys.readouterr().out
    assert cli.main(["frontalize", str(profile), "--as-is", "--out", str(out)]) == 2
    assert cli.main(["frontalize", str(no_face_photo), "--out", str(tpgan_project / "x.png")]) == 1
    assert f"{no_face_photo}: no face found" in capsys.readouterr().err
    assert cli.main(["frontalize", str(profile), "--yaw", "120", "--out", str(out)]) == 2


@pytest.mark.parametrize("weight", ["lambda_sym", "lambda_ip", "lambda_id", "lambda_tv"])
def test_each_weighted_term_reaches_the_generator(weight, pretrained_root):
    """L_sym, L_ip, L_id and L_tv each change G's step (a term left out of L_syn would not)."""
    assert term_reaches("tpgan", weight, "G", root=pretrained_root)


def eight_people(size: int = 64):
    """8 'people' as smooth faces of their own (a skin tone, dark eyes at a face-specific spacing and height, a
    mouth of a face-specific width) on grey, and a 'profile' input of each: the face squeezed towards one side
    (as a turned head is), the other side's eye hidden. Labels: the input's four patch centres and a yaw."""
    g = torch.Generator().manual_seed(3)
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    frontals, inputs, labels = [], [], []
    for person in range(8):
        tone = torch.rand(3, generator=g) * 0.8 - 0.2
        spacing, height, mouth = (8 + 6 * torch.rand(3, generator=g)).tolist()

        def face(squeeze: float) -> torch.Tensor:
            cx = size / 2 - (1 - squeeze) * size / 4
            x = (xs - cx) / squeeze
            image = torch.full((3, size, size), -0.2)
            skin = (x / 20) ** 2 + ((ys - size / 2) / 26) ** 2 < 1
            image[:, skin] = tone[:, None]
            for side in (-1, 1):
                eye = (x - side * spacing) ** 2 + (ys - size / 2 + height / 2) ** 2 < 9
                if squeeze < 1 and side < 0:
                    continue
                image[:, eye & skin] = -0.9
            image[:, (abs(x) < mouth / 2) & (abs(ys - size / 2 - 12) < 2) & skin] = -0.6
            return image

        frontals.append(face(1.0))
        inputs.append(face(0.6))
        centres = [[size / 2 - 0.4 * size / 4 - 0.6 * spacing, size / 2 - height / 2],
                   [size / 2 - 0.4 * size / 4 + 0.6 * spacing, size / 2 - height / 2],
                   [size / 2 - 0.1 * size, size / 2 + 2], [size / 2 - 0.1 * size, size / 2 + 12]]
        labels.append(torch.tensor(sum(centres, []) + [60.0]))
    return torch.stack(inputs), torch.stack(frontals), torch.stack(labels)


def test_mechanism_eight_people_get_their_own_frontal_not_the_mean_face(pretrained_root):
    """Issue 23's mechanism: trained on 8 fixed profile -> frontal pairs of different 'people', G's L1 to the
    true frontals falls below 0.1 and its outputs stay as distinct as the people (collapse measure >= 0.5;
    the mean face, the L1 optimum an under-trained G settles in first, scores 0)."""
    import dataclasses

    from facegan.metrics.frontalization import collapse_by_group

    inputs, frontals, labels = eight_people()
    params = tiny_params()
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, tpgan=dataclasses.replace(
        params.train.tpgan, width=8, local_width=8, d_width=8, lr=2e-3, lambda_ip=0.0)))   # no FaceNet pass: 60 s
    torch.manual_seed(0)
    method = build_method("tpgan", params)
    method.setup(pretrained_root, "cpu")
    method.prepare(torch.cat([labels, torch.cat([labels[:1, :8], torch.zeros(1, 1)], 1)]))   # one frontal row
    # the frontal prior's shapes: the canonical shape on each input's centres (yaw 60), on their mirror images
    # (-60) and on one frontal's (0): the yaw model needs three yaws
    mirrored = labels[:, :8].reshape(-1, 4, 2).clone()
    mirrored[..., 0] = 63 - mirrored[..., 0]
    mirrored = mirrored[:, [1, 0, 2, 3]]
    frontal_centres = torch.tensor([[22.0, 27.0], [42.0, 27.0], [32.0, 38.0], [32.0, 48.0]])
    centres = torch.cat([labels[:, :8].reshape(-1, 4, 2), mirrored, frontal_centres[None]])
    method.fit_shapes(torch.from_numpy(landmarks_from_centres(centres.numpy())),
                      torch.tensor([60.0] * 8 + [-60.0] * 8 + [0.0]))
    method.optimizers = method.configure_optimizers()
    with torch.no_grad():
        features, mirrored = method.f.features(frontals), method.f.features(frontals.flip(-1))
    batch = {"image": inputs, "frontal": frontals, "attributes": labels, "identity": torch.arange(8.0)[:, None],
             **{f"frontal_{k}": features[k].float() for k in ("pool", "embedding")},
             **{f"frontal_{k}_mirrored": mirrored[k].float() for k in ("pool", "embedding")}}
    for step in range(150):
        method.train_step(batch, step, step_generator(0, step, 0))
    outputs = method.frontalize(inputs, labels[:, :8].reshape(-1, 4, 2))
    l1 = float((outputs - frontals).abs().mean())
    collapse = collapse_by_group(outputs, frontals, np.arange(8), np.zeros(8, int))["0"]
    assert l1 < 0.1 and collapse >= 0.5, (l1, collapse)
    assert collapse_by_group(frontals.mean(0, keepdim=True).expand(8, -1, -1, -1), frontals, np.arange(8),
                             np.zeros(8, int))["0"] == 0


def test_prior_shading_relights_the_prior_g_blends(pretrained_root):
    """prior_shading: the prior is relit, prior (1 + gain) + offset, from the code, before the blend; it starts as
    the prior itself and a step moves it (its head gets a gradient)."""
    from facegan.methods.tpgan import relit

    prior = torch.rand(2, 3, 8, 8) * 2 - 1
    shading = torch.zeros(2, 2, 3, 2, 2)
    assert torch.equal(relit(prior, shading), prior)
    shading[0, 0, 1] = 0.5    # the first image's green gain, everywhere
    shading[1, 1, :, :, 1] = 0.2   # the second's offset on the grid's right column
    out = relit(prior, shading)
    assert torch.allclose(out[0, 1], prior[0, 1] * 1.5) and torch.equal(out[0, [0, 2]], prior[0, [0, 2]])
    assert torch.allclose(out[1, :, :, -1], prior[1, :, :, -1] + 0.2)
    assert torch.allclose(out[1, :, :, 0], prior[1, :, :, 0])
    method, batches = tpgan_on_synthetic_pairs(pretrained_root, prior_shading=2)
    before = method.G.shading.weight.detach().clone()
    method.train_step(batches.batch(0, "cpu"), 0, step_generator(0, 0, 0))
    assert not torch.equal(method.G.shading.weight, before)
