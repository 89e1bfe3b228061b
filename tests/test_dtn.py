"""Domain Transfer Network: f fixed, the ternary D, every loss term, the evaluation figures, `facegan emojify`."""
import dataclasses

import numpy as np
import pytest
import torch

from facegan.devices import bf16_autocast
from facegan import cli
from facegan.methods import build_method
from facegan.methods.dtn import f_constancy, retrieval, total_variation
from facegan.train.data import make_batches
from facegan.train.loop import step_generator
from conftest import term_reaches, tiny_data, tiny_params, trained_project


@pytest.fixture
def dtn(pretrained_root):
    method = build_method("dtn", tiny_params())
    method.setup(pretrained_root, "cpu")
    method.optimizers = method.configure_optimizers()
    return method


def test_f_stays_frozen_and_every_loss_term_is_there(dtn):
    f_before = {k: v.clone() for k, v in dtn.f.state_dict().items()}
    g_before = {k: v.clone() for k, v in dtn.g.state_dict().items()}
    batch = make_batches(tiny_data(method="dtn"), 4, 0, flip=False).batch(0, "cpu")
    with bf16_autocast("cpu"):
        losses = dtn.train_step(batch, 0, step_generator(0, 0, 0))
    assert set(losses) == {"loss_d", "loss_gang", "loss_const", "loss_tid", "loss_tv", "loss_g"}
    assert all(np.isfinite(v) for v in losses.values()) and losses["loss_const"] > 0
    p = dtn.params
    assert (p.alpha, p.beta, p.gamma) == (100, 100, 0.05)   # the paper's alpha and gamma; beta: see dtn.py
    for key, value in dtn.f.state_dict().items():          # f: fixed, not trained ...
        assert torch.equal(value, f_before[key]), key
    assert not any(q.requires_grad for q in dtn.f.parameters())
    assert not any(k.startswith("f.") for k in dtn.state_dict())   # ... and not saved with the method
    assert any(not torch.equal(v, g_before[k]) for k, v in dtn.g.state_dict().items())


def test_warmup_trains_g_alone_then_the_game_starts_with_a_fresh_adam(pretrained_root):
    params = tiny_params()
    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, dtn=dataclasses.replace(params.train.dtn, tid_warmup=2)))
    method = build_method("dtn", params)
    method.setup(pretrained_root, "cpu")
    method.optimizers = method.configure_optimizers()
    batches = make_batches(tiny_data(method="dtn"), 4, 0, flip=False)
    d_before = {k: v.clone() for k, v in method.D.state_dict().items()}
    for step in range(2):   # warm-up: only g moves, no f pass, no D
        losses = method.train_step(batches.batch(step, "cpu"), step, step_generator(0, step, 0))
        assert np.isnan(losses["loss_const"]) and np.isnan(losses["loss_d"]) and np.isfinite(losses["loss_tid"])
    assert all(torch.equal(v, d_before[k]) for k, v in method.D.state_dict().items())
    assert int(next(iter(method.optimizers["g"].state.values()))["step"]) == 2
    losses = method.train_step(batches.batch(2, "cpu"), 2, step_generator(0, 2, 0))
    assert all(np.isfinite(v) for v in losses.values())
    assert int(next(iter(method.optimizers["g"].state.values()))["step"]) == 1   # Adam restarted
    assert any(not torch.equal(v, d_before[k]) for k, v in method.D.state_dict().items())


def test_discriminator_is_ternary(dtn):
    assert dtn.D(torch.zeros(5, 3, 64, 64)).shape == (5, 3)
    assert dtn.g(torch.nn.functional.normalize(torch.randn(2, 512), dim=1)).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("weight", ["alpha", "beta", "gamma"])
def test_each_weighted_term_reaches_g(weight, pretrained_root):
    """L_CONST, L_TID and L_TV each change g's step (a term left out of loss_g would not)."""
    assert term_reaches("dtn", weight, "g", batch_size=4, root=pretrained_root)


def test_total_variation():
    flat = torch.zeros(1, 3, 8, 8)
    assert total_variation(flat) == pytest.approx(0, abs=1e-2)
    ramp = torch.arange(8.0).repeat(1, 3, 8, 1)          # +1 per column, constant down the rows
    assert total_variation(ramp) == pytest.approx(1.0, rel=1e-4)


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
    assert cli.main(["emojify", str(london_photo), "--out", str(out)]) == 0
    assert out.exists() and (out.parent / "avatar_compare.png").exists()
    from PIL import Image
    assert Image.open(out).size == (64, 64)
    assert "f-constancy cos(f(photo), f(avatar))" in capsys.readouterr().out
    assert cli.main(["emojify", str(no_face_photo), "--out", str(dtn_project / "x.png")]) == 1
    assert f"{no_face_photo}: no face found" in capsys.readouterr().err
