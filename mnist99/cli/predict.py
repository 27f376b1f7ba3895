"""`python predict.py ckpt_path=<run dir or .ckpt> inputs=<images or folders> [csv=<file>]` /
`mnist99-predict`: classify pictures with a trained run (mnist99.predict), a line per image."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mnist99.cli import HYDRA_WHITELIST, checked_argv, stops_end, fail, setup_process
from mnist99.config import CONFIG_DIR
from mnist99.errors import Mnist99Error
from mnist99.locate import input_items, locate


@hydra.main(config_path=CONFIG_DIR, config_name="predict", execution_whitelist=HYDRA_WHITELIST)
def hydra_main(cfg: DictConfig) -> None:
    missing = [key for key in ("ckpt_path", "inputs") if OmegaConf.is_missing(cfg, key)]
    if missing:  # answered before torch loads, as a wrong ckpt_path is
        fail(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: python predict.py ckpt_path=<run dir or .ckpt> "
             "inputs=<image files or folders>. python predict.py --help lists the keys.")
    try:
        locate(str(cfg.ckpt_path))
        input_items(cfg.inputs)
        from mnist99.predict import predict, write_csv  # torch and Lightning, once the command is checked

        rows, names, bad = predict(str(cfg.ckpt_path), cfg.inputs, cfg.batch_size)
    except Mnist99Error as e:
        fail(str(e))
    width = max((len(str(p)) for p, *_ in rows), default=0)
    for p, label, prob, _ in rows:
        print(f"{str(p):<{width}}  {label}  {prob:.4f}")
    if cfg.csv:
        write_csv(Path(cfg.csv), rows, names)
        print(f"wrote {cfg.csv} ({len(rows)} rows)")
    if bad:
        print("\nmnist99: skipped files that are not readable images (fix or remove them):\n  " + "\n  ".join(bad), file=sys.stderr)
        sys.exit(1)


def quote_inputs(argv: list[str]) -> list[str]:
    """`inputs=a.png,b dir/` as typed (comma-separated, any characters) becomes the Hydra list
    `inputs=['a.png','b dir/']`; Hydra alone would read the commas as a sweep."""
    out = []
    for arg in argv:
        if arg.startswith("inputs=") and not arg[len("inputs="):].lstrip().startswith("["):
            items = [i.strip() for i in arg[len("inputs="):].split(",") if i.strip()]
            quoted = [f"'{i}'" if "'" not in i else f'"{i}"' for i in items]
            arg = f"inputs=[{','.join(quoted)}]"
        out.append(arg)
    return out


def main() -> None:
    setup_process(quiet_lightning=True)
    with stops_end("the predictions"):
        sys.argv = checked_argv(quote_inputs(sys.argv), "predict")
        hydra_main()


if __name__ == "__main__":
    main()
