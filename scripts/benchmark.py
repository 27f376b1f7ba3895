"""Measure mnist99 side by side in one run and print a Markdown table (and write JSON).

    python scripts/benchmark.py                       # data path + load times + every model's training speed
    python scripts/benchmark.py --models cnn,resnet18 --steps 20 --json outputs/benchmark.json

Figures:
- load: cold decode of every PNG (no cache) and warm load (from the cache), in seconds;
- data path: images/s of one full training epoch's batches with no model, mnist99's tensor path
  (uint8 batches indexed whole, turned into normalised floats) against torchvision's
  ImageFolder + DataLoader(num_workers) + ToTensor + Normalize on the same PNG tree;
- training: images/s of fwd+bwd+optimizer step per model, in a bare PyTorch loop and inside
  Lightning's Trainer (the framework's overhead is the gap);
- time to accuracy (--tta fast,accurate --seeds 5): training seconds until val/acc first reaches
  99.0% / 99.5% (checked at each validation), and the final test accuracy, per recipe over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mnist99.data.datamodule import MNISTDataModule, to_model_input  # noqa: E402
from mnist99.data.pngtree import decode_split, list_split  # noqa: E402

MODELS = ["linear_scratch", "linear", "mlp", "cnn", "resnet18", "resnet34", "resnet50", "resnet152"]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


def load_times(data_dir: Path) -> dict:
    t = time.perf_counter()
    for split in ("training", "testing"):
        decode_split(list_split(data_dir / split))
    cold = time.perf_counter() - t
    MNISTDataModule(data_dir, val_size=0).setup()  # makes sure the cache exists
    t = time.perf_counter()
    dm = MNISTDataModule(data_dir, val_size=0)
    dm.setup()
    warm = time.perf_counter() - t
    return {"cold_decode_s": cold, "warm_load_s": warm, "images": len(dm.data_train) + len(dm.data_test)}


def tensor_path_rate(data_dir: Path, batch_size: int) -> float:
    dm = MNISTDataModule(data_dir, batch_size=batch_size, val_size=0)
    dm.setup()
    n, t = 0, time.perf_counter()
    for x, y in dm.train_dataloader():
        x = to_model_input(x)
        n += len(y)
    return n / (time.perf_counter() - t)


def imagefolder_rate(data_dir: Path, batch_size: int, workers: int, max_batches: int | None) -> float:
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Grayscale(), transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = torch.utils.data.DataLoader(
        datasets.ImageFolder(str(data_dir / "training"), transform=tf), batch_size=batch_size, shuffle=True, num_workers=workers
    )
    n, t = 0, time.perf_counter()
    for i, (x, y) in enumerate(loader):
        n += len(y)
        if max_batches and i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t)


def compose_cfg(*overrides: str):
    """conf/train.yaml composed with `overrides`, registered as Hydra's current config as in a run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from mnist99.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["logger=none", "trainer.enable_progress_bar=false", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = f"/tmp/mnist99-bench/{os.getpid()}"
    HydraConfig.instance().set_config(cfg)
    return cfg


def training_rates(model: str, data_dir: Path, batch_size: int, steps: int, warmup: int = 3) -> dict:
    import lightning as L
    from hydra.utils import instantiate

    from mnist99.models.classifier import ScratchLinear
    from mnist99.train import build_model

    cfg = compose_cfg(f"model={model}", f"data.data_dir={data_dir}", f"data.batch_size={batch_size}", "data.val_size=0", "callbacks=none")
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup()
    device = "cuda" if torch.cuda.is_available() else "cpu"

    # bare PyTorch: the model's own compute on real batches
    module = build_model(cfg).to(device)
    opt = module.configure_optimizers() if isinstance(module, ScratchLinear) else instantiate(cfg.optimizer)(params=module.parameters())
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
    bare = steps * batch_size / (time.perf_counter() - t)

    # the same inside Lightning (metrics, logging, hooks), timed from the warm-up's end
    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                if device == "cuda":
                    torch.cuda.synchronize()
                self.t = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            if device == "cuda":
                torch.cuda.synchronize()
            self.rate = steps * batch_size / (time.perf_counter() - self.t)

    clock = Clock()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=warmup + steps, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[clock], accelerator="auto", devices=1)
    trainer.fit(build_model(cfg), datamodule=dm)
    return {"bare_img_s": bare, "lightning_img_s": clock.rate, "framework_overhead": 1 - clock.rate / bare}


def time_to_accuracy(experiment: str, data_dir: Path, seeds: int, extra: list[str], thresholds=(0.99, 0.995)) -> dict:
    from mnist99.callbacks import TimeToAccuracy
    from mnist99.train import train

    runs = []
    for seed in range(seeds):
        clock = TimeToAccuracy(thresholds)
        cfg = compose_cfg(f"experiment={experiment}", f"seed={seed}", f"data.data_dir={data_dir}", *extra)
        metrics = train(cfg, extra_callbacks=[clock])
        runs.append({"seed": seed, "test_acc": metrics.get("test/acc"), "fit_s": metrics["fit_seconds"],
                     **{f"s_to_{t}": clock.reached.get(t) for t in thresholds}})
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
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an extra override for the --tta runs (repeatable)")
    p.add_argument("--json", type=Path, default=None, help="where to write the JSON (default outputs/benchmark/<time>.json)")
    args = p.parse_args()

    from mnist99.data.prepare import prepare_mnist_png

    prepare_mnist_png(args.data_dir)
    import logging
    import warnings

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    result: dict = {"machine": machine(), "batch_size": args.batch_size}
    if not args.skip_speed:
        result["load"] = load_times(args.data_dir)
        fast = tensor_path_rate(args.data_dir, args.batch_size)
        classic = imagefolder_rate(args.data_dir, args.batch_size, args.workers, args.classic_batches or None)
        result["data_path"] = {"mnist99_img_s": fast, "imagefolder_img_s": classic, "ratio": fast / classic, "workers": args.workers}
        result["training"] = {}
        for model in [m for m in args.models.split(",") if m]:
            result["training"][model] = training_rates(model, args.data_dir, args.batch_size, args.steps)
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
    print(f"\nJSON: {out}")


def print_speed(result: dict) -> None:
    load, dp = result["load"], result["data_path"]
    print("| data | figure |\n| --- | --- |")
    print(f"| cold decode of {load['images']:,} PNGs | {load['cold_decode_s']:.1f} s |")
    print(f"| warm load from the cache | {load['warm_load_s']:.2f} s |")
    print(f"| mnist99 tensor path, one epoch of batches | {dp['mnist99_img_s']:,.0f} img/s |")
    print(f"| ImageFolder + DataLoader({dp['workers']} workers) + ToTensor | {dp['imagefolder_img_s']:,.0f} img/s |")
    print(f"| ratio | {dp['ratio']:.0f}x |\n")
    print("| model | bare PyTorch img/s | in Lightning img/s | framework overhead |\n| --- | --- | --- | --- |")
    for model, r in result["training"].items():
        print(f"| {model} | {r['bare_img_s']:,.0f} | {r['lightning_img_s']:,.0f} | {r['framework_overhead']:.0%} |")
    print()


if __name__ == "__main__":
    main()
