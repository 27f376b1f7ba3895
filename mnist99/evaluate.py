"""Test a finished run again and look at what it got wrong: accuracy, per-class accuracy,
confusion matrix, top losses (the library of `python eval.py`, mnist99.cli.eval)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist99.build import build_model
from mnist99.callbacks import ErrorAnalysis
from mnist99.checkpoints import check_fits, read_checkpoint
from mnist99.errors import ConfigError
from mnist99.checkpoints import stored_run
from mnist99.trusted import check_targets, instantiate


def load(run_dir: Path, ckpt: Path) -> tuple[DictConfig, L.LightningModule]:
    """(config, model in eval mode with the weights of `ckpt`), the config being the checkpoint's
    own (mnist99.checkpoints) or, for one written before checkpoints held it, run_dir's config.yaml."""
    state = read_checkpoint(ckpt)
    stored = stored_run(state, ckpt)
    cfg = run_config(stored, run_dir, ckpt)
    model = build_model(cfg)
    check_fits(state, model, ckpt)
    model.load_state_dict(state["state_dict"])
    data_state = stored or {}  # the class folder names and the data's statistics the checkpoint holds
    model.trained_classes = [str(c) for c in data_state.get("classes", [])]
    # the training images' own mean and std where the config left them null (data=folder)
    model.data_stats = {k: data_state.get(k) for k in ("mean", "std")}
    return cfg, model.eval()


def run_config(stored: dict | None, run_dir: Path, ckpt: Path) -> DictConfig:
    """The config to build from: the checkpoint's entry, else the run folder's config.yaml. Both
    are untrusted alike: every target they name is checked against mnist99.trusted first."""
    if stored is not None:
        try:
            cfg, source = OmegaConf.create(stored["config"]), f"the config stored in {ckpt}"
        except (ValueError, OmegaConfBaseException) as e:
            raise ConfigError(f"The config stored in {ckpt} cannot be read ({type(e).__name__}: {str(e)[:200]}). "
                              "Pass the run folder it came from (ckpt_path=<run dir>).") from None
    elif (run_dir / "config.yaml").is_file():
        cfg, source = OmegaConf.load(run_dir / "config.yaml"), str(run_dir / "config.yaml")
    else:
        raise ConfigError(f"{ckpt} holds no config of its own (it was written before mnist99 stored one in every checkpoint), "
                          f"and its run's config.yaml is not with it ({run_dir / 'config.yaml'} does not exist). Pass "
                          "the run folder it came from (ckpt_path=<run dir>), or put it back in that folder's checkpoints/; "
                          "checkpoints written by this mnist99 carry their config and work alone.")
    missing = [k for k in ("model", "data", "optimizer", "trainer") if not OmegaConf.is_dict(cfg.get(k))]
    if missing:
        raise ConfigError(f"{source} has no {', '.join(missing)} section: it is not the config of a run made by "
                          "train.py. Pass a run folder or a .ckpt written by train.py.")
    check_targets(cfg)  # before anything is built from it
    return cfg


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
