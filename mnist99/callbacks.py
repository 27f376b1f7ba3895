"""Callbacks of mnist99's own."""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelSummary, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.flop_counter import FlopCounterMode
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist99.errors import DivergedError, Interrupted
from mnist99.stopping import stopped_by

log = logging.getLogger(__name__)


class TimeToAccuracy(L.Callback):
    """The training seconds (since fit started, validation included) at which `val/acc` first
    reached each threshold, checked at every validation; and `curve`, every validation's
    (seconds, val/acc)."""

    def __init__(self, thresholds: Sequence[float] = (0.99, 0.995)):
        self.thresholds = tuple(thresholds)
        self.reached: dict[float, float] = {}
        self.curve: list[tuple[float, float]] = []  # (seconds, val/acc) at every validation
        self.start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.reached, self.curve = time.perf_counter(), {}, []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if trainer.sanity_checking or acc is None:
            return
        self.curve.append((time.perf_counter() - self.start, float(acc)))
        for t in self.thresholds:
            if t not in self.reached and float(acc) >= t:
                self.reached[t] = time.perf_counter() - self.start


class EpochSeconds(L.Callback):
    """`time/epoch_seconds`: the wall time of each training epoch with its validation (what
    fastai's `time` column shows), in the logger beside the epoch's metrics."""

    def __init__(self):
        self.start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation at the epoch's end has run by now (Lightning validates before this hook)
        pl_module.log("time/epoch_seconds", time.perf_counter() - self.start)


class FitStart(L.Callback):
    """When the fit proper starts, the Trainer having prepared and set up the data: `start` (fit
    time counts from there: reading and decoding the data is not fitting), and then the count of
    images data.on_bad_image=skip left out goes into the logs, as data/skipped_images."""

    def __init__(self):
        self.start: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()
        skipped = len(getattr(trainer.datamodule, "skipped", ()))
        if skipped:
            for logger in trainer.loggers:
                logger.log_metrics({"data/skipped_images": skipped}, step=0)


class ImagesPerSecondBar(RichProgressBar):
    """Lightning's rich progress bar, with the training images per second of the epoch so far
    (time since the epoch began, so data loading and logging count too)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen, self.start = 0, 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen, self.start = 0, time.perf_counter()
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.seen += len(batch[1])
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the run is named by its folder
        elapsed = time.perf_counter() - self.start
        if trainer.training and self.seen and elapsed > 0:
            items["img/s"] = f"{self.seen / elapsed:,.0f}"
        return items


def human(n: float) -> str:
    """1234 -> 1.2 K, 898560 -> 0.90 M, 1.8e9 -> 1.80 G."""
    for unit, size in (("G", 1e9), ("M", 1e6)):
        if n >= size * 0.1 and (unit == "M" or n >= size):
            return f"{n / size:.2f} {unit}"
    return f"{n / 1e3:.1f} K" if n >= 1000 else f"{n:.0f}"


def shape_text(t) -> str:
    t = t[0] if isinstance(t, (tuple, list)) and t else t
    return "x".join(str(d) for d in t.shape[1:]) if isinstance(t, torch.Tensor) else ""


def kind(m: nn.Module) -> str:
    """A layer's type; a plain Sequential's by what it holds: Conv2d+BatchNorm2d+ReLU, 2 x BasicBlock."""
    if type(m) is not nn.Sequential or not len(m):
        return type(m).__name__
    names = [type(c).__name__ for c in m]
    if len(set(names)) == 1 and len(names) > 1:
        return f"{len(names)} x {names[0]}"
    return "+".join(names) if len(names) <= 4 else f"Sequential of {len(names)}"


def layers(net: nn.Module, max_depth: int) -> list[tuple[str, nn.Module]]:
    """The submodules `max_depth` deep, and those less deep that hold no others."""
    rows = []
    for name, m in net.named_modules():
        depth = name.count(".") + 1 if name else 0
        if depth == max_depth or (0 < depth < max_depth and not any(True for _ in m.children())):
            rows.append((name, m))
    return rows


def summary_lines(model: nn.Module, in_channels: int = 1, image_size: int = 28, max_depth: int = 1) -> list[str]:
    """The model in a few lines: its net's layers `max_depth` deep (those with neither parameters
    nor multiply-adds, such as ReLU, pooling and Flatten, named at the end instead), each with its
    parameters, multiply-adds per image and output shape, and the totals. A model without a `net`
    (linear_scratch) shows its own parameters. Multiply-adds are counted as nets.count_macs counts
    them (convolutions and matrix products, one image), by torch's FlopCounterMode, so matrix
    products written out (x @ w) count too."""
    net = getattr(model, "net", None)
    net = net if isinstance(net, nn.Module) else model
    params = [p for p in net.parameters()]
    n_params = sum(p.numel() for p in params)
    n_trainable = sum(p.numel() for p in params if p.requires_grad)
    first = next((p for p in params if p.is_floating_point()), None)
    x = torch.zeros(1, in_channels, image_size, image_size,
                    device=first.device if first is not None else "cpu", dtype=first.dtype if first is not None else None)

    rows: list[tuple[str, nn.Module]] = []
    if net is not model:
        rows = layers(net, max_depth)
        while len(rows) < 3 and max_depth < 4 and any(len(list(m.children())) for _, m in rows):
            max_depth += 1  # a net of one or two blocks (fastai's body + head): the blocks' layers
            rows = layers(net, max_depth)
        rows = rows or [("net", net)]
    shapes: dict[str, str] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, shape_text(out))) for name, m in rows]
    modes = {m: m.training for m in model.modules()}
    model.eval()  # no BatchNorm statistics updated, no dropout drawn: the run's state stays as it is
    counter, out = FlopCounterMode(display=False), None
    try:
        with torch.no_grad(), counter:
            out = net(x)
    except Exception as e:  # noqa: BLE001 - a summary never stops a run: the training step will say what is wrong
        log.debug("The model summary's forward pass of a %s image failed: %s", tuple(x.shape[1:]), e)
        shapes.clear()
    finally:
        for m, training in modes.items():
            m.train(training)
        for h in hooks:
            h.remove()
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()} if out is not None else {}
    root = type(net).__name__
    total_macs = flops.get("Global", 0) // 2

    trainable = "" if n_trainable == n_params else f" ({n_trainable:,} trainable)"
    cost = (f"{human(total_macs)} multiply-adds per {in_channels}x{image_size}x{image_size} image, {shape_text(out)} outputs"
            if out is not None else f"multiply-adds unknown (it takes no {in_channels}x{image_size}x{image_size} image)")
    lines = [f"Model: {root}, {n_params:,} parameters{trainable}, {cost}"]
    table, hidden = [], []
    if net is model:  # its own parameters, no layers
        table = [(name, f"Parameter {'x'.join(map(str, p.shape))}", f"{p.numel():,}", "", "") for name, p in
                 model.named_parameters() if "." not in name]
    for name, m in rows:
        n = sum(p.numel() for p in m.parameters())
        macs = flops.get(f"{root}.{name}", 0) // 2
        if n == 0 and macs == 0:
            if type(m).__name__ not in hidden:
                hidden.append(type(m).__name__)
            continue
        table.append((f"net.{name}" if name != "net" else name, kind(m), f"{n:,}", human(macs) if macs else "", shapes.get(name, "")))
    if table:
        table = [("layer", "type", "params", "mult-adds", "output"), *table]
        widths = [max(len(r[i]) for r in table) for i in range(5)]
        for r in table:
            cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]), r[3].rjust(widths[3]), r[4]]
            lines.append(("  " + "  ".join(cells)).rstrip())
    if hidden:
        lines.append(f"  not shown: {', '.join(hidden)} (no parameters, no multiply-adds)")
    return lines


class NetSummary(ModelSummary):
    """The model summary at the start of fitting, in mnist99's words: the net's layers with their
    parameters and multiply-adds per image (summary_lines), instead of Lightning's table of every
    submodule, whose torchmetrics rows (train_acc, ..., val_acc_best) hold nothing and whose FLOPs
    column reads 0. Being a ModelSummary, it keeps Lightning from adding its own;
    trainer.enable_model_summary=false leaves it out (build_callbacks), max_depth=0 too."""

    def __init__(self, max_depth: int = 1):
        super().__init__(max_depth=max_depth)
        self.depth = max_depth

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.depth or not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        in_channels = int(getattr(pl_module, "in_channels", None) or getattr(dm, "model_channels", 1) or 1)
        image_size = int(getattr(dm, "image_size", None) or getattr(pl_module, "image_size", 28))
        log.info("\n".join(summary_lines(pl_module, in_channels, image_size, self.depth)))


class EMA(L.Callback):
    """An exponential moving average of the weights (and BatchNorm buffers), validated, saved and
    tested in place of the raw weights, updated with torch's foreach EMA update every
    `every_n_steps` optimizer steps from `start_step` on (earlier weights are far from their final
    values). Until averaging starts, the raw weights are the model: validated, saved and kept at the end.

    Its own averaging on torch's AveragedModel, not a subclass of Lightning's WeightAveraging, whose
    public API cannot do what this needs: it offers no way to ask whether the average has taken in
    any weights yet (before `start_step` it would validate, save and end the run with the random
    initial weights it was copied from), nor to reach the average at all, and its checkpoint loading
    puts the raw training weights back into the model even when a checkpoint is being tested.
    Lightning's own EMAWeightAveraging also updates tensor by tensor in a Python loop (~140 small
    operations a step for model=stack_cnn); the foreach version does the same in a handful.

    Checkpoints are laid out as Lightning's WeightAveraging lays them out, so eval, predict and
    ensembles read the average and older checkpoints still resume: `state_dict` holds the averaged
    weights, `current_model_state` the raw training weights and `averaging_state` the average's
    count. One saved before averaging started holds the raw weights alone, as a run without EMA does.
    """

    def __init__(self, decay: float = 0.999, start_step: int = 0, every_n_steps: int = 1):
        if not 0 < decay < 1 or start_step < 0 or every_n_steps < 1:
            raise ValueError(f"impossible EMA settings: decay={decay}, start_step={start_step}, every_n_steps={every_n_steps}")
        self.decay, self.start_step, self.every_n_steps = decay, start_step, every_n_steps
        self.average: AveragedModel | None = None  # made when fitting starts
        self.updated_at = 0  # trainer.global_step of the last update (one update per optimizer step at most)

    def should_update(self, step_idx: int) -> bool:
        """After the optimizer step `step_idx` (zero-based)?"""
        return step_idx >= self.start_step and step_idx % self.every_n_steps == 0

    @property
    def started(self) -> bool:
        """Has the average taken in any weights yet?"""
        return self.average is not None and int(self.average.n_averaged) > 0

    def averaged_state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights and buffers under the model's own names (empty before averaging starts)."""
        if not self.started:
            return {}
        prefix = "module."
        return {k[len(prefix):]: v for k, v in self.average.state_dict().items() if k.startswith(prefix)}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # a copy of the model, whose weights the first update replaces
            self.average = AveragedModel(pl_module, device=pl_module.device, use_buffers=True,
                                         multi_avg_fn=get_ema_multi_avg_fn(self.decay))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        # global_step counts optimizer steps: with accumulate_grad_batches=N, it moves every N batches
        if self.average is not None and trainer.global_step > self.updated_at and self.should_update(step_idx=trainer.global_step - 1):
            self.average.update_parameters(pl_module)
            self.updated_at = trainer.global_step

    def tensors(self, module: nn.Module) -> list[torch.Tensor]:
        return [*module.parameters(), *module.buffers()]

    @torch.no_grad()
    def swap(self, pl_module: L.LightningModule) -> None:
        for averaged, current in zip(self.tensors(self.average.module), self.tensors(pl_module)):
            raw = current.clone()
            current.copy_(averaged)
            averaged.copy_(raw)

    # validation swaps the average in and back out: no training step runs in between
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started:
            self.swap(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started:
            self.swap(pl_module)

    @torch.no_grad()
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started:  # the model ends the run with the average
            for averaged, current in zip(self.tensors(self.average.module), self.tensors(pl_module)):
                current.copy_(averaged)

    def state_dict(self) -> dict:
        return {"latest_update_step": self.updated_at}  # WeightAveraging's name: older checkpoints resume

    def load_state_dict(self, state_dict: dict) -> None:
        self.updated_at = int(state_dict.get("latest_update_step", 0))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if not self.started:
            return
        state = self.average.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = self.averaged_state_dict()
        checkpoint["averaging_state"] = {k: v for k, v in state.items() if not k.startswith("module.")}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Resuming a fit restores both the raw and the averaged weights. Testing a checkpoint
        # evaluates its averaged weights (its state_dict), which Lightning has loaded already. A fit
        # from a checkpoint saved before averaging started starts the average afresh at start_step.
        if trainer.state.fn != TrainerFn.FITTING or self.average is None:
            return
        if "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            self.average.load_state_dict({**{f"module.{k}": v for k, v in checkpoint["state_dict"].items()},
                                          **checkpoint["averaging_state"]})
            pl_module.load_state_dict(checkpoint["current_model_state"])


class StopOnDivergence(L.Callback):
    """Stops a run whose training loss diverged, naming the step and the likely cause.

    Diverged means a loss that is not a finite number (stopped at that step), or a running mean of
    the loss (about the last 10 steps) above `explode_factor` times a random guess's loss,
    ln(num_classes): 115 for MNIST, where a sane run stays below 3 after its first steps.

    Checked every step when the loss is on the CPU; on a GPU every `gpu_every_n_steps` steps, since
    reading the loss makes the CPU wait for the GPU. Checkpoints already written stay as they are.
    """

    def __init__(self, lr: float | None = None, explode_factor: float = 50.0, gpu_every_n_steps: int = 10):
        self.lr, self.explode_factor, self.gpu_every_n_steps = lr, explode_factor, gpu_every_n_steps
        self.mean: torch.Tensor | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.mean = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        value = loss.detach().float().mean()
        self.mean = value if self.mean is None else self.mean.lerp(value, 0.1)
        if loss.device.type != "cpu" and batch_idx % self.gpu_every_n_steps:
            return
        limit = self.explode_factor * math.log(getattr(pl_module, "num_classes", 10))
        if not bool(torch.isfinite(value)):
            raise DivergedError(self.message(trainer, f"became {float(value)}"))
        if float(self.mean) > limit:
            guess = limit / self.explode_factor
            raise DivergedError(self.message(trainer, f"averaged {float(self.mean):.4g} over the last steps (a random "
                                                      f"guess scores {guess:.2f}; the limit is {limit:.0f})"))

    def message(self, trainer: L.Trainer, what: str) -> str:
        lr = f"optimizer.lr={self.lr:g}" if self.lr else "the learning rate"
        hint = f" (try optimizer.lr={self.lr / 10:g})" if self.lr else ""
        written = [c.best_model_path for c in trainer.checkpoint_callbacks if c.best_model_path]
        kept = next((p for p in written if p.endswith("last.ckpt")), written[0] if written else "")
        saved = (f"The last good checkpoint is kept: {kept}." if kept else
                 "No checkpoint had been written yet (checkpoints are written at the end of each epoch).")
        return (f"The training loss {what} at step {trainer.global_step} (epoch {trainer.current_epoch}), "
                f"so the run was stopped: it diverged. The usual cause is {lr} being too high for this model{hint}. {saved}")


class ErrorAnalysis(L.Callback):
    """What the model got wrong on the test set: the confusion matrix and the `top_losses` test
    images with the highest loss. After each test, both figures go to TensorBoard's IMAGES tab
    (`test/confusion_matrix`, `test/top_losses`) and, with `output_dir`, to confusion_matrix.png and
    top_losses.png; `self.result` holds the numbers (per-class accuracy, the matrix, the top losses).

    Keeps only a running top-k per batch (never every test image); under DDP the matrix is summed
    and the candidates gathered across ranks, and rank 0 draws.
    """

    def __init__(self, output_dir: str | None = None, top_losses: int = 9):
        if top_losses < 0:
            raise ValueError(f"top_losses={top_losses}: must be 0 or more")
        self.output_dir, self.k = output_dir, top_losses
        self.result: dict = {}

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.confusion = MulticlassConfusionMatrix(pl_module.num_classes).to(pl_module.device)
        self.top: tuple[torch.Tensor, ...] | None = None  # (loss, logits, label, image), best k so far

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, torch.Tensor):  # a test_step that returns no logits
            return
        x, y = batch
        logits = outputs.detach().float()
        self.confusion.update(logits, y)
        batch_top = (F.cross_entropy(logits, y, reduction="none"), logits, y, x[:, 0].float())
        self.top = self.keep_top(batch_top if self.top is None else tuple(torch.cat(p) for p in zip(self.top, batch_top)))

    def keep_top(self, parts: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        order = parts[0].argsort(descending=True)[: self.k]
        return tuple(p[order] for p in parts)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.top is None:
            return
        confusion = self.confusion.compute().cpu()  # summed over DDP ranks
        top = self.top
        if trainer.world_size > 1:  # each rank's best k, padded to k so that all_gather can stack them
            pad = self.k - len(top[0])
            filler = (top[0].new_full((pad,), -math.inf), *(p.new_zeros((pad, *p.shape[1:])) for p in top[1:]))
            top = tuple(torch.cat(pair) for pair in zip(top, filler))
            top = self.keep_top(tuple(pl_module.all_gather(p).flatten(0, 1) for p in top))
            top = tuple(p[top[0] > -math.inf] for p in top)
        if trainer.is_global_zero:
            self.report(trainer, confusion, tuple(p.cpu() for p in top))

    def report(self, trainer: L.Trainer, confusion: torch.Tensor, top: tuple[torch.Tensor, ...]) -> None:
        from mnist99 import figures

        classes = list(getattr(trainer.datamodule, "classes", None) or range(len(confusion)))
        classes = [str(c) for c in classes]
        loss, logits, label, images = top
        probs = logits.softmax(1)
        rows = [{"predicted": classes[int(p.argmax())], "actual": classes[int(t)], "loss": float(l), "probability": float(p.max())}
                for l, p, t in zip(loss, probs, label)]
        per_class = (confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
        self.result = {"per_class_acc": dict(zip(classes, per_class)), "confusion_matrix": confusion.tolist(), "top_losses": rows}
        out = Path(self.output_dir) if self.output_dir else None
        for name, fig in (("confusion_matrix", figures.confusion_figure(confusion, classes)),
                          ("top_losses", figures.top_losses_figure(images, rows))):
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure(f"test/{name}", fig, global_step=trainer.global_step, close=False)
            if out:
                out.mkdir(parents=True, exist_ok=True)
                figures.save(fig, out / f"{name}.png")
            else:
                figures.pyplot().close(fig)


def rng_states() -> dict:
    """Every random generator a training step may draw from, as plain tensors and ints (so that a
    checkpoint still loads with torch.load(weights_only=True))."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RngState(L.Callback):
    """Every random generator's state in every checkpoint, restored on resume. With the epoch's
    order drawn from (seed, epoch) and the position in the epoch saved by the datamodule, a run
    resumed from any checkpoint, mid-epoch ones included, takes the same steps as one never stopped."""

    def state_dict(self) -> dict:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        if "rng" in state_dict:
            set_rng_states(state_dict["rng"])


class GracefulStop(L.Callback):
    """Ctrl-C (SIGINT) or SIGTERM while training: the current step finishes, the whole state goes
    to `<dirpath>/last.ckpt` (weights, optimizer, schedule, position in the epoch and, with
    RngState, the random generators), and the run stops with a message that says how to resume it.
    A second Ctrl-C stops at once, without saving: mnist99.stopping words that stop, as it does a
    Ctrl-C outside training. Under DDP the ranks agree each step on whether to stop."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.signum: int | None = None
        self.previous: dict = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_train_start: after Lightning has put in its own SIGTERM handler, which this replaces
        self.signum = None
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self.previous = {s: signal.signal(s, self.handle) for s in self.SIGNALS}

    def handle(self, signum: int, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signum = signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        stop = self.signum is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)
        raise Interrupted(
            f"{stopped_by(self.signum or signal.SIGTERM)} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch {batch_idx + 1} of "
            f"{trainer.num_training_batches}). The run's whole state is saved in {path}. Continue it where it "
            # resume= composes the run's config.yaml, written as this fit started: its length included
            f"stopped with: python train.py resume={self.dirpath.parent}",
            int(self.signum or signal.SIGTERM),
        )

    def restore_handlers(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.restore_handlers()


def training_batches(trainer: L.Trainer) -> int | None:
    """The training batches of one epoch on each device, counted as Lightning will count them
    (the datamodule's training set and batch size, split across devices, then limit_train_batches
    or overfit_batches); None for a datamodule that does not say its training set and batch size."""
    dm = trainer.datamodule
    data, batch_size = getattr(dm, "data_train", None), getattr(dm, "batch_size", None)
    if data is None or not batch_size:
        return None
    try:
        n = math.ceil(len(data) / max(trainer.world_size, 1))  # DistributedSampler pads to a whole share
    except TypeError:  # a dataset without a length
        return None
    batches = n // batch_size if getattr(dm, "drop_last", False) else math.ceil(n / batch_size)
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        return min(batches, limit)
    return int(batches * limit) if isinstance(limit, float) else batches


class LogIntervalWithinEpoch(L.Callback):
    """trainer.log_every_n_steps brought down to the number of training batches of an epoch that is
    shorter (a small data set, limit_train_batches, debug=limit): train/loss is then logged once an
    epoch instead of never, and Lightning has nothing to warn about ("The number of training batches
    (5) is smaller than the logging interval Trainer(log_every_n_steps=50)"). Set before Lightning
    reads the data (setup), where it checks the interval."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.fast_dev_run or trainer.log_every_n_steps <= 0:
            return
        batches = training_batches(trainer)
        if batches and batches < trainer.log_every_n_steps:
            trainer.log_every_n_steps = batches


class UnevenTestSplit(L.Callback):
    """A test on several devices whose test set does not split evenly: Lightning's DistributedSampler
    then repeats a few images to give each device as many, and they count twice in test/acc.
    Said once, when it happens, with the way to the exact figure (Lightning's own warning, given
    for every test on several devices, is silenced)."""

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data = getattr(trainer.datamodule, "data_test", None)
        world = trainer.world_size
        if world <= 1 or data is None or not trainer.is_global_zero:
            return
        n = len(data)
        if n % world:
            log.warning("Testing on %d devices: the %d test images do not split evenly, so %d of them are tested twice "
                        "and test/acc is off by up to %.2g points. For the exact figure, test the run again on one device: "
                        "python eval.py ckpt_path=<the run folder>", world, n, world - n % world, 100 * (world - n % world) / n)
