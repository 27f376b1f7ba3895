"""Building a run changes neither the config nor the disk: what the data tells (the class count)
is found once, without reading or writing the data, and passed in; the Trainer prepares and sets
the data up; config.yaml is written once, before training, saying what ran."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning as L
import yaml
from omegaconf import OmegaConf

from conftest import ROOT, fit
from mnist99.build import build_datamodule
from mnist99.data.datamodule import ImageFolderDataModule


def assigned_configs(source: str) -> list[str]:
    """`cfg.x = ...`, `cfg.x.y += ...`, `cfg["x"] = ...` and `open_dict(cfg...)` in a module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        for target in targets:
            root = target
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if root is not target and isinstance(root, ast.Name) and root.id == "cfg":
                found.append(f"line {node.lineno}: {ast.unparse(target)}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "open_dict":
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_no_function_of_mnist99_assigns_into_a_config():
    assert assigned_configs("cfg.model.num_classes = 3\nwith open_dict(cfg.trainer): pass\n")  # the check sees them
    offenders = {str(p.relative_to(ROOT)): found for p in sorted((ROOT / "mnist99").rglob("*.py"))
                 if (found := assigned_configs(p.read_text()))}
    assert offenders == {}


class ConfigAtTrainStart(L.Callback):
    def __init__(self, path: Path):
        self.path, self.text = path, None

    def on_train_start(self, trainer, pl_module):
        self.text = self.path.read_text()


def test_the_config_saved_at_start_is_the_one_at_the_end_and_the_composed_config_is_untouched(make_cfg, tmp_path):
    cfg = make_cfg("experiment=fast", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                   "trainer.enable_progress_bar=false")
    composed = OmegaConf.to_yaml(cfg)
    assert cfg.model.num_classes is None  # one output per class folder: the data says how many
    at_start = ConfigAtTrainStart(tmp_path / "config.yaml")
    metrics = fit(cfg, at_start).metrics
    assert "test/acc" in metrics
    assert OmegaConf.to_yaml(cfg) == composed
    saved = (tmp_path / "config.yaml").read_text()
    assert at_start.text == saved
    assert yaml.safe_load(saved)["model"]["num_classes"] == 10 and "num_classes" not in yaml.safe_load(saved)["model"]["net"]


def test_the_class_count_is_found_without_touching_the_data_and_the_trainer_prepares_it(make_cfg, tmp_path, monkeypatch):
    """A folder MNIST is to be built in stays missing while the run is built (MNIST's ten classes);
    prepare_data and setup are called by the Trainer (Lightning runs prepare_data on one process
    per node), never by mnist99 before it."""
    missing = tmp_path / "mnist_png"
    datamodule, num_classes = build_datamodule(make_cfg(data_dir=missing))
    assert num_classes == 10 and not missing.exists() and datamodule.data_train is None

    calls = []
    for hook in ("prepare_data", "setup"):
        def spy(self, *args, _original=getattr(ImageFolderDataModule, hook), _hook=hook, **kwargs):
            calls.append((_hook, self.trainer.state.fn.value if self.trainer is not None else "no trainer"))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ImageFolderDataModule, hook, spy)
    cfg = make_cfg("experiment=fast", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                   "trainer.enable_progress_bar=false")
    assert "test/acc" in fit(cfg).metrics
    assert calls == [("prepare_data", "fit"), ("setup", "fit"), ("prepare_data", "test"), ("setup", "test")]
