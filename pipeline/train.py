"""Stage train@<method>: the shared training loop -> models/<method>/, reports/train/<method>/.

With train.common.nproc > 1 the stage re-launches itself under torchrun
(`--standalone`, one node); for several nodes run torchrun yourself (README).
"""
import os
import subprocess
import sys

from facegan.config import load_params
from facegan.methods import method_class
from facegan.paths import project_root
from facegan.stage import run_stage
from facegan.train.data import make_batches
from facegan.train.loop import Trainer, build_for_training, start_context


def body(name):
    def train(params, run):
        root = project_root()
        common = params.train.common
        context = start_context(common.device)
        data = method_class(name).training_data(root, getattr(params.train, name))
        method = build_for_training(name, params, data.image_size)
        batches = make_batches(data, method.batch_size, common.seed, context.rank, context.world_size,
                               flip=method.flip_augment, channels_last=common.channels_last)
        trainer = Trainer(method, batches, root / "models" / name, root / "reports" / "train" / name, context,
                          run=run if context.writer else None, root=root)
        return trainer.fit()
    return train


if __name__ == "__main__":
    method = sys.argv[1]
    method_class(method)  # an unknown name fails here, listing the valid ones
    nproc = load_params().train.common.nproc
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        sys.exit(subprocess.call([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  f"--nproc-per-node={nproc}", __file__, method]))
    rank = int(os.environ.get("RANK", "0"))
    sections = ["train.common", f"train.{method}"]
    run_stage(f"train@{method}" if rank == 0 else f"train@{method}:rank{rank}", sections, body(method),
              tracking=rank == 0)
