#!/usr/bin/env python
"""The blog's fastai recipe, run by fastai itself, as a reference for mnist99's blog_resnet* recipes.

    .venv-fastai/bin/python scripts/fastai_blog.py data/mnist_png --arch resnet18 --epochs 5 \
        --json fastai_resnet18.json

scripts/blog_side_by_side.py runs it beside mnist99's own recipe. fastai is never a dependency of
mnist99: this script does not import mnist99, and it runs in a virtual environment of its own,
made once with (Python 3.11, x86_64; pip on 3.11 takes torch and torchvision from this machine's
disk, and fastai 2.8.12 accepts torch 2.14):

    python3 -m venv .venv-fastai
    .venv-fastai/bin/pip install torch==2.14.1 torchvision==0.29.1 fastai==2.8.12

The recipe is the blog's: DataBlock over the PNG tree (training/<digit>/*.png, testing/<digit>/*.png),
a torchvision ResNet with random weights under fastai's head (vision_learner, pretrained=False),
cross-entropy, accuracy, and fit_one_cycle with fastai's defaults (Adam, lr_max 1e-3, wd 0.01).
It prints one line `FASTAI_RESULT {json}` at the end (train_loss, valid_loss, accuracy and wall
seconds per epoch, plus versions) and writes the same JSON to --json if given.
"""

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

# torch 2.14 deprecates torch.jit.script, which fastai's layers.py calls at import: noise, not news.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

import fastai  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from fastai.vision.all import (  # noqa: E402
    Callback, CategoryBlock, DataBlock, GrandparentSplitter, ImageBlock, PILImage, accuracy,
    get_image_files, parent_label, set_seed, vision_learner,
)
from fastai.vision import models  # noqa: E402
from torch.nn import functional as F  # noqa: E402

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def limited_image_files(limit):
    """get_items that keeps the first `limit` files (sorted) of each class folder, for smoke tests.
    With limit=None it is fastai's get_image_files, as in the blog."""
    if limit is None:
        return get_image_files

    def get_items(path):
        files = sorted(get_image_files(path))
        kept, seen = [], {}
        for f in files:  # sorted, so each class folder's files are in name order
            key = f.parent
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= limit:
                kept.append(f)
        return kept

    return get_items


class EpochTimer(Callback):
    "Wall seconds of each epoch, training and validation both (fastai validates inside the epoch)."

    def before_fit(self):
        self.seconds = []

    def before_epoch(self):
        self.start = time.perf_counter()

    def after_epoch(self):
        self.seconds.append(time.perf_counter() - self.start)


def metric_names(learn):
    "The names of a recorder.values row: train_loss, valid_loss, accuracy."
    return [n for n in learn.recorder.metric_names if n not in ("epoch", "time")]


def build_learner(path, arch, limit, workers):
    block = DataBlock(
        blocks=(ImageBlock(cls=PILImage), CategoryBlock),  # PILImage opens the grey PNGs as RGB: 3 equal channels
        get_items=limited_image_files(limit),
        splitter=GrandparentSplitter(train_name="training", valid_name="testing"),
        get_y=parent_label,
    )
    # The blog passes batch_sz=128, which is not a fastai argument: fastai's DataLoader takes any
    # unknown keyword into **kwargs and drops it without a word, so the blog really trained with
    # fastai's default bs=64 (training loader shuffled and dropping its last partial batch).
    # We pass that 64 explicitly. (batch_size=128, the PyTorch spelling, would have worked.)
    kwargs = {} if workers is None else {"num_workers": workers}
    dls = block.dataloaders(path, bs=64, **kwargs)
    # vision_learner is the current name; cnn_learner still works but warns that it was renamed.
    learn = vision_learner(dls, getattr(models, arch), pretrained=False,
                           loss_func=F.cross_entropy, metrics=accuracy)
    return learn


def run(args):
    set_seed(args.seed, reproducible=False)
    learn = build_learner(args.path, args.arch, args.limit, args.workers)
    if len(learn.dls.train) == 0:  # drop_last=True: under 64 training images fastai would take no step
        raise SystemExit(f"error: {len(learn.dls.train_ds)} training images make no full batch of 64; raise --limit")
    # fastai's progress bar redraws with carriage returns: fine on a terminal, megabytes of noise
    # in a log file. Off a terminal, drop it; fastai's Recorder then prints each epoch's row as a
    # plain list ([epoch, train_loss, valid_loss, accuracy, time]).
    timer = EpochTimer()
    tty = sys.stdout.isatty()
    if not tty:
        print("columns: [epoch, train_loss, valid_loss, accuracy, time]", flush=True)
    with (contextlib.nullcontext() if tty else learn.no_bar()):
        learn.fit_one_cycle(args.epochs, cbs=timer)
    # recorder.values: one row per epoch, [train_loss, valid_loss, accuracy]. fastai's train_loss
    # is its smoothed loss (moving average, beta 0.98) at the epoch's end, not the epoch's mean.
    names = metric_names(learn)
    epochs = []
    for i, (row, secs) in enumerate(zip(learn.recorder.values, timer.seconds)):
        epochs.append({"epoch": i, **{n: float(v) for n, v in zip(names, row)}, "seconds": round(secs, 3)})
    return {
        "arch": args.arch,
        "epochs": args.epochs,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "workers": learn.dls.train.fake_l.num_workers,
        "limit": args.limit,
        "n_train": len(learn.dls.train_ds),
        "n_valid": len(learn.dls.valid_ds),
        "bs": learn.dls.train.bs,
        "device": str(learn.dls.device),
        "per_epoch": epochs,
        "final_accuracy": epochs[-1]["accuracy"] if epochs else None,
        "total_seconds": round(sum(timer.seconds), 3),
        "versions": {"fastai": fastai.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "python": platform.python_version()},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description="fastai's own run of the blog's MNIST recipe.")
    parser.add_argument("path", type=Path, help="PNG tree with training/<digit>/*.png and testing/<digit>/*.png")
    parser.add_argument("--arch", choices=ARCHS, default="resnet18")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader worker processes (default: fastai's, min(16, cores)); 0 decodes in the main process")
    parser.add_argument("--limit", type=int, default=None,
                        help="first N images per class of each split (smoke tests; N x classes must reach 64)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result JSON here")
    args = parser.parse_args(argv)
    for sub in ("training", "testing"):
        if not (args.path / sub).is_dir():
            parser.error(f"{args.path / sub} is not a folder: expected training/<digit>/*.png and testing/<digit>/*.png")

    torch.set_num_threads(args.threads or os.cpu_count())
    # fastai puts the DataLoaders on default_device(): CUDA when there is one, else the CPU.
    result = run(args)
    line = json.dumps(result)
    print("FASTAI_RESULT " + line, flush=True)
    if args.json:
        args.json.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
