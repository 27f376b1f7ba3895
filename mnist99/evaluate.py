"""Test a finished run again and look at what it got wrong: accuracy, per-class accuracy,
confusion matrix, top losses (the library of `python eval.py`, mnist99.cli.eval)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist99.build import build_model
from mnist99.callbacks import ErrorAnalysis
from mnist99.checkpoints import check_fits, read_checkpoint
from mnist99.errors import ConfigError


def locate(target: str) -> tuple[Path, Path]:
    """(run dir, checkpoint): a run folder means the weights its own test used (run.yaml)."""
    path = Path(target).expanduser().resolve()
    if path.is_file():
        run_dir, ckpt = path.parent.parent, path
    else:
        run_dir = path
        tested = (yaml.safe_load((path / "run.yaml").read_text()) or {}).get("tested_weights", "") if (path / "run.yaml").is_file() else ""
        ckpt = Path(tested) if tested.endswith(".ckpt") else path / "checkpoints" / "last.ckpt"
    for needed in (run_dir / "config.yaml", ckpt):
        if not needed.is_file():
            raise ConfigError(f"ckpt_path={target}: {needed} does not exist. Pass the folder of a run made by train.py "
                              "(it holds config.yaml and checkpoints/), or one of its .ckpt files.")
    return run_dir, ckpt


def load(run_dir: Path, ckpt: Path) -> tuple[DictConfig, L.LightningModule]:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = build_model(cfg)
    state = read_checkpoint(ckpt)
    check_fits(state, model, ckpt)
    model.load_state_dict(state["state_dict"])
    # the class folder names the datamodule saved (checkpoints from before it did: none)
    data_state = state.get("MNISTDataModule") or {}
    model.trained_classes = [str(c) for c in data_state.get("classes", [])]
    # the training images' own mean and std where the config left them null (data=folder)
    model.data_stats = {k: data_state.get(k) for k in ("mean", "std")}
    return cfg, model.eval()


def evaluate(run_dir: Path, ckpt: Path, top_losses: int = 9) -> dict:
    """Test the checkpoint on the run's own test set; writes the figures and eval.yaml to run_dir."""
    if isinstance(top_losses, bool) or not isinstance(top_losses, int) or top_losses < 0:
        raise ConfigError(f"top_losses={top_losses!r} is impossible: it must be a whole number, 0 or more "
                          "(how many of the highest-loss test images to draw; 0 draws none).")
    cfg, model = load(run_dir, ckpt)
    dm = instantiate(cfg.data, _convert_="all")
    analysis = ErrorAnalysis(output_dir=str(run_dir), top_losses=top_losses)
    trainer = L.Trainer(accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, precision=cfg.trainer.get("precision", "32-true"),
                        logger=False, callbacks=[analysis], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.test(model, datamodule=dm, verbose=False)
    result = {"checkpoint": str(ckpt), **{k: float(trainer.callback_metrics[k]) for k in ("test/acc", "test/loss")}, **analysis.result}
    (run_dir / "eval.yaml").write_text(yaml.safe_dump(result, sort_keys=False))
    return result
