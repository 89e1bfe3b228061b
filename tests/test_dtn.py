"""Domain Transfer Network: f fixed, the ternary D, every loss term, the evaluation figures, `facegan emojify`."""
import dataclasses

import numpy as np
import pytest
import torch

from facegan.devices import bf16_autocast
from facegan import cli
from facegan.methods import build_method
from facegan.methods.dtn import F_DIM, f_constancy, retrieval, total_variation
from facegan.train.data import make_batches
from facegan.train.loop import step_generator
from conftest import term_reaches, tiny_data, tiny_params, trained_project


@pytest.fixture
def dtn(pretrained_root):
    method = build_method("dtn", tiny_params())
    method.setup(pretrained_root, "cpu")
    method.fit_to_training_data(make_batches(tiny_data(method="dtn"), 4, 0, flip=False))
    method.optimizers = method.configure_optimizers()
    return method


def test_f_stays_frozen_and_every_loss_term_is_there(dtn):
    f_before = {k: v.clone() for k, v in dtn.f.state_dict().items()}
    g_before = {k: v.clone() for k, v in dtn.g.state_dict().items()}
    batch = make_batches(tiny_data(method="dtn"), 4, 0, flip=False).batch(0, "cpu")
    with bf16_autocast("cpu"):
        losses = dtn.train_step(batch, 0, step_generator(0, 0, 0))
    assert set(losses) == set(dtn.losses) == {"loss_d", "loss_gang", "loss_const", "loss_const_parts", "loss_tid",
                                               "loss_tid_parts", "loss_tv", "loss_g"}
    assert all(np.isfinite(v) for v in losses.values()) and 0 < losses["loss_const"] <= 2   # 1 - cos
    for key, value in dtn.f.state_dict().items():          # f: fixed, not trained ...
        assert torch.equal(value, f_before[key]), key
    assert not any(q.requires_grad for q in dtn.f.parameters())
    assert not any(k.startswith("f.") for k in dtn.state_dict())   # ... and not saved with the method
    assert any(not torch.equal(v, g_before[k]) for k, v in dtn.g.state_dict().items())


def test_warmup_trains_g_alone_then_the_game_starts_with_a_fresh_adam(pretrained_root):
    """... and each game step takes one D step, then g_steps (3) g steps."""
    params = tiny_params()
    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, dtn=dataclasses.replace(params.train.dtn, tid_warmup=2, g_steps=3)))
    method = build_method("dtn", params)
    method.setup(pretrained_root, "cpu")
    method.optimizers = method.configure_optimizers()
    batches = make_batches(tiny_data(method="dtn"), 4, 0, flip=False)
    method.fit_to_training_data(batches)
    d_before = {k: v.clone() for k, v in method.D.state_dict().items()}
    for step in range(2):   # warm-up: only g moves, no f pass, no D
        losses = method.train_step(batches.batch(step, "cpu"), step, step_generator(0, step, 0))
        assert np.isnan(losses["loss_const"]) and np.isnan(losses["loss_d"]) and np.isfinite(losses["loss_tid"])
    assert all(torch.equal(v, d_before[k]) for k, v in method.D.state_dict().items())
    assert int(next(iter(method.optimizers["g"].state.values()))["step"]) == 2
    losses = method.train_step(batches.batch(2, "cpu"), 2, step_generator(0, 2, 0))
    assert all(np.isfinite(v) for v in losses.values())
    assert int(next(iter(method.optimizers["g"].state.values()))["step"]) == 3   # Adam restarted, 3 g steps
    assert int(next(iter(method.optimizers["D"].state.values()))["step"]) == 1
    assert any(not torch.equal(v, d_before[k]) for k, v in method.D.state_dict().items())


def test_alpha_rises_from_zero_and_f_is_not_read_while_it_is_zero(pretrained_root):
    method = dtn_with(pretrained_root, alpha=30, alpha_ramp=50, tid_warmup=0)
    assert [method.alpha_at(k) for k in (0, 25, 50, 400)] == [0, 15, 30, 30]
    batch = make_batches(tiny_data(method="dtn"), 4, 0, flip=False).batch(0, "cpu")
    calls = []
    method.f.net.block8.register_forward_hook(lambda *_: calls.append(1))   # any pass of f goes through it
    assert method.train_step(batch, 0, step_generator(0, 0, 0))["loss_const"] == 0 and not calls
    assert method.train_step(batch, 1, step_generator(0, 1, 0))["loss_const"] > 0 and calls


def test_const_parts_targets_the_parts_of_the_nearest_avatars(dtn):
    """L_CONST by assignment: a face whose centred f points at one training avatar's is asked for that
    avatar's parts (const_neighbours 1); h's cross-entropy is low for them and high for another avatar's."""
    import dataclasses as dc

    from facegan.data.avatars import CHOSEN_PARTS

    dtn.params = dc.replace(dtn.params, const_neighbours=1)
    directions, parts = dtn.assignment
    assert len(directions) == len(parts) and parts.shape[1] == len(CHOSEN_PARTS)
    kept_s = dtn.const_means[0] + 3 * directions[[2]]          # a face "like" avatar 2
    other = int((directions @ directions[2]).argmin())         # the avatar least like it

    def logits_for(row: torch.Tensor) -> dict:
        return {part: torch.nn.functional.one_hot(row[k:k + 1], n).float() * 20
                for k, (part, n) in enumerate(dtn.g.counts.items())}
    assert dtn.const_parts_loss(logits_for(parts[2]), kept_s) < 1e-3
    assert dtn.const_parts_loss(logits_for(parts[other]), kept_s) > 1.0


def test_the_assignment_bank_is_the_training_avatars_and_more_drawn_by_r_read_through_j(pretrained_root):
    """const_parts' bank: every training avatar and `assign_bank` more drawn as render_avatars draws them, each
    read as f(J(R(parts))) (seeded: the same bank twice)."""
    from facegan.data.avatars import sample_part_indices

    batches = make_batches(tiny_data(method="dtn"), 4, 0, flip=False)
    first, second = dtn_with(pretrained_root), dtn_with(pretrained_root)
    parts_t = batches.aux["target"].all_values()["parts"].long()
    directions, parts = first.assignment
    assert len(parts) == len(parts_t) + first.params.assign_bank == len(directions)
    assert torch.equal(parts[:len(parts_t)], parts_t)
    assert torch.equal(parts[len(parts_t):], torch.from_numpy(sample_part_indices(first.params.assign_bank, 0)))
    torch.testing.assert_close(directions, second.assignment[0])
    torch.testing.assert_close(directions.norm(dim=1), torch.ones(len(directions)))
    unjittered = dtn_with(pretrained_root, const_shift=0, const_blur=0.0)
    assert not torch.allclose(unjittered.assignment[0], directions, atol=1e-3)   # J is applied


def test_sample_part_indices_are_the_parts_render_avatars_draws(tmp_path):
    import pandas as pd

    from facegan.config import RenderAvatarsParams
    from facegan.data.avatars import CHOSEN_PARTS, part_indices, run_render_avatars, sample_part_indices

    run_render_avatars(RenderAvatarsParams(n=5, size=32, seed=4, workers=1), tmp_path)
    indices = part_indices(pd.read_csv(tmp_path / "manifest.csv"))
    assert np.array_equal(sample_part_indices(5, 4), np.stack([indices[p] for p in CHOSEN_PARTS], 1))


def test_assign_steps_teach_h_the_assignment_with_no_render_no_d_and_no_f(pretrained_root):
    """The first assign_steps train h alone on the part-space terms: no render, no f pass, D untouched; h's
    cross-entropy on the assignment falls; the step after them is a game step."""
    method = dtn_with(pretrained_root, assign_steps=40, assign_synthetic=0, lr=5e-3, h_width=64, const_neighbours=1)
    batch = make_batches(tiny_data(method="dtn"), 4, 0, flip=False).batch(0, "cpu")
    calls = []
    method.f.net.block8.register_forward_hook(lambda *_: calls.append("f"))
    method.g.renderer.register_forward_hook(lambda *_: calls.append("R"))
    d_before = {k: v.clone() for k, v in method.D.state_dict().items()}
    losses = [method.train_step(batch, step, step_generator(0, step, 0)) for step in range(40)]
    assert not calls and all(torch.equal(v, d_before[k]) for k, v in method.D.state_dict().items())
    assert all(np.isnan(row["loss_d"]) and np.isnan(row["loss_tid"]) for row in losses)
    const = [row["loss_const_parts"] for row in losses]
    assert np.mean(const[-5:]) < 0.3 * np.mean(const[:5]), const
    game = method.train_step(batch, 40, step_generator(0, 40, 0))
    assert all(np.isfinite(v) for v in game.values()) and calls


def test_a_synthetic_face_is_read_as_facenet_reads_a_real_one(avatars_and_faces, pretrained_root):
    """synthetic_faces: pools drawn from N(mean, cov) of S's pools, each with FaceNet's own embedding of it."""
    data = avatars_and_faces
    method = dtn_with(pretrained_root, data, f_components=6)
    pool, embedding = data["f_s"][:1].float(), data["f_const"][:1].float()
    method.face_distribution = (pool[0], torch.zeros(pool.shape[1], pool.shape[1]))
    drawn, kept = method.synthetic_faces(3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(drawn, pool.expand(3, -1))
    assert torch.nn.functional.cosine_similarity(kept, embedding).min() > 0.99
    torch.manual_seed(1)
    spread = torch.linspace(0.5, 2.0, pool.shape[1])
    method.fit_face_distribution(3 + spread * torch.randn(4000, pool.shape[1]))
    drawn, kept = method.synthetic_faces(4000, torch.Generator().manual_seed(0))
    assert (drawn.mean(0) - 3).abs().max() < 0.15 and ((drawn.std(0) / spread - 1).abs().max() < 0.1)
    torch.testing.assert_close(kept.norm(dim=1), torch.ones(4000))


def test_discriminator_is_ternary(dtn):
    assert dtn.D(torch.zeros(5, 3, 64, 64)).shape == (5, 3)
    assert dtn.g(torch.randn(4, F_DIM[dtn.params.f_layer]), 2).shape == (4, 3, 64, 64)   # 2 of S, 2 of T


@pytest.mark.parametrize("weight", ["alpha", "beta", "gamma", "tid_parts", "const_parts"])
def test_each_weighted_term_reaches_g(weight, pretrained_root):
    """L_CONST, L_TID, L_TV and the parts generator's L_TID in part space and L_CONST by assignment each
    change g's step (a term left out of loss_g would not)."""
    assert term_reaches("dtn", weight, "g", batch_size=4, root=pretrained_root)


def test_total_variation():
    flat = torch.zeros(1, 3, 8, 8)
    assert total_variation(flat) == pytest.approx(0, abs=1e-2)
    ramp = torch.arange(8.0).repeat(1, 3, 8, 1)          # +1 per column, constant down the rows
    assert total_variation(ramp) == pytest.approx(1.0, rel=1e-4)
    # the paper's Eq. 7 sums over pixels (and here channels): 3 x 7 x 7 differences of 1 per image
    assert total_variation(ramp.repeat(2, 1, 1, 1), per_image_sum=True) == pytest.approx(147, rel=1e-4)


def test_shift_and_blur_is_a_differentiable_nuisance():
    from facegan.methods.nets import shift_and_blur

    images = torch.rand(4, 3, 16, 16, requires_grad=True)
    assert torch.equal(shift_and_blur(images, 0, 0.0), images)
    jittered = shift_and_blur(images, 2, 1.0, torch.Generator().manual_seed(1))
    assert jittered.shape == images.shape and not torch.allclose(jittered, images)
    jittered.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float().expand(1, 3, 16, 16)
    generator = torch.Generator().manual_seed(0)                   # sigma drawn in [0, 1] each call
    spread = np.mean([float(shift_and_blur(checker, 0, 1.0, generator).std()) for _ in range(20)])
    assert spread < 0.8 * float(checker.std())


def test_f_constancy_and_retrieval_figures():
    rng = np.random.default_rng(0)
    f_s = rng.normal(size=(60, 16))
    identities = np.array([f"p{i}" for i in range(60)])
    faithful = f_s + 0.05 * rng.normal(size=f_s.shape)
    scores = f_constancy(f_s, faithful, 0)
    assert scores["f_constancy"] > 0.99 and abs(scores["f_constancy_random_pairs"]) < 0.2
    assert retrieval(f_s, faithful, identities, 20, 5, 0)["retrieval_rank1"] == 1.0
    shuffled = retrieval(f_s, rng.normal(size=f_s.shape), identities, 20, 5, 0)
    assert shuffled["retrieval_rank1"] < 0.3 and shuffled["retrieval_chance"] == 0.05
    with pytest.raises(ValueError, match="needs 70 different people"):
        retrieval(f_s, faithful, identities, 70, 1, 0)


@pytest.fixture(scope="module")
def dtn_project(tmp_path_factory, pretrained_root):
    return trained_project(tmp_path_factory.mktemp("project"), "dtn", pretrained_root)


def test_emojify_a_photo(dtn_project, london_photo, no_face_photo, monkeypatch, capsys):
    monkeypatch.chdir(dtn_project)
    out = dtn_project / "out" / "avatar.png"
    assert cli.main(["emojify", str(london_photo), "--out", str(out), "--crop"]) == 0
    assert out.exists() and (out.parent / "avatar_compare.png").exists()
    from PIL import Image
    assert Image.open(out).size == (64, 64)
    assert "identity kept: cos(FaceNet(photo), FaceNet(avatar))" in capsys.readouterr().out
    assert cli.main(["emojify", str(london_photo), "--out", str(out)]) == 0
    assert Image.open(out).size == Image.open(london_photo).size            # the avatar's face in the photo
    assert cli.main(["emojify", str(no_face_photo), "--out", str(dtn_project / "x.png")]) == 1
    assert f"{no_face_photo}: no face found" in capsys.readouterr().err


# ---------------------------------------------------------------- mechanism: does g draw avatars that keep f?
def dtn_with(root, data=None, **own):
    """A tiny DTN with f attached, g's principal axes and the domains' mean f fitted to `data` (the
    avatars_and_faces fixture's; the tiny synthetic training set's by default)."""
    params = tiny_params()
    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, dtn=dataclasses.replace(params.train.dtn, **own)))
    torch.manual_seed(0)
    method = build_method("dtn", params)
    method.setup(root, "cpu")
    if data is None:
        method.fit_to_training_data(make_batches(tiny_data(method="dtn"), 4, 0, flip=False))
    else:
        method.g.input.fit_basis(data["f_t"])
        method.fit_domain_means(data["f_const"], data["f_t_const"])
        if method.params.g_kind == "parts":
            method.g.renderer.load_layers(data["layers"])
            method.fit_assignment(data["f_t_const"], data["parts_t"])
    method.optimizers = method.configure_optimizers()
    return method


@pytest.fixture(scope="module")
def avatars_and_faces(tmp_path_factory, mirror, pretrained_root):
    """8 rendered avatars t (their parts and every part's layers) and 8 real CelebA photos s (centre crops
    at 64 px), with f(t) and f(s) (g's input, at the default f_layer) and FaceNet's embedding of s (identity)."""
    from PIL import Image

    from facegan.config import RenderAvatarsParams
    from facegan.data.avatars import CHOSEN_PARTS, load_layers, part_indices, run_render_avatars
    from facegan.data.datasets import read_image_set, to_tensor

    folder = tmp_path_factory.mktemp("avatars")
    run_render_avatars(RenderAvatarsParams(n=8, size=64, seed=1, workers=2), folder)
    images, manifest = read_image_set(folder)
    indices = part_indices(manifest)
    t = to_tensor(np.asarray(images))
    photos = []
    for k in range(1, 9):
        image = Image.open(mirror / "celeba" / "img_align_celeba" / f"{k:06d}.jpg").convert("RGB")
        photos.append(np.asarray(image.crop((0, 20, 178, 198)).resize((64, 64), Image.Resampling.LANCZOS)))
    s = to_tensor(np.stack(photos))
    method = dtn_with(pretrained_root)
    layer = method.params.f_layer
    return {"t": t, "s": s, "f_t": method.embed(t, layer), "f_s": method.embed(s, layer),
            "f_const": method.embed(s, method.params.const_layer), "e_s": method.embed(s),
            "f_t_const": method.embed(t, method.params.const_layer), "layers": load_layers(folder),
            "parts": manifest, "parts_t": torch.from_numpy(np.stack([indices[p] for p in CHOSEN_PARTS], 1))}


def test_the_layers_composite_to_the_avatars_python_avatars_draws(avatars_and_faces):
    """R with each avatar's own parts chosen redraws it: the layers, their order, the colour grids and the
    slots are python-avatars' (mean absolute error a few thousandths of the pixel range)."""
    from facegan.data.avatars import part_indices, part_options
    from facegan.methods.dtn import LayeredAvatarRenderer

    data, options = avatars_and_faces, part_options()
    renderer = LayeredAvatarRenderer(64)
    with pytest.raises(RuntimeError, match="load_layers"):
        renderer({part: torch.ones(1, len(o)) for part, o in options.items()})
    renderer.load_layers(data["layers"])
    choice = {part: torch.nn.functional.one_hot(torch.from_numpy(index), len(options[part])).float()
              for part, index in part_indices(data["parts"]).items()}
    error = (renderer(choice) - data["t"]).abs().mean((1, 2, 3)) / 2   # on [0, 1]
    assert error.mean() < 0.01 and error.max() < 0.025, error
    with pytest.raises(ValueError, match="render_avatars"):
        renderer.load_layers(data["layers"] | {"mouth": data["layers"]["mouth"][:3]})


@pytest.mark.parametrize("g_kind, bound, lr", [("parts", 0.01, 5e-3), ("decoder", 0.04, 1e-3)])
def test_g_learns_to_draw_the_avatars_from_their_f(g_kind, bound, lr, avatars_and_faces, pretrained_root):
    """The warm-up alone (L_TID + L_TV, no D, no f pass): g maps f(t) -> t for a handful of avatars; the
    parts generator by choosing each avatar's own top, hair colour and skin."""
    data = avatars_and_faces
    method = dtn_with(pretrained_root, data, g_kind=g_kind, g_width=16, tid_warmup=1000, f_components=6, lr=lr)
    batch = {"f": data["f_s"], "f_const": data["f_const"], "target_f": data["f_t"],
             "target_f_const": data["f_t_const"], "target_image": data["t"], "target_parts": data["parts_t"]}
    losses = [method.train_step(batch, step,
                                step_generator(0, step, 0))["loss_tid"] for step in range(150)]
    if g_kind == "parts":
        method.g.eval()
        with torch.no_grad():
            chosen = method.g.choices(data["f_t"], 0)
        wrong = {part: (chosen[part].argmax(1) != data["parts_t"][:, k]).tolist()
                 for k, part in enumerate(method.g.counts)}
    assert losses[0] > 0.1 and np.mean(losses[-5:]) < bound, (losses[0], losses[-5:])
    if g_kind == "parts":   # every part each avatar shows (a hat hides the hair colour, and so on)
        for part in ("top", "skin_color", "clothing", "mouth", "eyes", "eyebrows", "accessory"):
            assert not any(wrong[part]), (part, wrong)


def test_a_short_game_draws_smooth_avatars_that_keep_f(avatars_and_faces, pretrained_root):
    """After a warm-up and a short game on 8 photos and 8 avatars, G(s) is within 2 x the avatars' TV
    (colour noise, the failure this guards against, has ~10 x theirs) and f(G(s)) is nearer f(s) than
    f of the other photos' G(s') (by 0.09 here; drawing one avatar for all faces gives 0)."""
    data = avatars_and_faces
    method = dtn_with(pretrained_root, data, h_width=64, d_width=8, tid_warmup=100, alpha_ramp=10,
                      f_components=6)   # default losses
    batch = {"f": data["f_s"], "f_const": data["f_const"], "target_f": data["f_t"],
             "target_f_const": data["f_t_const"], "target_image": data["t"], "target_parts": data["parts_t"]}
    for step in range(160):
        method.train_step(batch, step, step_generator(0, step, 0))
    with torch.no_grad():
        drawn = method.g.eval()(data["f_s"], len(data["f_s"]))
    assert total_variation(drawn, per_image_sum=True) <= 2 * total_variation(data["t"], per_image_sum=True)
    scores = f_constancy(data["e_s"].numpy(), method.embed(drawn).numpy(), 0)
    assert scores["f_constancy"] > scores["f_constancy_random_pairs"] + 0.05, scores


def test_domain_means_are_fitted_once_over_the_whole_training_split(pretrained_root):
    """const_centred: each domain's mean f at const_layer is that of ALL training faces / targets (not of the
    batches seen so far), and L_CONST refuses to run before it is fitted."""
    data = tiny_data(method="dtn")
    batches = make_batches(data, 4, 0, flip=False)
    method = dtn_with(pretrained_root)
    kept_s = method.kept_features(batches.main.all_values())
    kept_t = method.kept_features({"target_" + k: v for k, v in batches.aux["target"].all_values().items()}, "target_")
    torch.testing.assert_close(method.const_means, torch.stack([kept_s.mean(0), kept_t.mean(0)]))
    unfitted = build_method("dtn", tiny_params())   # the tiny params: no warm-up, so step 0 is a game step
    unfitted.setup(pretrained_root, "cpu")
    unfitted.g.input.fit_basis(batches.aux["target"].all_values()["f"])
    unfitted.g.renderer.load_layers(batches.aux["target"].fixed)
    unfitted.optimizers = unfitted.configure_optimizers()
    assert unfitted.params.const_centred and unfitted.params.tid_warmup == 0
    with pytest.raises(RuntimeError, match="fit_to_training_data"):
        unfitted.train_step(batches.batch(0, "cpu"), 0, step_generator(0, 0, 0))


def test_standardised_f_of_both_domains_reaches_g_in_one_distribution():
    """f_standardise: S's and T's features, far apart (means 3 and -2, spreads 2 and 0.5), each leave their
    domain's standardiser at zero mean and unit spread, in training (batch statistics) and after (running)."""
    from facegan.methods.dtn import EmbeddingGenerator, FeatureInput

    g = EmbeddingGenerator(FeatureInput(16, standardise=True), 4, 64)
    seen = []
    g.net = torch.nn.Identity()                      # look at what the network would read
    torch.manual_seed(0)
    for _ in range(60):
        f_s, f_t = 3 + 2 * torch.randn(32, 16), -2 + 0.5 * torch.randn(32, 16)
        seen.append(g(torch.cat([f_s, f_t]), 32).flatten(1))
    g.eval()
    for read in (seen[-1], g(torch.cat([3 + 2 * torch.randn(500, 16), -2 + 0.5 * torch.randn(500, 16)]), 500).flatten(1)):
        half = len(read) // 2
        for part in (read[:half], read[half:]):
            assert part.mean().abs() < 0.15 and (part.std() - 1).abs() < 0.15


def test_g_first_layer_is_the_transposed_convolution_of_a_1x1_input():
    """ProjectTo4x4 (a linear map) computes what ConvTranspose2d(cin, cout, 4, 1, 0) computes on (N, cin, 1, 1)."""
    from facegan.methods.dtn import ProjectTo4x4

    torch.manual_seed(0)
    transposed, projected = torch.nn.ConvTranspose2d(12, 5, 4, 1, 0, bias=False), ProjectTo4x4(12, 5)
    with torch.no_grad():
        projected.linear.weight.copy_(transposed.weight.reshape(12, 5 * 16).T)
    x = torch.randn(3, 12)
    torch.testing.assert_close(projected(x), transposed(x[:, :, None, None]))


def test_g_reads_only_the_directions_the_targets_span():
    """f_components: fit_basis finds T's principal axes (here 3 planted in 20 dims), and whatever f(s) holds
    outside them (where g's first layer never saw a target) does not reach g's image."""
    from facegan.methods.dtn import EmbeddingGenerator, FeatureInput

    generator = torch.Generator().manual_seed(0)
    axes = torch.linalg.qr(torch.randn(20, 20, generator=generator))[0]
    f_t = torch.randn(200, 3, generator=generator) * torch.tensor([5.0, 3.0, 2.0]) @ axes[:, :3].T
    g = EmbeddingGenerator(FeatureInput(20, standardise=False, components=3), 4, 64, "resize")
    with pytest.raises(RuntimeError, match="fit_basis"):
        g(f_t[:4], 0)
    g.input.fit_basis(f_t)
    found = g.input.basis @ g.input.basis.T                              # projector onto the fitted axes
    torch.testing.assert_close(found, axes[:, :3] @ axes[:, :3].T, atol=1e-4, rtol=0)
    for _ in range(30):                                       # running statistics of both domains
        g(torch.cat([torch.randn(8, 20, generator=generator), f_t[:8]]), 8)
    g.eval()
    f_s = torch.randn(6, 20, generator=generator)
    off_axes = torch.randn(6, 17, generator=generator) @ axes[:, 3:].T
    torch.testing.assert_close(g(f_s + 10 * off_axes, 6), g(f_s, 6), atol=1e-4, rtol=0)
