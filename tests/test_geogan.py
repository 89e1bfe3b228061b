"""GeoGAN: the warp, the landmark loss, the mask, every loss term."""

import numpy as np
import pytest
import torch

from facegan.devices import bf16_autocast
from facegan import cli
from facegan.methods import build_method
from facegan.methods.base import unwrap
from facegan.methods.geogan import flow_at, landmark_loss, to_grid_coordinates, warp
from facegan.train.data import make_batches
from facegan.train.loop import step_generator
from conftest import term_reaches, tiny_data, tiny_params, trained_project


@pytest.fixture
def geogan():
    method = build_method("geogan", tiny_params())
    method.optimizers = method.configure_optimizers()
    return method, make_batches(tiny_data(method="geogan"), 8, 0, flip=False)


def test_zero_flow_warp_is_the_identity():
    images = torch.rand(2, 3, 16, 16)
    assert torch.allclose(warp(images, torch.zeros(2, 2, 16, 16)), images, atol=1e-6)


def test_a_constant_flow_shifts_by_whole_pixels():
    images = torch.rand(1, 3, 16, 16)
    flow = torch.zeros(1, 2, 16, 16)
    flow[:, 0] = 2 * 3 / 16                       # +3 pixels in x, in grid units
    shifted = warp(images, flow)
    assert torch.allclose(shifted[..., :, :13], images[..., :, 3:], atol=1e-6)


def test_landmark_loss_falls_as_a_known_shift_is_learned():
    """b is a moved 4 px right and 2 px down; a free flow field learns the shift from the landmarks alone."""
    size = 32
    rng = np.random.default_rng(0)
    points_a = torch.tensor(rng.uniform(6, 24, (1, 68, 2)), dtype=torch.float32)
    points_b = points_a + torch.tensor([4.0, 2.0])
    a, b = to_grid_coordinates(points_a, size), to_grid_coordinates(points_b, size)
    flow = torch.zeros(1, 2, size, size, requires_grad=True)
    optimizer = torch.optim.Adam([flow], lr=0.02)
    losses = []
    for _ in range(200):
        loss = landmark_loss(flow, a, b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.01 * losses[0]
    learned = flow_at(flow.detach(), a).mean(1)[0] * size / 2      # back to pixels
    assert torch.allclose(learned, torch.tensor([4.0, 2.0]), atol=0.3)


def test_mask_in_unit_range_and_every_loss_term_finite(geogan):
    method, batches = geogan
    batch = batches.batch(0, "cpu")
    parts = method.transfer(batch["image"], batch["ref_image"])
    assert parts["mask"].min() >= 0 and parts["mask"].max() <= 1 and parts["mask"].shape[1] == 1
    assert parts["output"].abs().max() <= 1 and parts["flow"].abs().max() <= method.params.max_flow
    method.G.train()
    with bf16_autocast("cpu"):
        losses = method.train_step(batch, 0, step_generator(0, 0, 0))
    assert set(losses) == set(method.losses) and "loss_points" in losses
    assert all(np.isfinite(v) for v in losses.values())


@pytest.fixture(scope="module")
def geogan_project(tmp_path_factory):
    return trained_project(tmp_path_factory.mktemp("geogan_project"), "geogan")


def test_transfer_a_smile_between_real_photos(geogan_project, mirror, london_photo, no_face_photo, monkeypatch,
                                              capsys):
    from PIL import Image

    monkeypatch.chdir(geogan_project)
    reference = mirror / "london" / "smiling_front" / "002_08.jpg"
    out = geogan_project / "out" / "smiled.png"
    assert cli.main(["transfer", str(london_photo), "--ref", str(reference), "--out", str(out), "--crop"]) == 0
    assert Image.open(out).size == (64, 64)
    assert Image.open(out.parent / "smiled_compare.png").size == (5 * 64, 64)
    assert "Smiling of 002_08.jpg moved onto 001_03.jpg" in capsys.readouterr().out
    assert cli.main(["transfer", str(london_photo), "--ref", str(reference), "--out", str(out)]) == 0
    assert Image.open(out).size == Image.open(london_photo).size            # pasted back into the photo
    assert Image.open(out.parent / "smiled_compare.png").size[1] == 512      # photo | result
    assert "smiled_compare.png: photo | result" in capsys.readouterr().out
    assert cli.main(["transfer", str(no_face_photo), "--ref", str(reference), "--out", str(out)]) == 1
    assert f"{no_face_photo}: no face found" in capsys.readouterr().err
    assert cli.main(["transfer", str(london_photo), "--ref", str(no_face_photo), "--out", str(out)]) == 2
    assert "no usable reference face" in capsys.readouterr().err


@pytest.mark.parametrize("weight, network", [("lambda_cls", "G"), ("lambda_rec", "G"), ("lambda_mask", "G"),
                                             ("lambda_lm", "flow"), ("lambda_points", "flow")])
def test_each_weighted_term_reaches_its_network(weight, network):
    """Domain classification, the cycle and mask sparsity each change the transfer module's first step; the
    landmark terms change the flow sub-network's (the flow's TV has no gradient at the identity warp)."""
    assert term_reaches("geogan", weight, network)


# the paper's recipe, one -S away from the default (methods/geogan.py)
AUTHORS_SETTINGS = {"flow": "dense", "lr": 2e-4, "lambda_cls": 0.2, "lambda_mask": 0.1, "lambda_flow_tv": 1.0,
                    "lambda_points": 0.0, "warmup": 0, "refine_start": 10, "d_cls_outputs": False,
                    "mask_free_area": 0.0, "ema_decay": 0.0}


def geogan_params(**own):
    """tiny_params with train.geogan keys replaced."""
    import dataclasses

    params = tiny_params()
    return dataclasses.replace(params, train=dataclasses.replace(
        params.train, geogan=dataclasses.replace(params.train.geogan, **own)))


def step_once(method, batches, step: int) -> dict:
    """One training step as the loop runs it: train_step, then after_step (the moving averages)."""
    losses = method.train_step(batches.batch(step, "cpu"), step, step_generator(0, 0, step))
    method.after_step(step)
    return losses


def smooth_faces(rng, n: int, size: int = 64) -> torch.Tensor:
    """Low-frequency random images in [-1, 1] (n, 3, size, size)."""
    coarse = torch.from_numpy(rng.uniform(-0.6, 0.6, (n, 3, 8, 8)).astype(np.float32))
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def test_attribute_head_learns_from_single_class_batches():
    """D scores a (without y) and b (with y) as separate one-class batches, as the step does; its attribute
    head must learn y (here a bright mouth patch) from them. (On real Smiling faces instance norm learns it
    faster than batch norm did: BCE 0.53 against 0.58 after 200 such steps.)"""
    from facegan.methods.geogan import Discriminator, bce

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    D = Discriminator(8, 64)
    optimizer = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    losses = []
    for _ in range(150):
        a, b = smooth_faces(rng, 8), smooth_faces(rng, 8)
        b[:, :, 40:48, 22:42] = 1.0
        loss = (bce(D(a)[1], False) + bce(D(b)[1], True)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[:10]) > 0.65 and np.mean(losses[-10:]) < 0.45


@pytest.mark.parametrize("outputs_as_negatives", [False, True])
def test_a_faint_pattern_fools_the_attribute_head_unless_it_learns_the_outputs(outputs_as_negatives):
    """G's cheapest way to win L_cls: a faint additive pattern (|delta| <= 0.06, a tenth of the real
    attribute's contrast) on a. Against a head trained on real faces only it scores as y; when the head
    also learns G's outputs as without y (d_cls_outputs), it does not."""
    from facegan.methods.geogan import Discriminator, attribute_head_loss, bce

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    D = Discriminator(8, 32)
    delta = torch.zeros(1, 3, 32, 32, requires_grad=True)
    optimizer_d = torch.optim.Adam(D.parameters(), 1e-3, betas=(0.5, 0.999))
    optimizer_g = torch.optim.Adam([delta], 5e-2)
    for step in range(120):
        a, b = smooth_faces(rng, 8, 32), smooth_faces(rng, 8, 32)
        b[:, :, 20:24, 10:22] = 1.0
        faked = (a + 0.06 * torch.tanh(delta)).clamp(-1, 1)
        loss_d = attribute_head_loss(D(a)[1], D(b)[1], D(faked.detach())[1] if outputs_as_negatives else None)
        optimizer_d.zero_grad()
        loss_d.backward()
        optimizer_d.step()
        if step >= 40:                                    # G's pattern starts against a head that knows y
            loss_g = bce(D((a + 0.06 * torch.tanh(delta)).clamp(-1, 1))[1], True)
            optimizer_g.zero_grad()
            loss_g.backward()
            optimizer_g.step()
    with torch.no_grad():
        a = smooth_faces(rng, 32, 32)
        fooled = (torch.sigmoid(D((a + 0.06 * torch.tanh(delta)).clamp(-1, 1))[1]) > 0.5).float().mean().item()
        b = smooth_faces(rng, 32, 32)
        b[:, :, 20:24, 10:22] = 1.0
        assert (torch.sigmoid(D(b)[1]) > 0.5).float().mean() > 0.8       # the head still knows y
    assert fooled < 0.2 if outputs_as_negatives else fooled > 0.8


def test_landmark_term_moves_the_dense_flow_and_the_mask_stays_open():
    """Mechanism of the paper's flow at the authors' settings (flow "dense"): every reference's landmarks sit
    3 px right and 2 px below the photo's; in the full step (adversarial, cycle and mask terms all on) the
    landmark term at the authors' weight must teach the flow that shift, and the mask, started at 0.5, must not
    close in 40 steps (the failure before issue 20: output = the source)."""
    from facegan.methods.base import TrainingData

    rng = np.random.default_rng(0)
    base = rng.uniform(16, 48, (1, 136))
    shift = np.tile([3.0, 2.0], 68)[None]
    images = smooth_faces(rng, 64).permute(0, 2, 3, 1).numpy()
    images = ((images + 1) * 127.5).clip(0, 255).astype(np.uint8)
    noise = lambda: rng.normal(0, 0.5, (32, 136))
    data = TrainingData(images[:32], (base + noise()).astype(np.float32),
                        {"ref": TrainingData(images[32:], (base + shift + noise()).astype(np.float32))})
    torch.manual_seed(0)
    method = build_method("geogan", geogan_params(**AUTHORS_SETTINGS))
    method.optimizers = method.configure_optimizers()
    batches = make_batches(data, 8, 0, flip=False)
    losses = [step_once(method, batches, step)["loss_lm"]
              for step in range(40)]
    assert np.mean(losses[-5:]) < 0.3 * losses[0]
    batch = batches.batch(0, "cpu")
    parts = method.transfer(batch["image"], batch["ref_image"])
    landmarks = method.landmarks(batch["attributes"])
    moved = flow_at(parts["flow"], landmarks).mean((0, 1)) * 32       # grid units -> pixels at 64 px
    assert torch.allclose(moved, torch.tensor([3.0, 2.0]), atol=1.0)
    assert parts["mask"].mean() > 0.2


def test_instance_norm_is_instance_norm_in_its_input_layout():
    """nets.NORMS["instance"] computes GroupNorm(c, c) with the same parameters (the earlier implementation,
    so its state dicts load), gradients included, and returns channels_last for channels_last input."""
    from facegan.methods.nets import NORMS

    norm, reference = NORMS["instance"](8), torch.nn.GroupNorm(8, 8)
    with torch.no_grad():
        reference.weight.normal_()
        reference.bias.normal_()
    norm.load_state_dict(reference.state_dict())
    x = torch.randn(4, 8, 16, 16)
    for layout in (torch.contiguous_format, torch.channels_last):
        ours = x.clone().to(memory_format=layout).requires_grad_()
        theirs = x.clone().requires_grad_()
        out = norm(ours)
        assert out.is_contiguous(memory_format=layout)
        assert torch.allclose(out, reference(theirs), atol=1e-5)
        weights = torch.randn_like(x)
        (out * weights).sum().backward()
        (reference(theirs) * weights).sum().backward()
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-4)
    assert torch.allclose(norm.weight.grad, reference.weight.grad, atol=1e-3)


def dotted_faces(rng, n: int, shift: tuple[float, float] = (0.0, 0.0), mouth_square: bool = False):
    """Synthetic faces whose 68 landmarks are visible: smooth backgrounds with a dark dot on each landmark of
    one shape, moved per face by up to 4 px (plus `shift`); `mouth_square`: a bright square planted on the
    mouth (landmarks 48-67), the attribute. -> uint8 images (n, 64, 64, 3), pixel landmarks (n, 136)."""
    shape = np.random.default_rng(1).uniform(14, 50, (68, 2))
    images = ((smooth_faces(rng, n).permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.uint8)
    landmarks = shape[None] + rng.uniform(-4, 4, (n, 1, 2)) + np.array(shift) + rng.normal(0, 0.5, (n, 68, 2))
    for image, points in zip(images, landmarks):
        if mouth_square:
            x, y = points[48:68].mean(0).round().astype(int)
            image[y - 4:y + 4, x - 4:x + 4] = 255
        for x, y in points.round().astype(int):
            image[y:y + 2, x:x + 2] = 0
    return images, landmarks.reshape(n, 136).astype(np.float32)


def test_landmark_flow_alone_aligns_a_few_fixed_pairs():
    """Mechanism of our flow (flow "landmarks"): in its warm-up alone (the landmark estimator and D's attribute
    head on real faces), on 8 fixed pairs whose landmarks are drawn on them, b's landmarks moved by the flow
    must meet a's within 1 px (they start ~4 px apart)."""
    from facegan.methods.base import TrainingData

    rng = np.random.default_rng(0)
    images_a, land_a = dotted_faces(rng, 8)
    images_b, land_b = dotted_faces(rng, 8, shift=(2.0, 1.0))
    torch.manual_seed(0)
    method = build_method("geogan", geogan_params(width=8, warmup=10_000))
    method.optimizers = method.configure_optimizers()
    batches = make_batches(TrainingData(images_a, land_a, {"ref": TrainingData(images_b, land_b)}), 8, 0, flip=False)
    method.prepare(batches.labels)

    def error(batch) -> float:
        parts = method.transfer(batch["image"], batch["ref_image"])
        a, b = method.landmarks(batch["attributes"]), method.landmarks(batch["ref_attributes"])
        return float(((a + flow_at(parts["flow"], a) - b) * 32).norm(dim=-1).mean())

    before = error(batches.batch(0, "cpu"))
    for step in range(150):
        step_once(method, batches, step)
    assert before > 3 and error(batches.batch(0, "cpu")) < 1.0


def test_planted_attribute_arrives_where_a_landmarks_say():
    """Mechanism of the whole transfer: references b carry the attribute as a bright square on their mouth, and
    their faces sit 3 px right and 2 px below the photos'; after a short run at the default recipe the output
    must show the square on a's mouth (where a's landmarks put it), not where it sat on b, and keep a
    elsewhere (the failures: a mask that never opens, a flow that does not align, a pasted whole face)."""
    from facegan.methods.base import TrainingData

    rng = np.random.default_rng(0)
    images_a, land_a = dotted_faces(rng, 32)
    images_b, land_b = dotted_faces(rng, 32, shift=(3.0, 2.0), mouth_square=True)
    torch.manual_seed(0)
    method = build_method("geogan", geogan_params(width=8, d_width=8, warmup=40, refine_start=10))
    method.optimizers = method.configure_optimizers()
    batches = make_batches(TrainingData(images_a, land_a, {"ref": TrainingData(images_b, land_b)}), 8, 0, flip=False)
    method.prepare(batches.labels)
    for step in range(120):
        step_once(method, batches, step)

    test_a, test_land_a = dotted_faces(np.random.default_rng(5), 16)
    test_b, _ = dotted_faces(np.random.default_rng(6), 16, shift=(3.0, 2.0), mouth_square=True)
    a, b = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1 for x in (test_a, test_b))
    output = method.transfer(a, b)["output"]

    def box_mean(images, centres):
        return torch.stack([image[:, y - 3:y + 3, x - 3:x + 3].mean()
                            for image, (x, y) in zip(images, centres.round().astype(int))])

    mouth_a = test_land_a.reshape(-1, 68, 2)[:, 48:68].mean(1)
    on_a_mouth = box_mean(output, mouth_a) - box_mean(a, mouth_a)
    assert on_a_mouth.mean() > 0.5                                  # the square arrived on a's mouth
    cheek = mouth_a + np.array([0.0, -14.0])
    assert (box_mean(output, cheek) - box_mean(a, cheek)).abs().mean() < 0.25   # a kept elsewhere


class FixedPoints(torch.nn.Module):
    """A landmark estimator that returns given points (a's for the first half of the batch, b's after)."""

    def __init__(self, points_a, points_b):
        super().__init__()
        self.points = torch.cat([points_a, points_b])

    def forward(self, x):
        return self.points


def face_shape() -> np.ndarray:
    """68 pixel landmarks on 64 x 64: random points above the mouth, the mouth as iBUG draws it (12 outer
    points from the left corner (48) round to the right one (54) and back, 8 inner), centred at (32, 44)."""
    shape = np.random.default_rng(1).uniform([12, 10], [52, 34], (68, 2))
    outer = np.pi - 2 * np.pi * np.arange(12) / 12
    inner = np.pi - 2 * np.pi * np.arange(8) / 8
    shape[48:60] = np.stack([32 + 8 * np.cos(outer), 44 - 4 * np.sin(outer)], 1)
    shape[60:68] = np.stack([32 + 5 * np.cos(inner), 44 - 1.5 * np.sin(inner)], 1)
    return shape


@pytest.mark.parametrize("kept", [[], ["mouth"]])
def test_reference_shape_leaves_the_kept_part_in_b_shape(kept):
    """reference_shape: the spline carries every other landmark of a onto b's, and leaves the kept part as b
    drew it. b's face is a's moved 2 px right, with a mouth 1.5 x as wide (a smile): aligned, a's mouth corners
    land on b's; kept, they land where the shift alone puts them, inside b's wider mouth (4 px short)."""
    size = 64
    shape = face_shape()
    wider = shape.copy()
    wider[48:68, 0] = 32 + 1.5 * (shape[48:68, 0] - 32)
    a, b = (to_grid_coordinates(torch.tensor(p[None] + shift, dtype=torch.float32), size)
            for p, shift in ((shape, 0.0), (wider, np.array([2.0, 0.0]))))
    method = build_method("geogan", geogan_params(width=8, reference_shape=kept))
    unwrap(method.parts_used()[0]).estimator = FixedPoints(a, b)     # the flow inference uses
    flow = method.transfer(torch.zeros(1, 3, size, size), torch.zeros(1, 3, size, size))["flow"]
    miss = ((a + flow_at(flow, a) - b) * size / 2).norm(dim=-1)[0]
    assert miss[:48].mean() < 0.5
    corners = miss[[48, 54]]
    assert (corners < 0.5).all() if not kept else (corners > 2).all()


def test_reference_shape_must_leave_points_to_align():
    from facegan.config import ConfigError

    with pytest.raises(ConfigError, match="reference_shape"):
        build_method("geogan", geogan_params(reference_shape=["jaw", "brows", "nose", "eyes", "mouth"]))


def test_donor_mouth_paste_of_oneself_changes_nothing_and_moves_a_mouth():
    """The London reference: pasting a face's own mouth onto itself is the identity; a donor whose mouth is
    bright arrives inside a's mouth box only."""
    from facegan.metrics.transfer import donor_mouth_paste

    shape = face_shape()[None]
    face = torch.rand(1, 3, 64, 64) * 0.2
    assert torch.allclose(donor_mouth_paste(face, shape, face, shape), face, atol=1e-4)
    donor = face.clone()
    donor[:, :, 42:47, 28:37] = 0.9            # teeth inside the donor's (same) mouth box
    pasted = donor_mouth_paste(face, shape, donor, shape)
    assert (pasted - face)[:, :, 42:47, 28:37].mean() > 0.3
    assert (pasted - face)[:, :, :30].abs().max() < 1e-4     # the eyes and above untouched


def test_mask_sparsity_is_free_up_to_the_attributes_area_and_outputs_are_moving_averages():
    """L_mask = relu(mean(m) - mask_free_area) per face: nothing below the free area, the plain mean above it.
    With ema_decay 0 the parts used are the trained ones; with 0.9 they lag behind them."""
    from facegan.methods.geogan import mask_sparsity

    mask = torch.cat([torch.full((1, 1, 8, 8), 0.05), torch.full((1, 1, 8, 8), 0.5)])
    assert float(mask_sparsity(mask, 0.1)) == pytest.approx((0 + 0.4) / 2)
    assert float(mask_sparsity(mask, 0.0)) == pytest.approx(0.275)
    outputs = {}
    for decay in (0.0, 0.9):
        torch.manual_seed(0)
        method = build_method("geogan", geogan_params(ema_decay=decay))
        method.optimizers = method.configure_optimizers()
        batches = make_batches(tiny_data(method="geogan"), 8, 0, flip=False)
        for step in range(4):
            step_once(method, batches, step)
        batch = batches.batch(0, "cpu")
        with torch.no_grad():
            trained = method.attribute_transfer(batch["image"], batch["ref_image"])["output"]
        outputs[decay] = (method.transfer(batch["image"], batch["ref_image"])["output"], trained)
    assert torch.allclose(*outputs[0.0], atol=1e-6)
    assert not torch.allclose(*outputs[0.9], atol=1e-3)


def test_steady_step_is_where_the_game_starts():
    """Method.steady_step (where benchmarks/train_throughput.py times the step): before it GeoGAN's warm-up
    leaves G's losses out (NaN); from it every loss is computed and the refinement is on."""
    method = build_method("geogan", geogan_params(warmup=3, refine_start=2))
    method.optimizers = method.configure_optimizers()
    batches = make_batches(tiny_data(method="geogan"), 8, 0, flip=False)
    assert method.steady_step() == 5
    assert np.isnan(step_once(method, batches, 0)["loss_adv"])
    losses = step_once(method, batches, method.steady_step())
    assert all(np.isfinite(v) for v in losses.values())
    assert float(method.refine.weight) == pytest.approx(method.params.refine_weight)
