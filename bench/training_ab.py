"""A/B of the training loop: another checkout's lth.nn.training against this one's, in one
process, interleaved (so the ratio holds on a noisy machine). Figures, never assertions.

    git worktree add /tmp/lth-before d323bf1      # e.g. the tree before issue 13
    python bench/training_ab.py /tmp/lth-before/src

LeNet-300-100 on synthetic data, batch 60, Adam, 1 thread, 3000 iterations, best of 3:
dense, with augmentation, and with a checkpoint every 1000 iterations.
"""
import importlib
import sys
from pathlib import Path

import torch
torch.set_num_threads(1)

def load(src):
    for name in [m for m in sys.modules if m == "lth" or m.startswith("lth.")]:
        del sys.modules[name]
    sys.path.insert(0, src)
    mods = importlib.import_module("lth.nn.models"), importlib.import_module("lth.nn.training"), importlib.import_module("lth.nn.checkpoint")
    sys.path.remove(src)
    return mods

g = torch.Generator().manual_seed(0)
def split(n):
    return (torch.randn(n, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
raw = {"train": split(55000), "validation": split(1000), "test": split(1000)}
SET = {"optimizer": "adam", "lr": 1.2e-3, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 60,
       "eval_every": 10**9, "seed": 0, "iterations": 3000}
out = {}
for rep in range(3):
    for tree in ("before", "after"):
        models, training, checkpoint = load(sys.argv[1] if tree == "before" else
                                            str(Path(__file__).resolve().parents[1] / "src"))
        splits = {k: training.Split(*v) for k, v in raw.items()}
        for variant in ("dense", "augment", "checkpointed"):
            settings = dict(SET, augment=variant == "augment")
            ck = None
            if variant == "checkpointed":
                ck = checkpoint.Checkpointing(Path("/tmp/ab_ck.pt"), 1000, "x")
            Path("/tmp/ab_ck.pt").unlink(missing_ok=True)
            model = models.build("lenet_300_100", seed=0)
            r = training.train(model, None, splits, settings, checkpointing=ck)
            out.setdefault((tree, variant), []).append(SET["iterations"] / r.train_seconds)
for variant in ("dense", "augment", "checkpointed"):
    b, a = max(out[("before", variant)]), max(out[("after", variant)])
    print(f"{variant:13s} before {b:7.1f} it/s  after {a:7.1f} it/s  after/before {a / b:.3f}  "
          f"(all: before {[round(x) for x in out[('before', variant)]]}, after {[round(x) for x in out[('after', variant)]]})")
