"""`python eval.py ckpt_path=<run dir or .ckpt>` / `mnist99-eval`: test a finished run again and
look at what it got wrong: accuracy, per-class accuracy, confusion matrix, top losses."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import lightning as L
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist99.callbacks import ErrorAnalysis
from mnist99.checkpoints import check_fits, read_checkpoint
from mnist99.config import register_resolvers
from mnist99.errors import ConfigError, Mnist99Error

USAGE = "python eval.py ckpt_path=<run dir or .ckpt> [top_losses=9]"


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
    from mnist99.train import build_model

    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = build_model(cfg)
    state = read_checkpoint(ckpt)
    check_fits(state, model, ckpt)
    model.load_state_dict(state["state_dict"])
    # the class folder names the datamodule saved (checkpoints from before it did: none)
    model.trained_classes = [str(c) for c in (state.get("MNISTDataModule") or {}).get("classes", [])]
    return cfg, model.eval()


def evaluate(run_dir: Path, ckpt: Path, top_losses: int = 9) -> dict:
    """Test the checkpoint on the run's own test set; writes the figures and eval.yaml to run_dir."""
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


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    unknown = set(args) - {"ckpt_path", "top_losses"} or (set(a for a in sys.argv[1:] if "=" not in a) - {"--help", "-h"})
    if "ckpt_path" not in args or unknown or "--help" in sys.argv or "-h" in sys.argv:
        print(f"usage: {USAGE}" + (f"\nmnist99: error: unknown argument(s) {sorted(unknown)}" if unknown else ""), file=sys.stderr)
        sys.exit(0 if ("--help" in sys.argv or "-h" in sys.argv) else 2)
    register_resolvers()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # their start-up notices are noise here
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        top = int(args.get("top_losses", 9))
        run_dir, ckpt = locate(args["ckpt_path"])
        result = evaluate(run_dir, ckpt, top_losses=top)
    except ValueError:
        sys.exit(f"\nmnist99: error: top_losses={args['top_losses']!r} must be a whole number.\n")
    except Mnist99Error as e:
        sys.exit(f"\nmnist99: error: {e}\n")
    print(f"test/acc={result['test/acc']:.4f} test/loss={result['test/loss']:.4f}  ({result['checkpoint']})")
    print("per class: " + "  ".join(f"{c}: {a:.2%}" for c, a in result["per_class_acc"].items()))
    print(f"wrote {run_dir / 'confusion_matrix.png'}, {run_dir / 'top_losses.png'}, {run_dir / 'eval.yaml'}")
