"""Test a finished run again and look at what it got wrong: accuracy, per-class accuracy,
confusion matrix, top losses (the library of `python eval.py`, mnist99.cli.eval)."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist99.build import build_model
from mnist99.callbacks import ErrorAnalysis
from mnist99.checkpoints import check_fits, first_line, read_checkpoint, stored_run
from mnist99.config import project_root
from mnist99.console import quiet_lightning
from mnist99.errors import ConfigError
from mnist99.locate import eval_folder
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
            raise ConfigError(f"The config stored in {ckpt} cannot be read ({type(e).__name__}: {first_line(e)}). "
                              "Pass the run folder it came from (ckpt_path=<run dir>).") from None
    elif (run_dir / "config.yaml").is_file():
        cfg, source = OmegaConf.load(run_dir / "config.yaml"), str(run_dir / "config.yaml")
    else:
        raise ConfigError(f"{ckpt} holds no config of its own (it was written by another program, or by an mnist99 from before "
                          "checkpoints carried their config), "
                          f"and its run's config.yaml is not with it ({run_dir / 'config.yaml'} does not exist). Pass "
                          "the run folder it came from (ckpt_path=<run dir>), or put it back in that folder's checkpoints/; "
                          "checkpoints written by this mnist99 carry their config and work alone.")
    missing = [k for k in ("model", "data", "optimizer", "trainer") if not OmegaConf.is_dict(cfg.get(k))]
    if missing:
        raise ConfigError(f"{source} has no {', '.join(missing)} section: it is not the config of a run made by "
                          "train.py. Pass a run folder or a .ckpt written by train.py.")
    check_targets(cfg)  # before anything is built from it
    return cfg


def evaluate(run_dir: Path, ckpt: Path, top_losses: int = 9, output_dir: Path | None = None) -> dict:
    """Test the checkpoint on the run's own test set; writes the figures and eval.yaml into output_dir, a
    folder of this evaluation's own (by default a new one under outputs/evals/: locate.eval_folder), never
    into the run's folder. The result says where it wrote, and (`note`) how its test set differs from the
    one the run's own test used."""
    if isinstance(top_losses, bool) or not isinstance(top_losses, int) or top_losses < 0:
        raise ConfigError(f"top_losses={top_losses!r} is impossible: it must be a whole number, 0 or more "
                          "(how many of the highest-loss test images to draw; 0 draws none).")
    cfg, model = load(run_dir, ckpt)
    dm = instantiate(cfg.data, _convert_="all")
    out = Path(output_dir) if output_dir is not None else eval_folder(run_dir, ckpt, Path(project_root()) / "outputs")
    analysis = ErrorAnalysis(output_dir=str(out), top_losses=top_losses)
    quiet_lightning()  # importing Lightning set its notices back on (GPU available, tips)
    trainer = L.Trainer(accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, precision=cfg.trainer.get("precision", "32-true"),
                        logger=False, callbacks=[analysis], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.test(model, datamodule=dm, verbose=False)
    images = len(dm.data_test) if getattr(dm, "data_test", None) is not None else None
    note = test_set_note(cfg, run_dir, ckpt, dm, images)
    result = {"checkpoint": str(ckpt), **{k: float(trainer.callback_metrics[k]) for k in ("test/acc", "test/loss")},
              "test_images": images, **({"note": note} if note else {}), **analysis.result}
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.yaml").write_text(yaml.safe_dump(result, sort_keys=False))
    return result | {"output_dir": str(out)}


def test_set_note(cfg: DictConfig, run_dir: Path, ckpt: Path, dm, images: int | None) -> str | None:
    """One line where this evaluation's test set is not the one the run's own test used: a test cut short
    (trainer.limit_test_batches, trainer.fast_dev_run), another folder, or a folder whose images changed since.
    Read from the run's record (run.yaml's test_set), else, for a lone .ckpt or an older run, from its config."""
    if images is None:
        return None
    splits = getattr(dm, "splits", None)
    folder = str(Path(splits[1]).resolve()) if splits else str(getattr(dm, "data_dir", ""))
    whole = f"this evaluation uses the whole test set: {images} images"
    cut = cut_short(cfg.trainer)
    record = yaml.safe_load((run_dir / "run.yaml").read_text()) if ckpt.parent != run_dir and (run_dir / "run.yaml").is_file() else None
    own = (record or {}).get("test_set")
    if isinstance(own, dict) and isinstance(own.get("images"), int):
        if own.get("folder") and own["folder"] != folder:
            return (f"this run's own test used the {own['images']} images of {own['folder']}; this evaluation tests the "
                    f"{images} images of {folder}, so its test/acc is not the run's")
        if own["images"] != images:
            return (f"this run's own test used {own['images']} images of {folder}, which holds {images} now: the test set "
                    "has changed since, so this test/acc is not the run's")
        tested = own.get("tested", images)
        return f"this run's own test used {tested} of its {images} test images{f' ({cut})' if cut else ''}; {whole}" if tested < images else None
    if cut is None:  # no record of the run's test (a lone .ckpt, an older run): its config says whether it was cut short
        return None
    batches = math.ceil(images / max(1, int(cfg.data.get("batch_size") or 1)))
    limit = cfg.trainer.get("limit_test_batches") if "limit_test_batches" in cut else int(cfg.trainer.get("fast_dev_run"))
    used = min(batches, limit if isinstance(limit, int) else max(1, int(batches * float(limit))))
    return f"this run's own test used {used} of {batches} batches ({cut}); {whole}" if used < batches else None


def cut_short(trainer: DictConfig) -> str | None:
    """The trainer setting that cut a run's test short, as its override: trainer.fast_dev_run, or a
    trainer.limit_test_batches under all (an int counts batches, a float is a fraction); None for the whole set."""
    fast = trainer.get("fast_dev_run")
    if fast not in (None, False, 0):
        return f"trainer.fast_dev_run={fast}"
    limit = trainer.get("limit_test_batches")
    if limit is None or isinstance(limit, bool) or (isinstance(limit, float) and limit >= 1.0):
        return None
    return f"trainer.limit_test_batches={limit}"
