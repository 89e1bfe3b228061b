"""Fader Networks: attribute channels at every decoder layer, the lambda_E schedule,
the latent discriminator's loss, and `facegan edit`."""
import dataclasses
import shutil

import numpy as np
import pytest
import torch

from facegan import cli
from facegan.methods import build_method
from facegan.methods.fader import FaderNetwork, adversarial_nll, attribute_channels, attribute_nll, lambda_e_at
from facegan.methods.nets import MatmulConv2d, MatmulConvTranspose2d
from facegan.metrics.attributes import AttributeClassifier, save as save_judge
from facegan.train.data import InMemoryBatches
from facegan.train.loop import step_generator
from conftest import tiny_data, tiny_params, trained_project


def tiny_fader(**fader):
    params = tiny_params()
    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, fader=dataclasses.replace(params.train.fader, **fader)))
    method = build_method("fader", params)
    return method.eval(), len(method.attributes)


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_decoder_takes_the_attributes_at_every_layer(upsample):
    method, n_attr = tiny_fader(upsample=upsample)
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in method.Dec.modules()) == (upsample == "transpose")
    latent = torch.randn(3, 16, 2, 2)
    y = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0], [0.2, 1, 0.5, 1]])
    inputs = []
    hooks = [block.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
             for block in method.Dec.blocks]
    out = method.decode(latent, y)
    for hook in hooks:
        hook.remove()
    assert len(inputs) == len(method.Dec.blocks) >= 5
    pairs = attribute_channels(y)     # (1 - y, y) per attribute
    assert torch.equal(pairs[0, :2], torch.tensor([0.0, 1.0])) and torch.allclose(pairs[2, :2], torch.tensor([.8, .2]))
    for x in inputs:   # the last 2A channels of every layer's input are the pairs, constant over the map
        assert torch.allclose(x[:, -2 * n_attr:], pairs[:, :, None, None].expand(-1, -1, *x.shape[2:]))
    assert out.shape == (3, 3, 64, 64) and out.abs().max() <= 1
    other = y.clone()
    other[:, 2] = 1 - other[:, 2]
    assert not torch.allclose(method.decode(latent, other), out)   # the output follows y


def test_lambda_e_rises_linearly_after_the_warm_up():
    assert [lambda_e_at(s, 1e-3, 10, 20) for s in (0, 9, 10, 20, 30, 500)] == pytest.approx(
        [0, 0, 0, 5e-4, 1e-3, 1e-3])
    assert lambda_e_at(0, 0.1, 0, 0) == 0.1
    method, _ = tiny_fader()
    method.optimizers = method.configure_optimizers()
    data = tiny_data(method="fader")
    batch = InMemoryBatches(data.images, data.labels, 8, 0).batch(0, "cpu")
    p = method.params   # tiny: warm-up 1 step, then 2 steps to lambda_e
    reported = [method.train_step(batch, step, step_generator(0, step, 0))["lambda_e"] for step in range(4)]
    assert reported == pytest.approx([0, 0, p.lambda_e / 2, p.lambda_e])


def test_latent_discriminator_loss_is_minus_log_probability_of_each_pair():
    logits = torch.randn(5, 3, 2)
    y = torch.tensor([[0, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1], [1, 1, 1]]).float()
    log_p = torch.log_softmax(logits, 2)
    expected = -log_p.gather(2, y.long()[..., None]).sum((1, 2)).mean()
    assert attribute_nll(logits, y) == pytest.approx(expected.item(), rel=1e-6)
    # the encoder's adversarial target is the flipped attribute: -log P(1 - y | E(x))
    assert attribute_nll(logits, 1 - y) == pytest.approx(-log_p.gather(2, (1 - y).long()[..., None])
                                                         .sum((1, 2)).mean().item(), rel=1e-6)


def test_adversarial_term_flips_or_asks_for_one_half():
    """'flip' (the paper) is -log P(1 - y | E(x)); 'uniform' is the cross-entropy with (1/2, 1/2), least
    (log 2 per attribute) when the discriminator says 1/2 whatever y is."""
    logits = torch.randn(5, 3, 2)
    y = torch.tensor([[0, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1], [1, 1, 1]]).float()
    assert adversarial_nll(logits, y, "flip") == pytest.approx(attribute_nll(logits, 1 - y).item(), rel=1e-6)
    uniform = adversarial_nll(logits, y, "uniform")
    assert uniform == pytest.approx(((attribute_nll(logits, y) + attribute_nll(logits, 1 - y)) / 2).item(), rel=1e-6)
    assert adversarial_nll(torch.zeros(5, 3, 2), y, "uniform") == pytest.approx(3 * np.log(2), rel=1e-6)
    assert uniform > 3 * np.log(2)


def test_latent_discriminator_takes_dis_steps_per_autoencoder_step():
    """dis_steps discriminator steps (this batch, then replayed latents of recent batches), one E/Dec step."""
    params = tiny_params()
    params = dataclasses.replace(params, train=dataclasses.replace(
        params.train, fader=dataclasses.replace(params.train.fader, dis_steps=3, replay=2)))
    method = build_method("fader", params)
    method.optimizers = method.configure_optimizers()
    data = tiny_data(method="fader")
    batches = InMemoryBatches(data.images, data.labels, 8, 0)
    for step in range(3):
        method.train_step(batches.batch(step, "cpu"), step, step_generator(0, step, 0))
    assert int(next(iter(method.optimizers["LD"].state.values()))["step"]) == 9
    assert int(next(iter(method.optimizers["AE"].state.values()))["step"]) == 3
    assert len(method.replay) == 2 and not method.replay[0][0].requires_grad


def test_swap_and_slider_edit_only_the_asked_attribute():
    method, n_attr = tiny_fader()
    y = torch.tensor([[1.0, 0, 1, 0]])
    assert torch.equal(method.swapped(y, 2), torch.tensor([[1.0, 0, 0, 0]]))
    photo = torch.rand(3, 64, 64) * 2 - 1
    strip = method.sliders(photo, y, 3, [0, 0.5, 1])
    assert strip.shape == (3, 3, 64, 64)
    assert torch.allclose(strip[2], method.decode(method.encode(photo[None]), torch.tensor([[1.0, 0, 1, 1]]))[0], atol=1e-6)


@pytest.fixture(scope="module")
def fader_project(tmp_path_factory):
    """A project folder with a tiny trained fader and a tiny attribute judge, for the CLI."""
    root = trained_project(tmp_path_factory.mktemp("project"), "fader")
    torch.manual_seed(0)
    save_judge(AttributeClassifier(["Male", "Young", "Blond_Hair", "Attractive", "Smiling"], 4),
               root / "models" / "attr_classifier")
    return root


def test_edit_a_photo_with_a_slider(fader_project, london_photo, two_face_photo, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(fader_project)
    out = fader_project / "out" / "edited.png"
    assert cli.main(["edit", str(london_photo), "--attr", "Male=0.2", "Young=1", "--out", str(out),
                     "--strip", "Male"]) == 0
    assert out.exists() and (out.parent / "edited_compare.png").exists()
    assert (out.parent / "edited_strip_Male.png").exists()
    printed = capsys.readouterr().out
    assert "set Male=0.2, Young=1" in printed and "judged Blond_Hair=" in printed
    photo = np.asarray(Image.open(two_face_photo)).astype(int)
    both = fader_project / "out" / "both.png"
    assert cli.main(["edit", str(two_face_photo), "--all-faces", "--attr", "Male=2", "--out", str(both)]) == 0
    result = np.asarray(Image.open(both)).astype(int)
    assert result.shape == photo.shape and "face 1: " in capsys.readouterr().out
    changed = np.abs(result - photo).sum(2) > 12
    assert changed[100:350, 80:380].mean() > 0.2 and changed[150:350, 520:740].mean() > 0.2   # both faces
    assert not changed[:, 385:445].any() and not changed[430:].any()        # the canvas between and below
    assert cli.main(["edit", str(london_photo), "--attr", "Male=3", "--out", str(out)]) == 2
    assert cli.main(["edit", str(london_photo), "--attr", "Smiling=1", "--out", str(out)]) == 2
    assert "expected NAME=VALUE with NAME one of Blond_Hair, Attractive, Male, Young" in capsys.readouterr().err


def test_residual_edit_adds_only_the_change_to_the_photo(fader_project, london_photo, monkeypatch, capsys):
    """--residual: photo + (Dec(E(x), y') - Dec(E(x), y)), so the crop written is the photo's crop moved by
    exactly the method's change; an edit that changes nothing gives the photo back; other methods refuse it."""
    from PIL import Image

    from facegan.methods.base import RequestError, Transformed, with_residual

    x, out, rec = (torch.rand(2, 3, 8, 8) * 2 - 1 for _ in range(3))
    assert torch.allclose(with_residual(x, Transformed(rec, {"reconstruction": rec})).output, x)
    assert torch.allclose(with_residual(x, Transformed(out, {"reconstruction": rec})).output,
                          (x + out - rec).clamp(-1, 1))
    with pytest.raises(RequestError, match="fader, beholder"):
        with_residual(x, Transformed(out))
    monkeypatch.chdir(fader_project)
    out_path = fader_project / "out" / "residual.png"
    assert cli.main(["edit", str(london_photo), "--attr", "Male=2", "--residual", "--crop", "--out",
                     str(out_path)]) == 0
    assert "photo | reconstruction | method output | edited" in capsys.readouterr().out
    strip = np.asarray(Image.open(out_path.parent / "residual_compare.png")).astype(int)
    photo, reconstruction, method_output, edited = np.split(strip, 4, axis=1)
    assert np.abs(edited - np.clip(photo + method_output - reconstruction, 0, 255)).max() <= 3
    assert np.abs(method_output - reconstruction).mean() > 2       # the edit did change something
    assert cli.main(["edit", str(london_photo), "--attr", "Male=2", "--residual", "--out", str(out_path)]) == 0


def test_edit_explains_a_photo_without_a_face(fader_project, no_face_photo, london_photo, monkeypatch, capsys):
    monkeypatch.chdir(fader_project)
    assert cli.main(["edit", str(no_face_photo), "--attr", "Male=1", "--out", str(fader_project / "x.png")]) == 1
    assert f"{no_face_photo}: no face found" in capsys.readouterr().err
    folder = fader_project / "batch"
    folder.mkdir()
    shutil.copy(no_face_photo, folder / "wall.png")
    shutil.copy(london_photo, folder / "face.jpg")
    assert cli.main(["edit", str(folder), "--attr", "Young=0", "--out", str(fader_project / "many")]) == 1
    assert (fader_project / "many" / "face_edited.png").exists()
    assert not (fader_project / "many" / "wall_edited.png").exists()


def planted_corner(n: int, seed: int):
    """32 px images, a random colour with a random vertical ramp and noise; y = 1 plants a white 8 x 8 square
    in the top-left corner (where the background is otherwise any colour)."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(-0.3, 0.3, 32)[None, None, :, None] * torch.rand(n, 1, 1, 1, generator=g)
    x = (torch.rand(n, 3, 1, 1, generator=g) * 1.2 - 0.9 + ramp + 0.05 * torch.randn(n, 3, 32, 32, generator=g))
    x = x.clamp(-1, 1)
    y = torch.randint(0, 2, (n, 1), generator=g).float()
    x[:, :, :8, :8] = torch.where(y[:, :, None, None] > 0, torch.ones(()), x[:, :, :8, :8])
    return x, y


def test_mechanism_a_planted_corner_is_swapped_and_leaves_the_latent():
    """Issue 22's mechanism: after a short run on a planted attribute, Dec(E(x), 1 - y) changes the corner on
    >= 90 % of held-out images and fresh probes on E(x) read y at <= 0.65 (linear) and <= 0.7 (MLP) balanced
    accuracy, with the MMD term at 10. Without it (lambda_mmd 0, the paper's objective) the swap takes but both
    probes read y at 0.96-1.0: the latent discriminator is fooled, E(x) is not invariant. (At the default 0.1
    the term is too weak for this; on CelebA 1 and 10 cost 7 dB of PSNR in 3 minutes: the module docstring.)"""
    from facegan.config import Params, build
    from facegan.methods.fader import fresh_probes

    torch.manual_seed(0)
    params = build(Params, {"train": {"common": {"batch_size": 32, "bf16": False},
                                      "fader": {"attributes": ["Male"], "width": 8, "max_width": 64,
                                                "lambda_steps": 150, "lr": 1e-3, "lambda_mmd": 10}}})
    method = build_method("fader", params, 32)
    method.optimizers = method.configure_optimizers()
    x, y = planted_corner(1024, 0)
    for step in range(500):
        chosen = torch.randint(len(x), (32,), generator=torch.Generator().manual_seed(step))
        method.train_step({"image": x[chosen], "attributes": y[chosen]}, step, step_generator(0, step, 0))
    held_out, y_held_out = planted_corner(512, 1)
    probe_x, probe_y = planted_corner(1024, 2)
    swapped = method.decode(method.encode(held_out), 1 - y_held_out)
    corner = swapped[:, :, :8, :8].mean((1, 2, 3))
    changed = torch.where(y_held_out[:, 0] > 0, corner < 0.6, corner > 0.8).float().mean()
    with torch.no_grad():
        read = fresh_probes(method.encode(probe_x).flatten(1).numpy(), probe_y.numpy(),
                            method.encode(held_out).flatten(1).numpy(), y_held_out.numpy(), ["corner"])
    assert changed >= 0.9 and read["probe_balanced_acc"] <= 0.65 and read["probe_mlp_balanced_acc"] <= 0.7, \
        (float(changed), read)


def test_fresh_probes_read_a_planted_attribute_and_not_noise():
    """The probes on E(x): an attribute written into one latent dimension reads ~1 (both); one that only the
    product of two dimensions' signs holds (no line separates it) ~0.5 linearly but well above for the MLP;
    one absent ~0.5; an attribute with one class in a split is reported as not probed, with the reason."""
    from facegan.methods.fader import fresh_probes

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (1600, 4)).astype(np.float32)
    labels[:, 3] = 1                                       # every face has it
    latents = rng.normal(size=(1600, 20)).astype(np.float32)
    latents[:, 5] += 3 * labels[:, 0]                       # attribute 0 planted in a line
    labels[:, 2] = (latents[:, 7] * latents[:, 8] > 0)      # attribute 2: an XOR of two dimensions' signs
    result = fresh_probes(latents[:1200], labels[:1200], latents[1200:], labels[1200:], ["a", "b", "xor", "c"])
    assert result["probe_balanced_acc_a"] > 0.9 and result["probe_mlp_balanced_acc_a"] > 0.9, result
    assert abs(result["probe_balanced_acc_b"] - 0.5) < 0.08 and abs(result["probe_mlp_balanced_acc_b"] - 0.5) < 0.08
    assert abs(result["probe_balanced_acc_xor"] - 0.5) < 0.1 and result["probe_mlp_balanced_acc_xor"] > 0.75, result
    assert result["probe_balanced_acc_c"] is None and "one class only" in result["probe_note_c"]
    assert result["probe_balanced_acc"] == pytest.approx(np.mean([result[f"probe_balanced_acc_{n}"]
                                                                  for n in ("a", "b", "xor")]))


def test_invariance_terms_are_near_zero_for_one_distribution_and_grow_with_the_gap():
    """latent_mmd and linear_separation: latents of the two classes drawn alike score low; shifted apart in
    4 of 128 dimensions (what a probe would read) they score higher, and more for a larger shift. (The MMD
    rises little for a 1-sd shift in so few dimensions: why, at weights that keep reconstruction, it did
    not clear CelebA's latents of Male.)"""
    from collections import deque

    from facegan.methods.fader import latent_mmd, linear_separation

    y = (torch.arange(64) % 2).float()[:, None]

    def latents(shift: float, seed: int) -> torch.Tensor:
        z = torch.randn(64, 32, 2, 2, generator=torch.Generator().manual_seed(seed))
        z[:, 3] += shift * y[:, :, None]
        return z

    def scores(shift: float) -> tuple[float, float]:
        replay = deque([(latents(shift, seed), y) for seed in range(1, 9)])
        z = latents(shift, 0)
        return float(latent_mmd(z, y)), float(linear_separation(z, y, replay))

    alike, apart, far = scores(0.0), scores(1.0), scores(3.0)
    assert alike[1] < 0.2, alike   # the MMD's V-statistic keeps a floor (0.12 here) from its diagonal
    assert apart[0] > alike[0] + 0.01 and far[0] > 2 * alike[0], (alike, apart, far)
    assert apart[1] > 10 * alike[1] and far[1] > 5 * apart[1], (alike, apart, far)


@pytest.mark.parametrize("layer, matmul, side", [(torch.nn.Conv2d, MatmulConv2d, 4), (torch.nn.Conv2d, MatmulConv2d, 5),
                                                 (torch.nn.ConvTranspose2d, MatmulConvTranspose2d, 2),
                                                 (torch.nn.ConvTranspose2d, MatmulConvTranspose2d, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matmul_convolutions_are_the_same_function_and_weights(layer, matmul, side, channels_last):
    """The few-pixel layers Fader runs as matmuls compute what nn.Conv2d / nn.ConvTranspose2d compute, input and
    weight gradients included, from the same state dict (odd sides too, and channels_last input)."""
    torch.manual_seed(0)
    reference, fast = layer(6, 5, 4, 2, 1), matmul(6, 5, 4, 2, 1)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(3, 6, side, side)
    x = (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_()
    outputs, grads = [], []
    for net in (reference, fast):
        y = net(x)
        outputs.append(y)
        grads.append(torch.autograd.grad(y.pow(2).sum(), [x, net.weight, net.bias]))
    assert outputs[0].shape == outputs[1].shape
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_fader_runs_its_few_pixel_layers_as_matmuls():
    """Only the layers with a map of side <= 2 (E's last, Dec's first, the latent discriminator's): the rest stay
    oneDNN convolutions, which are faster on larger maps."""
    params = tiny_params()
    method = FaderNetwork(dataclasses.replace(params.train.fader, width=8, max_width=32), params.train.common, 64)
    kinds = [type(m).__name__ for m in method.E.modules() if isinstance(m, torch.nn.Conv2d)]
    assert kinds == ["Conv2d"] * 4 + ["MatmulConv2d"]
    kinds = [type(m).__name__ for m in method.Dec.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert kinds == ["MatmulConvTranspose2d"] + ["ConvTranspose2d"] * 4
    assert any(isinstance(m, MatmulConv2d) for m in method.LD.modules())
