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


@pytest.mark.parametrize("target, key", [(t, k) for t, rules in schema.PARTS.items() for k in rules])
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
