"""Measure mnist99 side by side in one run and print a Markdown table (and write JSON).

    python scripts/benchmark.py                       # data path + load times + every model's training speed
    python scripts/benchmark.py --models cnn,resnet18 --steps 20 --json outputs/benchmark.json
    python scripts/benchmark.py --variant trainer.precision=bf16-mixed --variant model.compile=true
    python scripts/benchmark.py --gpu                 # the same on a GPU, with its speed switches (~5 min)
    python scripts/benchmark.py --load-only --data-dir data/fashion_png   # cold decode and warm load of any image folder

Figures:
- load: cold decode of every image (no cache) and warm load (from the cache), in seconds;
- data path: images/s of one full training epoch's batches with no model, mnist99's tensor path
  (uint8 batches indexed whole, turned into normalised floats) against torchvision's
  ImageFolder + DataLoader(num_workers) + ToTensor + Normalize on the same PNG tree;
- training: images/s of fwd+bwd+optimizer step per model, in a bare PyTorch loop and inside
  Lightning's Trainer (the framework's overhead is the gap); each --variant (overrides such as
  trainer.precision=bf16-mixed, model.compile=true) measured inside Lightning beside the plain run,
  with the seconds its first steps took (torch.compile compiles there);
- time to accuracy (--tta fast,accurate --seeds 5): training seconds until val/acc first reaches
  99.0% / 99.5% (checked at each validation), and the final test accuracy, per recipe over seeds;
- the time-to-accuracy figure (--plot docs/time_to_accuracy.png): test accuracy against training
  seconds per recipe, mean and spread over seeds, from the --tta runs or from finished runs
  (--runs outputs/multirun/A outputs/multirun/B, every completed run under them, grouped by
  experiment), with other tools' points beside them (--peer 'LABEL=SECONDS:ACCURACY'). The
  figure's data goes beside it as JSON (docs/time_to_accuracy.json), which --runs reads back like
  a run folder; a recipe found in a run folder replaces the same recipe from the JSON:

    python scripts/benchmark.py --runs docs/time_to_accuracy.json outputs/multirun/<new best> --plot docs/time_to_accuracy.png

    python scripts/benchmark.py --runs outputs/multirun/<fast> outputs/multirun/<accurate> outputs/multirun/<best> \
        --plot docs/time_to_accuracy.png --peer 'fastai ResNet-18, 1 epoch=860:98.89'
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import torch  # noqa: E402

import time_to_accuracy as tta  # noqa: E402
from mnist99.data.datamodule import ImageFolderDataModule, to_model_input  # noqa: E402
from mnist99.data.imagetree import decode, decode_split, list_split  # noqa: E402
from mnist99.data.splits import find_splits  # noqa: E402
from mnist99.run_info import machine  # noqa: E402

MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))  # every model=<name>
# The speed switches of a GPU, each measured against the plain float32 run (TF32 convolutions).
GPU_VARIANTS = ["trainer.precision=bf16-mixed", "trainer.precision=16-mixed", "trainer.benchmark=true", "model.compile=true"]


# where a run keeps its decoded splits (conf/paths: $MNIST99_CACHE, else data/.cache)
CACHE_DIR = Path(os.environ.get("MNIST99_CACHE") or ROOT / "data" / ".cache")


def load_times(data_dir: Path, repeats: int = 3) -> dict:
    """Cold: decoding every image of both splits (no cache); warm: a datamodule's setup() from the
    cache, the best of `repeats` (a shared machine's noise only ever adds)."""
    t = time.perf_counter()
    for split in find_splits(data_dir):
        decode_split(list_split(split))
    cold = time.perf_counter() - t
    ImageFolderDataModule(data_dir, val_size=0, cache_dir=CACHE_DIR).setup()  # makes sure the cache exists
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        dm = ImageFolderDataModule(data_dir, val_size=0, cache_dir=CACHE_DIR)
        dm.setup()
        warm.append(time.perf_counter() - t)
    return {"cold_decode_s": cold, "warm_load_s": min(warm), "images": len(dm.data_train) + len(dm.data_test)}


def epoch_rate(loader, device: str, max_batches: int | None = None) -> float:
    """Images/s of one training epoch's batches, made into normalised floats on `device`."""
    n, t = 0, time.perf_counter()
    for i, (x, y) in enumerate(loader):
        x = to_model_input(x.to(device, non_blocking=True))
        n += len(y)
        if max_batches and i + 1 >= max_batches:
            break
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def tensor_path_rate(data_dir: Path, batch_size: int, device: str) -> float:
    """mnist99's path (splits decoded once, batches indexed whole); on a GPU with the whole dataset
    on it (data.on_device=true)."""
    dm = ImageFolderDataModule(data_dir, batch_size=batch_size, val_size=0, cache_dir=CACHE_DIR)
    dm.setup()
    ds = dm.data_train
    ds.images, ds.labels = ds.images.to(device), ds.labels.to(device)
    return epoch_rate(dm.train_dataloader(), device)


def decode_tensor(path: str, size: int, channels: int) -> torch.Tensor:
    """One image file as the uint8 (channels, size, size) tensor the tensor path indexes."""
    return torch.from_numpy(decode(Path(path), size, channels)[0].copy())


def image_folder(root: Path, size: int = 28, channels: int = 1):
    """torchvision's ImageFolder on `root`, decoding one image per `__getitem__` (the classic path)
    into the uint8 tensor mnist99's cache holds, its samples in mnist99's order (so that both make
    the same hold-out split): (dataset, classes)."""
    from torchvision.datasets import ImageFolder

    listing = list_split(root)  # the same checks and order as the tensor path
    ds = ImageFolder(str(root), loader=functools.partial(decode_tensor, size=size, channels=channels))
    ds.samples = ds.imgs = [(str(root / f), label) for f, label in zip(listing.files, listing.labels)]
    ds.targets = list(listing.labels)
    return ds, listing.classes


def imagefolder_rate(data_dir: Path, batch_size: int, workers: int, max_batches: int | None, device: str) -> float:
    """The classic path: torchvision's ImageFolder + DataLoader(num_workers), a PNG decoded per image."""
    from torch.utils.data import DataLoader

    train, _ = image_folder(find_splits(data_dir)[0])
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    return epoch_rate(loader, device, max_batches)


def compose_cfg(*overrides: str):
    """conf/train.yaml composed with `overrides`, registered as Hydra's current config as in a run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from mnist99.config import CONFIG_DIR, expand_shorthands, register_resolvers

    register_resolvers()
    overrides = expand_shorthands(list(overrides))  # trainer.gpus=1
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=["logger=none", "trainer.enable_progress_bar=false", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = f"/tmp/mnist99-bench/{os.getpid()}"
        cfg.hydra.job.num = 0  # as a single run has it (compose leaves it ???, which a resolved config cannot hold)
    HydraConfig.instance().set_config(cfg)
    return cfg


def bare_rate(model: str, data_dir: Path, batch_size: int, steps: int, warmup: int = 3) -> float:
    """Images/s of the model's own compute on real batches, in a plain PyTorch loop."""
    from mnist99.build import build_model
    from mnist99.models.classifier import ScratchLinear
    from mnist99.models.optim import optimizer_from_config, param_groups
    from mnist99.trusted import instantiate

    cfg = compose_cfg(f"model={model}", f"data.data_dir={data_dir}", f"data.batch_size={batch_size}", "data.val_size=0", "callbacks=none")
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup()
    device = "cuda" if torch.cuda.is_available() else "cpu"

    # bare PyTorch: the model's own compute on real batches
    module = build_model(cfg).to(device)
    if isinstance(module, ScratchLinear):
        opt = module.configure_optimizers()["optimizer"]
    else:
        factory, decay_norm_and_bias = optimizer_from_config(cfg.optimizer)
        opt = factory(params=param_groups(module, decay_norm_and_bias))
    batches = iter(dm.train_dataloader())
    for i in range(warmup + steps):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
        x, y = next(batches)
        x, y = dm.on_after_batch_transfer((x.to(device), y.to(device)), 0)
        loss = module.loss(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t)


def lightning_rate(model: str, data_dir: Path, batch_size: int, steps: int, overrides: list[str], warmup: int = 3) -> dict:
    """Images/s of the same steps inside Lightning (metrics, logging, hooks), with the run's own
    trainer config plus `overrides`, timed from the warm-up's end; and the warm-up's seconds."""
    import lightning as L

    from mnist99.build import build_model
    from mnist99.config import validate
    from mnist99.trusted import instantiate

    cfg = compose_cfg(f"model={model}", f"data.data_dir={data_dir}", f"data.batch_size={batch_size}", "data.val_size=0",
                      "callbacks=none", *overrides)
    validate(cfg)  # e.g. trainer.gpus=1 on a machine without CUDA: one paragraph, not a traceback
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    dm = instantiate(cfg.data, _convert_="all")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                sync()
                self.t0 = time.perf_counter()
            if batch_idx == warmup:
                sync()
                self.t = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            sync()
            self.rate = steps * batch_size / (time.perf_counter() - self.t)
            self.warmup_s = self.t - self.t0

    clock = Clock()
    trainer = instantiate(cfg.trainer, max_epochs=1, limit_train_batches=warmup + steps, limit_val_batches=0, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          num_sanity_val_steps=0, callbacks=[clock], devices=1)
    trainer.fit(build_model(cfg), datamodule=dm)
    return {"lightning_img_s": clock.rate, "first_steps_s": clock.warmup_s}


def training_rates(model: str, data_dir: Path, batch_size: int, steps: int, variants: list[str]) -> dict:
    bare = bare_rate(model, data_dir, batch_size, steps)
    plain = lightning_rate(model, data_dir, batch_size, steps, [])
    out = {"bare_img_s": bare, **plain, "framework_overhead": 1 - plain["lightning_img_s"] / bare, "variants": {}}
    for v in variants:
        try:
            out["variants"][v] = lightning_rate(model, data_dir, batch_size, steps, v.split())
        except Exception as e:  # noqa: BLE001 - a switch this machine cannot run is a result too
            out["variants"][v] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        print(f"    {model} {v}: {out['variants'][v]}", file=sys.stderr)
    return out


def time_to_accuracy(experiment: str, data_dir: Path, seeds: int, extra: list[str], thresholds=(0.99, 0.995)) -> dict:
    """Each seed of `experiment` trained in-process: seconds to each val/acc threshold, the
    validation curve, fit seconds and test accuracy."""
    from mnist99.callbacks import TimeToAccuracy
    from mnist99.pipeline import run

    runs = []
    for seed in range(seeds):
        clock = TimeToAccuracy(thresholds)
        cfg = compose_cfg(f"experiment={experiment}", f"seed={seed}", f"data.data_dir={data_dir}", *extra)
        outcome = run(cfg, callbacks=[clock])
        if outcome.status != "completed":
            sys.exit(f"{experiment} seed {seed}: {outcome.message or outcome.error}")
        metrics = outcome.metrics
        runs.append({"seed": seed, "test_acc": metrics.get("test/acc"), "fit_s": metrics["fit_seconds"],
                     **{f"s_to_{t}": clock.reached.get(t) for t in thresholds},
                     "curve": clock.curve if cfg.data.val_size == 0 else []})  # val is testing/ only then
        print(f"  {experiment} seed {seed}: {runs[-1]}", file=sys.stderr)
    return {"runs": runs, "thresholds": list(thresholds)}


def mean_std(values: list) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "never"
    t = torch.tensor(vals, dtype=torch.float64)
    missed = f" ({len(values) - len(vals)} of {len(values)} never)" if len(vals) < len(values) else ""
    return f"{t.mean():.1f} ± {t.std() if len(vals) > 1 else 0:.1f}{missed}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=ROOT / "data" / "mnist_png")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=30, help="timed training steps per model")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader workers for the ImageFolder baseline")
    p.add_argument("--classic-batches", type=int, default=0, help="limit the ImageFolder epoch to N batches (0: full epoch)")
    p.add_argument("--tta", default="", help="recipes (experiment names) to time to 99.0%% / 99.5%%, e.g. fast,accurate")
    p.add_argument("--seeds", type=int, default=3, help="seeds per --tta recipe")
    p.add_argument("--skip-speed", action="store_true", help="only the --tta part")
    p.add_argument("--load-only", action="store_true", help="only the cold decode and the warm load")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an extra override for the --tta runs (repeatable)")
    p.add_argument("--variant", action="append", default=[], metavar="OVERRIDES",
                   help="space-separated overrides measured beside each model's plain run (repeatable)")
    p.add_argument("--gpu", action="store_true", help="on the GPU: its speed switches as variants, sized for ~5 minutes")
    p.add_argument("--runs", nargs="+", type=Path, default=[], metavar="DIR|JSON",
                   help="finished runs to summarise and plot instead of training (folders searched for run.yaml, "
                        "or the JSON a --plot wrote)")
    p.add_argument("--plot", type=Path, default=None, help="write the time-to-accuracy figure here (PNG), and its data beside it (JSON)")
    p.add_argument("--peer", action="append", default=[], metavar="LABEL=SECONDS:ACCURACY",
                   help="another tool's result to draw beside the recipes, accuracy in %% (repeatable)")
    p.add_argument("--json", type=Path, default=None, help="where to write the JSON (default outputs/benchmark/<time>.json)")
    args = p.parse_args()
    try:
        peers = [tta.Peer.parse(x) for x in args.peer]
    except ValueError as e:
        p.error(str(e))
    if args.runs:
        return from_runs(args.runs, args.plot, peers)
    if args.gpu:
        if not torch.cuda.is_available():
            p.error("--gpu: PyTorch sees no CUDA device here")
        args.variant = args.variant or GPU_VARIANTS
        if args.models == ",".join(MODELS):
            args.models = "linear,cnn,resnet18"
    device = "cuda" if torch.cuda.is_available() else "cpu"

    ImageFolderDataModule(args.data_dir).prepare_data()  # MNIST built where the folder is missing or empty
    import logging
    import warnings

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    result: dict = {"machine": f"{machine()}, torch {torch.__version__}", "batch_size": args.batch_size}
    if args.load_only:
        load = result["load"] = load_times(args.data_dir)
        print(f"\n**Machine:** {result['machine']}\n\n| data | figure |\n| --- | --- |")
        print(f"| cold decode of {load['images']:,} images | {load['cold_decode_s']:.1f} s |")
        print(f"| warm load from the cache (best of 3) | {load['warm_load_s']:.2f} s |")
        return
    if not args.skip_speed:
        result["load"] = load_times(args.data_dir)
        fast = tensor_path_rate(args.data_dir, args.batch_size, device)
        classic = imagefolder_rate(args.data_dir, args.batch_size, args.workers, args.classic_batches or None, device)
        result["data_path"] = {"mnist99_img_s": fast, "imagefolder_img_s": classic, "ratio": fast / classic,
                               "workers": args.workers, "device": device}
        result["training"] = {}
        for model in [m for m in args.models.split(",") if m]:
            result["training"][model] = training_rates(model, args.data_dir, args.batch_size, args.steps, args.variant)
            print(f"  {model}: {result['training'][model]['lightning_img_s']:.0f} img/s", file=sys.stderr)
    result["time_to_accuracy"] = {e: time_to_accuracy(e, args.data_dir, args.seeds, args.set) for e in args.tta.split(",") if e}

    out = args.json or ROOT / "outputs" / "benchmark" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    print(f"\n**Machine:** {result['machine']}; batch size {args.batch_size}\n")
    if not args.skip_speed:
        print_speed(result)
    if result["time_to_accuracy"]:
        print("| recipe | seeds | s to val/acc 99.0% | s to val/acc 99.5% | fit s | test/acc |\n| --- | --- | --- | --- | --- | --- |")
        for e, r in result["time_to_accuracy"].items():
            runs = r["runs"]
            accs = torch.tensor([x["test_acc"] for x in runs], dtype=torch.float64) * 100
            acc = f"{accs.mean():.2f} ± {accs.std() if len(runs) > 1 else 0:.2f}%"
            print(f"| {e} | {len(runs)} | {mean_std([x['s_to_0.99'] for x in runs])} | {mean_std([x['s_to_0.995'] for x in runs])} "
                  f"| {mean_std([x['fit_s'] for x in runs])} | {acc} |")
    if args.plot and result["time_to_accuracy"]:
        here = machine()
        runs = [tta.Run(e, x["seed"], x["test_acc"], x["fit_s"], [tuple(c) for c in x["curve"]], here)
                for e, r in result["time_to_accuracy"].items() for x in r["runs"]]
        write_plot(args.plot, tta.by_recipe(runs), peers)
    print(f"\nJSON: {out}")


def from_runs(sources: list[Path], plot: Path | None, peers: list) -> None:
    """--runs: the recipes' figures from finished runs (or a figure's JSON), as a table and (with
    --plot) the figure."""
    missing = [str(f) for f in sources if not f.exists()]
    if missing:
        sys.exit(f"benchmark.py: error: no such run folder or JSON file: {', '.join(missing)}")
    try:
        groups = tta.by_recipe(tta.runs_from(sources))
    except ValueError as e:
        sys.exit(f"benchmark.py: error: {e}")
    if not groups:
        sys.exit(f"benchmark.py: error: no completed, tested run (run.yaml with test/acc) under {', '.join(map(str, sources))}")
    print(tta.summary(groups))
    if plot:
        write_plot(plot, groups, peers)


def write_plot(path: Path, groups: dict, peers: list) -> None:
    """The figure, titled with the machines the runs trained on, and its data as JSON beside it."""
    runs = [r for group in groups.values() for r in group]
    where = "; ".join(dict.fromkeys(r.machine for r in runs if r.machine)) or machine()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = tta.figure(groups, peers, title=f"test accuracy against training time, {where}")
    fig.savefig(path)
    tta.pyplot().close(fig)
    tta.save(path.with_suffix(".json"), runs)
    print(f"\nFigure: {path} (its data: {path.with_suffix('.json')})")


def print_speed(result: dict) -> None:
    load, dp = result["load"], result["data_path"]
    print("| data | figure |\n| --- | --- |")
    print(f"| cold decode of {load['images']:,} images | {load['cold_decode_s']:.1f} s |")
    print(f"| warm load from the cache (best of 3) | {load['warm_load_s']:.2f} s |")
    where = " (on the GPU)" if dp.get("device") == "cuda" else ""
    print(f"| mnist99's tensor path, one epoch of batches{where} | {dp['mnist99_img_s']:,.0f} img/s |")
    print(f"| ImageFolder + DataLoader({dp['workers']} workers), a PNG per image | {dp['imagefolder_img_s']:,.0f} img/s |")
    print(f"| ratio | {dp['ratio']:.0f}x |\n")
    print("| model | bare PyTorch img/s | in Lightning img/s | framework overhead |\n| --- | --- | --- | --- |")
    for model, r in result["training"].items():
        print(f"| {model} | {r['bare_img_s']:,.0f} | {r['lightning_img_s']:,.0f} | {r['framework_overhead']:.0%} |")
    print()
    variants = sorted({v for r in result["training"].values() for v in r.get("variants", {})})
    if variants:
        print("| model | switch | in Lightning img/s | vs plain | first 3 steps s |\n| --- | --- | --- | --- | --- |")
        for model, r in result["training"].items():
            print(f"| {model} | (plain) | {r['lightning_img_s']:,.0f} | 1.00x | {r['first_steps_s']:.1f} |")
            for v in variants:
                x = r["variants"].get(v, {})
                if "error" in x:
                    print(f"| {model} | `{v}` | failed: {x['error']} | | |")
                elif x:
                    print(f"| {model} | `{v}` | {x['lightning_img_s']:,.0f} | {x['lightning_img_s'] / r['lightning_img_s']:.2f}x | {x['first_steps_s']:.1f} |")
        print()


if __name__ == "__main__":
    main()
