"""The datamodule: splits, input format, the decoded cache, and clear errors for broken trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import mnist99.data.cache as cache_mod
from mnist99.data.datamodule import ImageFolderDataModule
from mnist99.errors import ConfigError, DataError

from conftest import one_paragraph, run_in_process, write_png_tree


def dm_for(root: Path, **kw) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(root, mirrors=(), pypi=False, **{"val_size": 60, "batch_size": 16, **kw})
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture
def tree_copy(tiny_tree, tmp_path) -> Path:
    dst = tmp_path / "mnist_png"
    shutil.copytree(tiny_tree, dst, ignore=shutil.ignore_patterns(".mnist99_cache"))
    return dst


def test_splits_are_seeded_and_disjoint(tiny_tree):
    a, b, c = dm_for(tiny_tree), dm_for(tiny_tree), dm_for(tiny_tree, split_seed=1)
    assert (len(a.data_train), len(a.data_val), len(a.data_test)) == (340, 60, 120)
    assert a.classes == tuple(str(i) for i in range(10))
    assert torch.equal(a.data_val.images, b.data_val.images)
    assert not torch.equal(a.data_val.images, c.data_val.images)
    train_rows = {bytes(x.numpy()) for x in a.data_train.images}
    assert not any(bytes(x.numpy()) in train_rows for x in a.data_val.images)


def test_val_size_zero_validates_on_testing(tiny_tree):
    dm = dm_for(tiny_tree, val_size=0)
    assert dm.data_val is dm.data_test and len(dm.data_train) == 400


def test_val_size_too_large(tiny_tree):
    with pytest.raises(ConfigError, match="data.val_size=400"):
        dm_for(tiny_tree, val_size=400)


def test_batches_are_whole_tensors_turned_into_model_input(tiny_tree):
    dm = dm_for(tiny_tree, model_channels=3)  # grey images, a model with a 3-channel stem
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (16, 1, 28, 28) and y.shape == (16,)
    x, y = dm.on_after_batch_transfer((x, y), 0)
    assert x.shape == (16, 3, 28, 28) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 2])
    raw, _ = next(iter(dm.train_dataloader()))
    expected = (raw[:, 0].float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(dm.on_after_batch_transfer((raw, y), 0)[0][:, 1], expected)


def test_second_setup_loads_the_cache_kept_outside_the_data(tree_copy, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    before = sorted(p.relative_to(tree_copy) for p in tree_copy.rglob("*"))
    first = dm_for(tree_copy, cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == 2
    assert sorted(p.relative_to(tree_copy) for p in tree_copy.rglob("*")) == before  # nothing written into the data
    monkeypatch.setattr(cache_mod, "decode_split", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    second = dm_for(tree_copy, cache_dir=cache)
    assert torch.equal(first.data_train.images, second.data_train.images)


def test_the_cache_is_keyed_by_size_and_channels(tree_copy, tmp_path):
    grey = dm_for(tree_copy, cache_dir=tmp_path / "cache")
    colour = dm_for(tree_copy, cache_dir=tmp_path / "cache", channels=3)
    small = dm_for(tree_copy, cache_dir=tmp_path / "cache", image_size=14)
    assert len(list((tmp_path / "cache").glob("training-*.pt"))) == 3
    assert grey.data_train.images.shape[1:] == (1, 28, 28) and small.data_train.images.shape[1:] == (1, 14, 14)
    assert colour.data_train.images.shape[1:] == (3, 28, 28)
    assert all(torch.equal(colour.data_train.images[:, c], grey.data_train.images[:, 0]) for c in range(3))  # grey as RGB


def test_edited_folder_rebuilds_the_cache(tree_copy, tmp_path):
    dm_for(tree_copy, cache_dir=tmp_path / "cache")
    shutil.copy(tree_copy / "training" / "3" / "3000.png", tree_copy / "training" / "3" / "9999.png")
    dm = dm_for(tree_copy, cache_dir=tmp_path / "cache")
    assert len(dm.data_train) + len(dm.data_val) == 401
    assert len(list((tmp_path / "cache").glob("training-*.pt"))) == 1  # the stale one is gone


def test_corrupt_cache_is_rebuilt(tree_copy, tmp_path):
    good = dm_for(tree_copy, cache_dir=tmp_path / "cache")
    for f in (tmp_path / "cache").glob("*.pt"):
        f.write_bytes(f.read_bytes()[:100])
    again = dm_for(tree_copy, cache_dir=tmp_path / "cache")
    assert torch.equal(good.data_train.images, again.data_train.images)


def test_corrupt_png_names_the_file(tree_copy):
    bad = tree_copy / "training" / "5" / "5001.png"
    bad.write_bytes(bad.read_bytes()[:30])
    with pytest.raises(DataError, match="5001.png"):
        dm_for(tree_copy)


def test_different_classes_in_the_splits(tree_copy):
    shutil.rmtree(tree_copy / "testing" / "9")
    with pytest.raises(DataError, match="class folders differ"):
        dm_for(tree_copy)


def test_tree_without_class_folders(tmp_path):
    (tmp_path / "d" / "training").mkdir(parents=True)
    (tmp_path / "d" / "testing").mkdir()
    with pytest.raises(DataError, match="holds no class folders"):
        dm_for(tmp_path / "d")


def test_a_run_on_a_tree_without_class_folders_is_refused_in_one_paragraph(tmp_path):
    """Found as the model is sized (the class count), before anything is built or trained."""
    (tmp_path / "d" / "training").mkdir(parents=True)
    (tmp_path / "d" / "testing").mkdir()
    proc = run_in_process("train", f"data.data_dir={tmp_path / 'd'}", f"paths.log_dir={tmp_path / 'logs'}")
    assert proc.returncode == 2 and "holds no class folders" in one_paragraph(proc.stderr)
    assert not (tmp_path / "logs" / "runs").exists() or not any((tmp_path / "logs" / "runs").iterdir())


def test_missing_tree_without_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST99_SOURCE", raising=False)
    with pytest.raises(DataError, match="data.source"):
        dm_for(tmp_path / "nowhere")


def test_other_image_sizes_are_resized(tmp_path, caplog):
    from PIL import Image

    root = write_png_tree(tmp_path / "t", n_train=3, n_test=2)
    Image.new("L", (32, 32), 255).save(root / "training" / "0" / "77.png")  # white, another size
    with caplog.at_level("INFO"):
        dm = dm_for(root, val_size=0)
    assert dm.data_train.images.shape == (31, 1, 28, 28)
    white = [i for i in range(31) if dm.data_train.images[i].float().mean() == 255]
    assert len(white) == 1 and "1 image(s)" in caplog.text and "resized" in caplog.text


def _ids_dataset(n: int):
    from mnist99.data.datamodule import TensorBatchDataset

    return TensorBatchDataset(torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n))  # label = image id


def one_epoch(loader, epoch: int) -> torch.Tensor:
    loader.sampler.set_epoch(epoch)  # as Lightning does at the start of every epoch
    return torch.cat([y for _, y in loader])


def test_every_image_exactly_once_per_epoch():
    dm = ImageFolderDataModule("unused", batch_size=64)
    dm.data_train = _ids_dataset(1000)
    loader = dm.train_dataloader()
    epochs = [one_epoch(loader, e) for e in range(2)]
    for seen in epochs:
        assert torch.equal(seen.sort().values, torch.arange(1000))
    assert not torch.equal(epochs[0], epochs[1])  # a new permutation each epoch


def test_a_mid_epoch_resume_sees_the_rest_of_the_same_order():
    """The order depends on (seed, epoch) only; a checkpoint taken after 3 batches of epoch 1
    resumes with exactly the batches not yet trained on."""
    torch.manual_seed(7)
    dm = ImageFolderDataModule("unused", batch_size=64)
    dm.data_train = _ids_dataset(1000)
    whole = one_epoch(dm.train_dataloader(), 1)
    torch.rand(100)  # whatever else draws from torch's generator meanwhile
    dm.load_state_dict({"classes": [], "epoch": 1, "batches_done": 3})
    resumed = dm.train_dataloader()
    assert torch.equal(one_epoch(resumed, 1), whole[3 * 64 :])
    assert torch.equal(one_epoch(resumed, 2).sort().values, torch.arange(1000))  # the next epoch is whole again


def test_ddp_shards_are_disjoint_and_complete():
    """Lightning gives each DDP rank a DistributedSampler; whole-batch fetching must respect it."""
    from torch.utils.data import DataLoader, DistributedSampler

    from mnist99.data.datamodule import batch_as_is

    dataset = _ids_dataset(1000)
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(dataset, batch_size=64, sampler=sampler, collate_fn=batch_as_is)
        shards.append(set(torch.cat([y for _, y in loader]).tolist()))
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(1000))


def test_tensors_stay_in_cpu_memory_without_an_accelerator(tiny_tree):
    dm = dm_for(tiny_tree)
    dm.train_dataloader()  # no trainer attached: nothing to move to
    assert dm.data_train.images.device.type == "cpu"
