"""The method registry and the shared training loop: a real step per method,
exact resume, seeds, DistributedDataParallel on CPU."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_data, tiny_params, train
from facegan.devices import bf16_autocast
from facegan.methods import REGISTRY, build_method, method_class
from facegan.train.data import make_batches
from facegan.train.loop import load_trained, step_generator

def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(KeyError, match="unknown method .stargan.; valid methods: beholder, cgan, dtn, fader, geogan, tpgan"):
        method_class("stargan")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_one_training_step(name, pretrained_root):
    params = tiny_params()
    method = build_method(name, params)
    method.setup(pretrained_root, "cpu")
    batches = make_batches(tiny_data(method=name), 8, 0, flip=method.flip_augment)
    method.prepare(batches.labels)
    method.fit_to_training_data(batches)
    method.start_training(batches.examples(8, "cpu"))
    batch = batches.batch(0, "cpu")
    before = {k: v.detach().clone() for k, v in method.state_dict().items()}
    with bf16_autocast("cpu"):
        losses = method.train_step(batch, 0, step_generator(0, 0, 0))
    method.after_step(0)
    assert losses and all(np.isfinite(v) for v in losses.values())
    assert tuple(losses) == tuple(method.losses)   # the columns the dvc.yaml plots list
    changed = [k for k, v in method.state_dict().items() if not torch.equal(v, before[k])]
    for network in method.trainable():   # every network the method trains took a step
        assert any(k.startswith(network + ".") for k in changed), network
    grid = method.sample_grid(torch.Generator().manual_seed(0))
    assert grid.shape[1:] == (3, 64, 64) and grid.abs().max() <= 1


def test_resumed_run_equals_uninterrupted(tmp_path):
    straight = train(tmp_path / "a", 4)
    train(tmp_path / "b", 2)
    resumed = train(tmp_path / "b", 4)          # same folder: picks up the step-2 checkpoint
    assert resumed.step == 4
    for (key, a), b in zip(straight.method.state_dict().items(), resumed.method.state_dict().values()):
        assert torch.equal(a, b), key
    rows = list(csv.DictReader(open(tmp_path / "b/reports/losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "b/reports/samples").iterdir()) == ["step_000002.png",
                                                                                    "step_000004.png"]
    assert json.loads((tmp_path / "b/models/model.json").read_text())["steps"] == 4


def test_other_params_start_afresh(tmp_path):
    train(tmp_path, 4)
    again = train(tmp_path, 2, seed=1)   # a different run: the checkpoint must not be resumed
    assert again.step == 2
    rows = list(csv.DictReader(open(tmp_path / "reports/losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    # the first run's step-4 grid would otherwise pass for this run's latest
    assert sorted(p.name for p in (tmp_path / "reports/samples").iterdir()) == ["step_000002.png"]


def test_same_seed_same_losses(tmp_path):
    first = [r["loss_g"] for r in csv.DictReader(open(train(tmp_path / "a", 2).report_dir / "losses.csv"))]
    second = [r["loss_g"] for r in csv.DictReader(open(train(tmp_path / "b", 2).report_dir / "losses.csv"))]
    third = [r["loss_g"] for r in csv.DictReader(open(train(tmp_path / "c", 2, seed=5).report_dir / "losses.csv"))]
    assert first == second and first != third


def test_budget_stops_cleanly_and_saves(tmp_path):
    trainer = train(tmp_path, 1000, max_minutes=0)
    assert trainer.step == 0 and (tmp_path / "models/checkpoint.pt").exists()
    assert json.loads((tmp_path / "models/model.json").read_text())["stopped_by"] == "max_minutes"


def test_trained_method_loads_for_generation(tmp_path):
    train(tmp_path, 2)
    folder = tmp_path / "root" / "models" / "cgan"
    folder.parent.mkdir(parents=True)
    (tmp_path / "models").rename(folder)
    method = load_trained("cgan", tmp_path / "root")
    faces = method.generate(torch.tensor([[1, 0, 1, 0, 0, 0]] * 3).float())
    assert faces.shape == (3, 3, 64, 64)
    with pytest.raises(FileNotFoundError, match=r"dvc repro train@cgan"):
        load_trained("cgan", tmp_path / "nowhere")


DDP_SCRIPT = '''
import json, os, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {tests!r})
from conftest import tiny_data, tiny_params
from facegan.train.data import InMemoryBatches
from facegan.train.loop import Trainer, build_for_training, start_context
out = Path(sys.argv[1])
context = start_context("cpu")
data = tiny_data()
batches = InMemoryBatches(data.images, data.labels, 4, 0, context.rank, context.world_size)
seen = [batches.indices(step).tolist() for step in range(3)]
(out / f"seen_rank{{context.rank}}.json").write_text(json.dumps(seen))
method = build_for_training("cgan", tiny_params(3, batch_size=4), 64)
trainer = Trainer(method, batches, out / "models", out / "reports", context)
trainer.fit()
'''


def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = [json.loads((tmp_path / f"seen_rank{r}.json").read_text()) for r in (0, 1)]
    for step in range(3):
        assert not set(seen[0][step]) & set(seen[1][step]) and len(seen[0][step]) == len(seen[1][step]) == 4
    rows = list(csv.DictReader(open(tmp_path / "reports/losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]            # one writer: no duplicated rows
    assert json.loads((tmp_path / "models/model.json").read_text())["processes"] == 2


def test_flipped_images_get_their_mirror_images_values():
    """Cached features travel with their images: a flipped image gets the mirror image's row."""
    from facegan.methods.base import TrainingData
    from facegan.train.data import InMemoryBatches

    images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    ahead, mirrored = np.arange(16, dtype=np.float32)[:, None], -np.arange(16, dtype=np.float32)[:, None]
    batches = make_batches(TrainingData(images, values={"f": (ahead, mirrored)}), 8, 0)
    for step in range(4):
        batch = batches.batch(step, "cpu")
        index = batch["index"].numpy()
        unflipped = images[index].transpose(0, 3, 1, 2) / 127.5 - 1
        flipped = np.abs(batch["image"].numpy() - unflipped).max(axis=(1, 2, 3)) > 1e-3
        expected = np.where(flipped, mirrored[index, 0], ahead[index, 0])
        assert np.array_equal(batch["f"].numpy()[:, 0], expected) and flipped.any() and (~flipped).any()
    with pytest.raises(ValueError, match="no mirror-image rows"):
        InMemoryBatches(images, None, 8, 0, values={"f": (ahead, None)})
    unflipped = make_batches(TrainingData(images, values={"f": (ahead, None)}), 8, 0, flip=False)
    assert unflipped.batch(0, "cpu")["f"].shape == (8, 1)


def test_progress_checks_stay_within_their_share(tmp_path, monkeypatch):
    """The quality figure is logged while training, but its checks are skipped when they would cost more
    than progress_share of the run's time; the last one runs at the end of the run."""
    import time

    from facegan.methods.cgan import CGAN

    def probe(self, root, labels, n):
        def check():
            time.sleep(0.2)
            return {"figure": float(self.ema.decay)}
        return check
    monkeypatch.setattr(CGAN, "progress_probe", probe)
    trainer = train(tmp_path, 12, root=tmp_path, progress_every=1, progress_samples=4, progress_share=0.05)
    with open(tmp_path / "reports" / "progress.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["step", "minutes", "figure"] and rows[-1]["step"] == "12"
    assert 1 <= len(rows) < 12                    # 0.2 s checks beside ~0.1 s steps: most are skipped
    summary = json.loads((tmp_path / "models" / "model.json").read_text())
    assert summary["progress_checks_minutes"] > 0
