"""Training on real MNIST images (a subset built from ../shared/data/mnist)."""

from __future__ import annotations

import pytest

from mnist99.data.prepare import _prepare
from mnist99.train import train


@pytest.fixture(scope="module")
def real_subset(shared_mnist, tmp_path_factory):
    """The first 4000 training and 4000 test images of MNIST, as an mnist_png tree."""
    root = tmp_path_factory.mktemp("real") / "mnist_png"
    return _prepare(root, source=shared_mnist, mirrors=(), pypi=False, progress=False, limit=4000)


def test_linear_learns_real_digits(make_cfg, real_subset):
    cfg = make_cfg("model=linear", "optimizer=sgd", "optimizer.lr=0.1", "scheduler=none", "trainer.max_epochs=3",
                   "data.batch_size=64", "logger=none", "trainer.accelerator=cpu", data_dir=real_subset, val_size=500)
    metrics = train(cfg)
    assert metrics["test/acc"] > 0.85, metrics
