"""Only mnist99's own parts are built from a config: a copied run folder that names another callable
is refused by eval.py, predict.py and resume=, before it is called (mnist99/trusted.py)."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, run_in_process
from omegaconf import OmegaConf

from mnist99 import trusted
from mnist99.errors import ConfigError


def named_targets() -> set[str]:
    """Every callable a config under conf/ names: `_target_`s and logging's `()` factories."""
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            found.update(v for k, v in node.items() if k in ("_target_", "()") and isinstance(v, str))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in (ROOT / "conf").rglob("*.yaml"):
        walk(yaml.safe_load(path.read_text()))
    return found


def test_every_target_of_the_shipped_configs_is_allowed_and_every_library_entry_exists():
    names = named_targets()
    assert {"mnist99.models.classifier.Classifier", "lightning.pytorch.Trainer", "mnist99.console.ConsoleFormatter"} <= names
    assert [n for n in sorted(names) if not trusted.is_allowed(n)] == []
    for entry in trusted.LIBRARIES:
        if not entry.endswith(".*"):  # a renamed class must leave the list too
            module, _, name = entry.rpartition(".")
            assert hasattr(importlib.import_module(module), name), entry


@pytest.mark.parametrize("target", [
    "mnist99.models.nets.LeNet",  # an nn.Sequential
    "mnist99.models.nets.AdaptiveConcatPool2d",  # an nn.Module
    "mnist99.models.classifier.ScratchLinear",  # through ClassifierBase, a LightningModule
    "mnist99.data.datamodule.ImageFolderDataModule",
    "mnist99.callbacks.EMA",  # re-exported by the package
    "mnist99.callbacks.progress.ImagesPerSecondBar",  # a Lightning progress bar
    "mnist99.sweep.SweepSummary",  # a Hydra callback
])
def test_mnist99s_parts_are_allowed_by_the_rule_and_are_what_it_says(target):
    """The rule reads the source; what it admits is a class of that kind when imported."""
    import lightning as L
    import torch
    from hydra.experimental.callback import Callback

    assert trusted.is_allowed(target)
    module, _, name = target.rpartition(".")
    obj = getattr(importlib.import_module(module), name)
    assert isinstance(obj, type) and issubclass(obj, (torch.nn.Module, L.LightningModule, L.LightningDataModule, L.Callback, Callback))


@pytest.mark.parametrize("target", [
    "mnist99.predict.write_csv",  # a function that writes a file
    "mnist99.record.save_config",
    "mnist99.models.nets.count_macs",
    "mnist99.build.Parts",  # a class, but no part
    "mnist99.errors.ConfigError",
    "mnist99.models.nets.nn",  # a module a file imports
    "mnist99.models.nets.NoSuchNet",
    "mnist99.nowhere.Net",
])
def test_everything_else_of_mnist99_is_refused(target):
    assert not trusted.is_allowed(target)


def test_prefixes_and_the_users_own_targets(monkeypatch):
    assert trusted.is_allowed("torch.optim.lr_scheduler.OneCycleLR")
    assert not trusted.is_allowed("torch.optimize_me") and not trusted.is_allowed("torch.save")
    monkeypatch.setenv(trusted.ENV, " mypkg.nets.* , other.Net")
    assert trusted.is_allowed("mypkg.nets.Big") and trusted.is_allowed("other.Net") and not trusted.is_allowed("other.Netx")


def test_instantiate_refuses_before_calling_and_allows_on_purpose(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    cfg = OmegaConf.create({"model": {"_target_": "mnist99.models.nets.LinearNet",
                                      "net": {"_target_": "numpy.savetxt", "fname": str(victim), "X": [1.0]}}})
    with pytest.raises(ConfigError, match=r"model\.net: it names numpy\.savetxt.*MNIST99_ALLOW_TARGETS=numpy\.savetxt"):
        trusted.instantiate(cfg.model)
    with pytest.raises(ConfigError, match=r"model\.net: it names numpy\.savetxt"):
        trusted.check_targets(cfg)
    assert victim.read_text() == "precious"
    monkeypatch.setenv(trusted.ENV, "numpy.savetxt")
    assert trusted.instantiate(cfg.model.net) is None and victim.read_text() != "precious"  # allowed: it ran


@pytest.fixture
def run_dir(trained_run):
    return trained_run  # copied before it is changed (hostile_copy)


def hostile_copy(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The run folder copied, its configs (both files and the one in each checkpoint) naming
    torch.save over a file outside it; its run.yaml names the copy's own weights."""
    copy, victim = tmp_path / "copied_run", tmp_path / "victim.txt"
    shutil.copytree(run_dir, copy)
    victim.write_text("precious")
    hostile = {"_target_": "torch.save", "obj": [1], "f": str(victim)}
    for saved in (copy / "config.yaml", copy / ".hydra" / "config.yaml"):
        cfg = OmegaConf.load(saved)
        cfg.model.net = hostile
        OmegaConf.save(cfg, saved)
    for ckpt in (copy / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)
        state["mnist99"]["config"]["model"]["net"] = hostile
        torch.save(state, ckpt)
    record = yaml.safe_load((copy / "run.yaml").read_text())
    record["tested_weights"] = str(copy / "checkpoints" / "last.ckpt")
    (copy / "run.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    return copy, victim


@pytest.mark.parametrize("command", ["eval", "predict", "resume", "lone checkpoint"])
def test_a_copied_run_folder_naming_torch_save_is_refused_in_one_paragraph(run_dir, tmp_path, tiny_tree, command):
    copy, victim = hostile_copy(run_dir, tmp_path)
    record = (copy / "run.yaml").read_text()
    digit = next((tiny_tree / "testing").rglob("*.png"))
    lone = tmp_path / "downloads" / "model.ckpt"
    lone.parent.mkdir()
    shutil.copy(copy / "checkpoints" / "last.ckpt", lone)
    args = {"eval": ("eval", f"ckpt_path={copy}"),
            "predict": ("predict", f"ckpt_path={copy}", f"inputs={digit}"),
            "resume": ("train", f"resume={copy}", "trainer.max_epochs=3"),
            "lone checkpoint": ("predict", f"ckpt_path={lone}", f"inputs={digit}")}[command]
    proc = run_in_process(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    said = proc.stderr.strip()
    assert "Refused to build model.net: it names torch.save" in said and "MNIST99_ALLOW_TARGETS" in said
    assert "Traceback" not in said and said.count("\n") == 0  # one paragraph
    assert victim.read_text() == "precious"
    assert (copy / "run.yaml").read_text() == record  # the refused resume left the run as it was


def test_a_hostile_logging_section_in_a_copied_run_is_refused(run_dir, tmp_path):
    copy, victim = hostile_copy(run_dir, tmp_path)
    saved = copy / "config.yaml"  # what resume= composes
    cfg = OmegaConf.load(saved)
    cfg.model.net = OmegaConf.load(run_dir / "config.yaml").model.net
    cfg.hydra = {"job_logging": {"version": 1, "formatters": {"x": {"()": "torch.save", "obj": 1, "f": str(victim)}}}}
    OmegaConf.save(cfg, saved)
    proc = run_in_process("train", f"resume={copy}", "trainer.max_epochs=3")
    assert proc.returncode == 2 and "hydra.job_logging.formatters.x: it names torch.save" in proc.stderr
    assert victim.read_text() == "precious"
