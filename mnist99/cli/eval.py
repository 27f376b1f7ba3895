"""`python eval.py ckpt_path=<run dir or .ckpt> [top_losses=9]` / `mnist99-eval`: test a finished run
again (mnist99.evaluate) and print what it got right and wrong."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from mnist99.cli import HYDRA_WHITELIST, checked_argv, stops_end, fail, setup_process
from mnist99.config import CONFIG_DIR
from mnist99.errors import Mnist99Error
from mnist99.locate import locate


@hydra.main(config_path=CONFIG_DIR, config_name="eval", execution_whitelist=HYDRA_WHITELIST)
def hydra_main(cfg: DictConfig) -> None:
    try:
        run_dir, ckpt = locate(str(cfg.ckpt_path))  # a missing or wrong path is answered before torch loads
    except MissingMandatoryValue:
        fail("ckpt_path is missing: name the run to evaluate, e.g. python eval.py ckpt_path=outputs/runs/<time>_<task> "
             "(a run folder made by train.py, or a .ckpt file it wrote, also one copied alone). python eval.py --help lists the keys.")
    except Mnist99Error as e:
        fail(str(e))
    from mnist99.evaluate import evaluate  # torch and Lightning, once the command is checked

    try:
        result = evaluate(run_dir, ckpt, top_losses=cfg.top_losses)
    except Mnist99Error as e:
        fail(str(e))
    print(f"test/acc={result['test/acc']:.4f} test/loss={result['test/loss']:.4f}  ({result['checkpoint']})")
    print("per class: " + "  ".join(f"{c}: {a:.2%}" for c, a in result["per_class_acc"].items()))
    print(f"wrote {run_dir / 'confusion_matrix.png'}, {run_dir / 'top_losses.png'}, {run_dir / 'eval.yaml'}")


def main() -> None:
    setup_process(quiet_lightning=True)
    with stops_end("the evaluation"):
        sys.argv = checked_argv(sys.argv, "eval")
        hydra_main()


if __name__ == "__main__":
    main()
