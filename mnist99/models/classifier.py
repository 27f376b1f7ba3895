"""LightningModules: the metrics and logging every model shares, and the optimizer wiring."""

from __future__ import annotations

import inspect
import logging
from functools import partial
from pathlib import Path
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist99.errors import ConfigError
from mnist99.models.optim import param_groups

log = logging.getLogger(__name__)

# What the schedules of conf/scheduler are called on the console, by the argument their length is given in.
SCHEDULE_NAMES = {"total_steps": "one-cycle", "T_max": "cosine"}


class ClassifierBase(L.LightningModule):
    """Accuracy (torchmetrics), loss and `val/acc_best` for train/val/test, logged as `split/name`.

    Steps only update the metrics (a few tensor ops on the device, no host sync); the values are
    logged once per epoch, and the per-step `train/loss` only on the steps Lightning writes to the
    logger (every `trainer.log_every_n_steps`): each `self.log` call costs ~0.25 ms of Python, which
    is most of a small model's step.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.num_classes = num_classes
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_acc_best = MaxMetric()

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        return self.loss(logits, y), logits, y

    def update_metrics(self, split: str, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        getattr(self, f"{split}_acc").update(logits.detach(), y)
        getattr(self, f"{split}_loss").update(loss.detach(), weight=len(y))

    def log_epoch(self, split: str, prog_bar: bool = True) -> torch.Tensor:
        """Log `split/acc` and `split/loss` over the epoch (synced across DDP ranks by torchmetrics)."""
        acc, loss = getattr(self, f"{split}_acc"), getattr(self, f"{split}_loss")
        value = acc.compute()
        self.log(f"{split}/acc", value, prog_bar=prog_bar)
        # the per-step curve is train/loss already; the epoch's mean gets a name of its own
        loss_name = "train/loss_epoch" if split == "train" else f"{split}/loss"
        self.log(loss_name, loss.compute(), prog_bar=prog_bar and split == "val")
        acc.reset()
        loss.reset()
        return value

    def is_logging_step(self) -> bool:
        """Will Lightning write this step's values to the logger? It does every
        `trainer.log_every_n_steps` optimizer steps (counting this one); call before the step."""
        every = self.trainer.log_every_n_steps
        return bool(self.trainer.fast_dev_run) or (every > 0 and (self.trainer.global_step + 1) % every == 0)

    def log_train(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, logging_step: bool) -> None:
        self.update_metrics("train", loss, logits, y)
        if logging_step:
            self.log("train/loss", loss.detach(), prog_bar=True)

    def training_step(self, batch, batch_idx):
        loss, logits, y = self.step(batch)
        self.log_train(loss, logits, y, self.is_logging_step())
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train")

    def on_train_start(self) -> None:
        # The sanity check must not count towards the best validation accuracy.
        self.val_acc_best.reset()
        self.val_acc.reset()
        self.val_loss.reset()
        if self.trainer.ckpt_path:  # a resumed fit: said in one short line (Lightning's notices are off)
            note = self.plan_resumed_schedule()
            try:
                shown = Path(self.trainer.ckpt_path).resolve().relative_to(Path.cwd())
            except ValueError:
                shown = self.trainer.ckpt_path
            log.info("Resumed from %s at step %d (epoch %d)%s.", shown, self.trainer.global_step, self.trainer.current_epoch, note)

    def plan_resumed_schedule(self) -> str:
        """A resumed fit's learning-rate schedule, once Lightning has restored it: nothing to plan
        here (a constant rate); what was done, for the resume's line."""
        return ""

    def validation_step(self, batch, batch_idx):
        loss, logits, y = self.step(batch)
        self.update_metrics("val", loss, logits, y)

    def on_validation_epoch_end(self) -> None:
        acc = self.log_epoch("val")
        if not self.trainer.sanity_checking:
            self.val_acc_best(acc)
        self.log("val/acc_best", self.val_acc_best.compute() if self.val_acc_best.update_count else acc)

    def test_step(self, batch, batch_idx):
        loss, logits, y = self.step(batch)
        self.update_metrics("test", loss, logits, y)
        return logits  # for callbacks that look at the errors (ErrorAnalysis)

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test", prog_bar=False)

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(dim=1)


class Classifier(ClassifierBase):
    """Any `nn.Module` net, trained with a torch optimizer and an optional step-wise LR schedule.

    `optimizer` and `scheduler` are partials (Hydra `_partial_: true`): the optimizer gets the
    parameters; the scheduler gets the optimizer and the run's total number of steps, as
    `total_steps` (OneCycleLR) or `T_max` (CosineAnnealingLR), whichever it takes.
    `decay_norm_and_bias=False` puts normalisation parameters and biases at weight decay 0
    (`optimizer.decay_norm_and_bias`, see `param_groups`).

    Training a finished run further (`resume=<run> trainer.max_epochs=N`, more steps than the
    checkpoint's schedule spans): the added steps get a schedule of their own, a new one-cycle
    (fastai's second `fit_one_cycle`) or a new cosine from `optimizer.lr` down to `eta_min`
    (SGDR's warm restart), each over the added steps only; a constant rate stays as it was. A
    run resumed to the end its schedule was made for continues that schedule unchanged (see
    `plan_resumed_schedule`).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.AdamW, lr=1e-3),
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        in_channels: int = 1,
        num_classes: int = 10,
        channels_last: bool = False,
        label_smoothing: float = 0.0,
        compile: bool = False,
        decay_norm_and_bias: bool = True,
    ):
        super().__init__(num_classes)
        self.net = net
        self.decay_norm_and_bias = decay_norm_and_bias
        self.label_smoothing = label_smoothing
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.in_channels = in_channels
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # torch.compile's wrapper is kept off the module tree, so checkpoints hold the plain net's
        # weights (no `_orig_mod.` keys) and load with or without compile.
        object.__setattr__(self, "compiled_net", torch.compile(self.net) if compile else None)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing if self.training else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # `is not None`, not `or`: truth-testing a compiled wrapper calls len() on the net
        return (self.compiled_net if self.compiled_net is not None else self.net)(x)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=param_groups(self, self.decay_norm_and_bias))
        # the config's rates, before a schedule changes them: a schedule started on resume starts from these
        self.configured_lrs = [group["lr"] for group in optimizer.param_groups]
        if self.scheduler_factory is None:
            return with_named_lr(optimizer)
        return with_named_lr(optimizer, self.make_scheduler(optimizer, self.planned_steps()))

    def length_key(self) -> str | None:
        """The argument the schedule's length goes in: `total_steps` (OneCycleLR), `T_max`
        (CosineAnnealingLR), or None (no schedule, or one without a length)."""
        if self.scheduler_factory is None:
            return None
        params = inspect.signature(getattr(self.scheduler_factory, "func", self.scheduler_factory)).parameters
        return next((k for k in ("total_steps", "T_max") if k in params), None)

    def planned_steps(self) -> int:
        """The optimizer steps this fit ends at (counted from the run's start, resumed steps included).
        At least 10: OneCycleLR divides by the length of its phases, which vanish below that (smoke runs)."""
        return max(int(self.trainer.estimated_stepping_batches), 10)

    def make_scheduler(self, optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        key = self.length_key()
        return self.scheduler_factory(optimizer, **({key: steps} if key else {}))

    def setup(self, stage: str) -> None:
        self.resumed_schedule: dict | None = None  # the checkpoint's schedule, when a fit resumes

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.trainer.state.fn == TrainerFn.FITTING:
            self.resumed_schedule = next(iter(checkpoint.get("lr_schedulers") or []), None)

    def plan_resumed_schedule(self) -> str:
        """A resumed fit's schedule, once Lightning has restored it from the checkpoint.

        The schedule ends at the step it was made for: at the step this fit is planned to end at
        (a run resumed to its own end), it carries on unchanged, so that the resumed run takes the
        same steps as one never stopped. Ending before (the run is trained further: a larger
        trainer.max_epochs or max_steps), the added steps get a new schedule, made as
        configure_optimizers makes one, over those steps only: a one-cycle's warm-up and annealing
        (fastai's second fit_one_cycle), a cosine from optimizer.lr down again (SGDR's warm
        restart). Without that, a one-cycle would fail at its first step past its end, and a
        cosine would climb back towards its peak rate, where the run would end. A schedule of
        another kind than the config's (the run was made with another scheduler) is replaced
        the same way, from this step to the end. Returns what was done, for the resume's line.
        """
        saved = getattr(self, "resumed_schedule", None)
        self.resumed_schedule = None
        if saved is None or not self.trainer.lr_scheduler_configs:
            return ""
        config = self.trainer.lr_scheduler_configs[0]
        step, planned, key = self.trainer.global_step, self.planned_steps(), self.length_key()
        if step >= planned:
            return ""  # nothing left to train
        saved_key = next((k for k in ("total_steps", "T_max") if k in saved), None)
        if saved_key == key:
            if key is None:
                return f"; training on to step {planned} at a constant learning rate"
            end = step - int(config.scheduler.last_epoch) + int(getattr(config.scheduler, key))
            if end > planned:
                log.warning(
                    "This run now stops at step %d, before the end of its %s learning-rate schedule (step %d): the "
                    "rate will not have come down. To finish the schedule, resume with the trainer.max_epochs (or "
                    "max_steps) the run was started or trained further with.", planned, SCHEDULE_NAMES[key], end)
            if end >= planned:
                return f"; training on to step {planned} on its {SCHEDULE_NAMES[key]} schedule"
        optimizer = config.scheduler.optimizer
        for group, lr in zip(optimizer.param_groups, getattr(self, "configured_lrs", [])):
            group["lr"] = group["initial_lr"] = lr  # a cosine starts from the group's rate as it finds it
        added = planned - step
        if self.scheduler_factory is None:
            config.scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        else:
            # at least 10 steps, as configure_optimizers: below that a one-cycle has no phases to
            # speak of (smoke runs), and it then runs past the fit's end
            config.scheduler = self.make_scheduler(optimizer, max(added, 10))
        lrs = [g["max_lr"] for g in optimizer.param_groups] if key == "total_steps" else config.scheduler.get_last_lr()
        if key:
            what = f"a new {SCHEDULE_NAMES[key]} schedule (peak learning rate {max(lrs):g})"
        elif self.scheduler_factory is None:
            what = f"a constant learning rate of {max(lrs):g}"
        else:
            what = f"a new {type(config.scheduler).__name__} from learning rate {max(lrs):g}"
        return f"; training on to step {planned}: {added} more steps, with {what}"


def with_named_lr(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> dict:
    """configure_optimizers' answer, its schedule stepped every step and named `train/lr`, the tag
    Lightning's LearningRateMonitor (callbacks.lr_monitor) logs the rate under. Without a schedule,
    a constant one: the monitor names only schedules, and the rate is then `train/lr` too."""
    scheduler = scheduler or torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"}}


class HandwrittenSGD(torch.optim.Optimizer):
    """Plain SGD written out: `p -= lr * p.grad`. A torch Optimizer only so that Lightning counts
    the steps (global_step, checkpoints, logging); the update itself is the line below."""

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p -= group["lr"] * p.grad


class ScratchLinear(ClassifierBase):
    """The blog's first principles: a linear model with its own parameters (plain tensors from
    `randn * std`), its own log-softmax + NLL loss and a hand-written SGD step, run by Lightning
    with manual optimization.

    The learning rate is the `lr` of the `optimizer` config, which must be plain SGD (no momentum,
    no weight decay), so `optimizer.lr=` means the same for this model as for every other.
    """

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.SGD, lr=1.0),
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        init_std: float = 0.01,
        decay_norm_and_bias: bool = True,  # nothing to choose: its plain SGD has no weight decay
    ):
        super().__init__(num_classes)
        self.automatic_optimization = False
        self.in_channels = in_channels
        kw = getattr(optimizer, "keywords", {})
        if getattr(optimizer, "func", None) is not torch.optim.SGD or kw.get("momentum") or kw.get("weight_decay"):
            raise ConfigError(
                "model=linear_scratch makes its own plain SGD step, so it needs optimizer=sgd with "
                f"momentum=0 and weight_decay=0 (got {getattr(optimizer, 'func', optimizer)} with {kw}). "
                "Drop the optimizer override, or pick another model such as model=linear."
            )
        self.lr = float(kw["lr"])
        n_in = in_channels * image_size * image_size
        # init_params() of the blog: plain tensors, randn * std, then requires_grad_().
        self.weights = nn.Parameter((torch.randn(n_in, num_classes) * init_std).requires_grad_())
        self.bias = nn.Parameter((torch.randn(num_classes) * init_std).requires_grad_())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weights + self.bias

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_probs = logits - logits.logsumexp(dim=1, keepdim=True)  # log-softmax
        return -log_probs[torch.arange(len(y), device=y.device), y].mean()  # NLL

    def training_step(self, batch, batch_idx):
        logging_step = self.is_logging_step()  # before the step counts
        loss, logits, y = self.step(batch)
        opt = self.optimizers()
        self.manual_backward(loss)
        opt.step()  # p -= lr * p.grad
        opt.zero_grad()  # then zero the grads
        self.log_train(loss, logits, y, logging_step)
        return loss.detach()  # not used for the step; lets callbacks see the loss

    def configure_optimizers(self):
        return with_named_lr(HandwrittenSGD([self.weights, self.bias], lr=self.lr))
