"""Fader Networks: attribute channels at every decoder layer, the lambda_E schedule,
the latent discriminator's loss, and `facegan edit`."""
import shutil

import pytest
import torch

from facegan import cli
from facegan.methods import build_method
from facegan.methods.fader import attribute_channels, attribute_nll, lambda_e_at
from facegan.metrics.attributes import AttributeClassifier, save as save_judge
from facegan.train.data import InMemoryBatches
from facegan.train.loop import step_generator
from conftest import tiny_data, tiny_params, trained_project


def tiny_fader():
    method = build_method("fader", tiny_params())
    return method.eval(), len(method.attributes)


def test_decoder_takes_the_attributes_at_every_layer():
    method, n_attr = tiny_fader()
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


def test_edit_a_photo_with_a_slider(fader_project, london_photo, monkeypatch, capsys):
    monkeypatch.chdir(fader_project)
    out = fader_project / "out" / "edited.png"
    assert cli.main(["edit", str(london_photo), "--attr", "Male=0.2", "Young=1", "--out", str(out),
                     "--strip", "Male"]) == 0
    assert out.exists() and (out.parent / "edited_compare.png").exists()
    assert (out.parent / "edited_strip_Male.png").exists()
    printed = capsys.readouterr().out
    assert "set Male=0.2, Young=1" in printed and "judged Blond_Hair=" in printed
    assert cli.main(["edit", str(london_photo), "--attr", "Male=3", "--out", str(out)]) == 2
    assert cli.main(["edit", str(london_photo), "--attr", "Smiling=1", "--out", str(out)]) == 2
    assert "expected NAME=VALUE with NAME one of Blond_Hair, Attractive, Male, Young" in capsys.readouterr().err


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
