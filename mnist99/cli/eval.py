"""`python eval.py ckpt_path=<run dir or .ckpt> [top_losses=9] [output_dir=...]` / `mnist99-eval`: test a
finished run again (mnist99.evaluate), print what it got right and wrong, and write it into a folder of its
own (outputs/evals/<time>_<run>/): the run's folder is left as the run left it."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from mnist99.cli import HYDRA_WHITELIST, checked_argv, stops_end, fail, setup_process
from mnist99.config import CONFIG_DIR, new_folder, project_root
from mnist99.console import shown
from mnist99.errors import Mnist99Error
from mnist99.locate import eval_folder, locate


@hydra.main(config_path=CONFIG_DIR, config_name="eval", execution_whitelist=HYDRA_WHITELIST)
def hydra_main(cfg: DictConfig) -> None:
    try:
        run_dir, ckpt = locate(str(cfg.ckpt_path))  # a missing or wrong path is answered before torch loads
    except MissingMandatoryValue:
        fail("ckpt_path is missing: name the run to evaluate, e.g. python eval.py ckpt_path=outputs/runs/<time>_<task> "
             "(a run folder made by train.py, or a .ckpt file it wrote, also one copied alone). python eval.py --help lists the keys.")
    except Mnist99Error as e:
        fail(str(e))
    out = Path(str(cfg.output_dir)).expanduser().resolve() if cfg.output_dir else eval_folder(run_dir, ckpt, Path(project_root()) / "outputs")
    if ckpt.parent != run_dir and out.is_relative_to(run_dir.resolve()):  # a run's folder (not where a lone .ckpt lies)
        fail(f"output_dir={cfg.output_dir} is inside the run's own folder: eval writes into a folder of its own, so that the "
             "run's folder stays as the run left it. Pick another folder, or leave output_dir out (a new one under outputs/evals/).")
    if out.exists() and not out.is_dir():
        fail(f"output_dir={cfg.output_dir} is a file: name a folder (made if it does not exist), or leave output_dir out.")
    from mnist99.evaluate import evaluate  # torch and Lightning, once the command is checked

    try:
        result = evaluate(run_dir, ckpt, top_losses=cfg.top_losses, output_dir=out)
    except Mnist99Error as e:
        fail(str(e))
    print(f"test/acc={result['test/acc']:.4f} test/loss={result['test/loss']:.4f}  ({result['checkpoint']})")
    print("per class: " + "  ".join(f"{c}: {a:.2%}" for c, a in result["per_class_acc"].items()))
    if result.get("note"):
        print(f"note: {result['note']}")
    print(f"wrote eval.yaml, confusion_matrix.png, top_losses.png into {shown(out)}")


def main() -> None:
    setup_process(quiet_lightning=True)
    new_folder.cache_clear()  # a new evaluation folder each time, also when called again in one process
    with stops_end("the evaluation"):
        sys.argv = checked_argv(sys.argv, "eval")
        hydra_main()


if __name__ == "__main__":
    main()
