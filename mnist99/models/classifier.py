"""LightningModules: the metrics and logging every model shares, and the optimizer wiring."""

from __future__ import annotations

import inspect
from functools import partial
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist99.errors import ConfigError
from mnist99.models.optim import param_groups


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
        if self.scheduler_factory is None:
            return with_named_lr(optimizer)
        params = inspect.signature(self.scheduler_factory.func).parameters
        # OneCycleLR divides by the length of its phases, which vanish below ~10 steps (smoke runs).
        steps = max(int(self.trainer.estimated_stepping_batches), 10)
        extra = {"total_steps": steps} if "total_steps" in params else {"T_max": steps} if "T_max" in params else {}
        return with_named_lr(optimizer, self.scheduler_factory(optimizer, **extra))


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
