"""The schema of the start-up checks (mnist99/schema.py) against conf/: every option of every group
has each key it requires, and a required key that is missing is refused by name, never skipped."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from conftest import run_in_process
from mnist99 import schema
from mnist99.config import CONFIG_DIR, validate
from mnist99.data.datamodule import ImageFolderDataModule
from mnist99.errors import ConfigError

GROUPS = {g.name: sorted(p.stem for p in g.glob("*.yaml")) for g in Path(CONFIG_DIR).iterdir() if g.is_dir()}
# what tests/test_configs.py composes, plus the debug presets and data=folder
COMBOS = [
    *([f"model={m}"] for m in GROUPS["model"]),
    *(["model=mlp", f"optimizer={o}", f"scheduler={s}"] for o in GROUPS["optimizer"] for s in GROUPS["scheduler"]),
    *([f"trainer={t}"] for t in GROUPS["trainer"]),
    *([f"logger={lg}", f"callbacks={c}"] for lg in GROUPS["logger"] for c in GROUPS["callbacks"]),
    *([f"experiment={e}"] for e in GROUPS["experiment"]),
    *([f"augment={a}"] for a in GROUPS["augment"]),
    *([f"debug={d}"] for d in GROUPS["debug"]),
    ["data=folder", "data.data_dir=/any/folder"],
]


def composed(*overrides: str) -> DictConfig:
    return OmegaConf.create(_composed(overrides))  # a copy: a test may delete from it


@functools.cache
def _composed(overrides: tuple[str, ...]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR):
            return compose("train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def gpu_here(monkeypatch):
    """trainer=gpu is checked as on a machine with one (the refusal without one: test_configs.py)."""
    monkeypatch.setattr(schema, "cuda_available", lambda: True)


def test_every_option_of_every_group_has_the_keys_it_requires(gpu_here):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR):  # one Hydra for all: its config files read once
            for overrides in COMBOS:
                try:
                    schema.check(compose("train", overrides=overrides))
                except ConfigError as e:  # a missing required key or a bad value, named
                    raise AssertionError(f"{' '.join(overrides)}: {e}") from None
    finally:
        GlobalHydra.instance().clear()


# options between them choosing every part the schema has rules for
CHOSEN = [(), ("optimizer=sgd", "scheduler=cosine"), ("optimizer=adamw",), ("model=linear_scratch",)]


def choosing(target: str) -> tuple[DictConfig, str]:
    """A composed config one of whose sections is the part `target`, and that section."""
    for overrides in CHOSEN:
        cfg = composed(*overrides)
        for section in schema.SECTIONS:
            if OmegaConf.select(cfg, f"{section}._target_") == target:
                return cfg, section
    raise AssertionError(f"no option of conf/ chooses {target}: its rules are never used")


@pytest.mark.parametrize("target, key", [(t, k) for t, rules in schema.PARTS.items() for k, r in rules.items() if not r.optional])
def test_a_deleted_key_of_a_chosen_part_is_refused_by_name(target, key, gpu_here):
    cfg, section = choosing(target)
    node = cfg[section]
    assert key in node, f"{section}.{key} is not in the composed config"
    with open_dict(node):
        del node[key]
    with pytest.raises(ConfigError) as refused:
        validate(cfg)
    message = str(refused.value)
    assert f"{section}.{key}" in message and "\n" not in message, message


def test_a_part_of_the_users_own_carries_only_the_keys_its_class_takes(monkeypatch):
    """No rule of mnist99's datamodule or Classifier binds a model or data of another class."""
    monkeypatch.setenv("MNIST99_ALLOW_TARGETS", "mypkg.*")
    cfg = composed()
    cfg.model = {"_target_": "mypkg.Net", "hidden": 3}
    cfg.data = {"_target_": "mypkg.Data", "root": "/any"}
    validate(cfg)
    cfg.model = {"hidden": 3}
    with pytest.raises(ConfigError, match="model._target_ is missing"):
        validate(cfg)


def test_keys_of_another_option_are_not_required():
    sgd = composed("optimizer=sgd", "scheduler=none")
    assert "betas" not in sgd.optimizer and not sgd.scheduler
    validate(sgd)
    adam = composed("scheduler=cosine")
    assert "momentum" not in adam.optimizer and "div_factor" not in adam.scheduler
    validate(adam)


def test_deleting_a_key_on_the_command_line_is_refused_at_start_up():
    proc = run_in_process("train", "~optimizer.lr")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("mnist99: error: optimizer.lr is missing"), proc.stderr
    assert "+optimizer.lr=" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("overrides, arguments", [
    (["data.channels=2"], {"channels": 2}),
    (["data.on_bad_image=ignore"], {"on_bad_image": "ignore"}),
    (["data.image_size=0"], {"image_size": 0}),
    (["data.val_size=-1"], {"val_size": -1}),
    (["data.channels=3", "model.in_channels=1"], {"channels": 3, "model_channels": 1}),
])
def test_a_datamodule_built_from_python_refuses_in_the_words_of_the_start_up_check(overrides, arguments, tmp_path):
    """One rule and one message per key, whether the value came from the command line or from Python."""
    with pytest.raises(ConfigError) as at_start_up:
        validate(composed(*overrides))
    with pytest.raises(ConfigError) as from_python:
        ImageFolderDataModule(tmp_path, **arguments)
    assert str(from_python.value) == str(at_start_up.value) and overrides[0].split("=")[0] in str(at_start_up.value)


def test_the_trainer_names_are_lightnings_own():
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    assert set(schema.STRATEGIES) == {"auto", *StrategyRegistry.available_strategies()}
    assert set(schema.ACCELERATORS) == {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}


@pytest.mark.parametrize("override, said", [
    ("trainer.strategy=dpp", "trainer.strategy='dpp' is not a strategy Lightning offers. Did you mean trainer.strategy=ddp?"),
    ("trainer.precision=16-bit", "is not a precision Lightning offers. Did you mean trainer.precision=16-true"),
    ("trainer.accelerator=cpus", "Did you mean trainer.accelerator=cpu?"),
    ("trainer.strategy=deepspeed", "needs DeepSpeed, and its package `deepspeed` is not installed"),
    ("trainer.devices=0", "trainer.devices=0 is not a device count"),
    ("model=lenet data.image_size=8", "data.image_size=8 is too small for the model's net, LeNet: it takes images of at least 12 pixels"),
    ("model=cnn data.image_size=2", "FastCNN: it takes images of at least 4 pixels"),
    ("model=resnet18 data.image_size=4", "ResNet: it takes images of at least 16 pixels"),
    ("model=strided_cnn data.batch_size=1", "data.batch_size=1 cannot train the model's net, StridedCNN: its BatchNorm layers"),
    ("trainer.max_epochs=null train_images=null", "leave the run without a length"),
])
def test_what_lightning_or_the_net_cannot_take_is_refused_at_start_up(override, said):
    with pytest.raises(ConfigError) as refused:
        validate(composed(*override.split()), data=False)
    assert said in str(refused.value) and "\n" not in str(refused.value)


def test_more_cpu_processes_than_cores_are_refused(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"trainer.devices=3 asks for 3 CPU processes, and this machine has 2 cores"):
        validate(composed("trainer.accelerator=cpu", "trainer.devices=3"), data=False)
    validate(composed("trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn"), data=False)


@pytest.mark.parametrize("net, size", [("lenet", 12), ("cnn", 4), ("strided_cnn", 13), ("stack_cnn", 21), ("resnet18", 16)])
def test_each_net_builds_at_the_smallest_size_it_declares_and_not_below(net, size):
    """The declared minimum is the real one: the net takes a batch of that size, and the start-up refuses one pixel less."""
    import torch

    from mnist99.build import build_model

    model = build_model(composed(f"model={net}", f"data.image_size={size}", "model.num_classes=10")).eval()
    assert model(torch.zeros(2, model.in_channels, size, size)).shape == (2, 10)
    with pytest.raises(ConfigError, match="too small"):
        validate(composed(f"model={net}", f"data.image_size={size - 1}"), data=False)


def test_a_net_that_cannot_take_the_datas_images_is_refused_when_built():
    """A net whose own size disagrees with the data's (here a linear layer made for 28x28, fed 32x32): one paragraph
    before the data is read, not a shape error in the first batch."""
    from mnist99.build import build_model

    with pytest.raises(ConfigError) as refused:
        build_model(composed("model=linear", "model.net.image_size=28", "data.image_size=32", "model.num_classes=10"))
    said = str(refused.value)
    assert "cannot take the data's images, 1 channel(s) of 32x32 pixels" in said and "\n" not in said, said
