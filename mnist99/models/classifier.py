"""LightningModules: the metrics and logging every model shares, and the optimizer wiring."""

from __future__ import annotations

import logging
from functools import partial
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from mnist99.console import shown
from mnist99.errors import ConfigError
from mnist99.models.optim import param_groups

log = logging.getLogger(__name__)

# What the schedules of conf/scheduler are called on the console, by the argument their length is given in.
SCHEDULE_NAMES = {"total_steps": "one-cycle", "T_max": "cosine"}


def accuracy_and_loss(num_classes: int, prefix: str, loss: str = "loss") -> MetricCollection:
    """`<prefix>acc` and `<prefix><loss>` (the mean loss per image) of an epoch, updated with keywords."""
    metrics = {"acc": MulticlassAccuracy(num_classes, average="micro"), loss: MeanMetric()}
    return MetricCollection(metrics, prefix=prefix, compute_groups=False)


class ClassifierBase(L.LightningModule):
    """Accuracy (torchmetrics), loss and `val/acc_best` for train/val/test, logged as `split/name`:
    one MetricCollection per split, updated on the device each step (no host sync) and logged as
    metric objects once an epoch, which Lightning computes (synced across DDP ranks) and resets."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.num_classes = num_classes
        # the per-step curve is train/loss; the epoch's mean gets a name of its own
        self.train_metrics = accuracy_and_loss(num_classes, "train/", loss="loss_epoch")
        self.val_metrics = accuracy_and_loss(num_classes, "val/")
        self.test_metrics = accuracy_and_loss(num_classes, "test/")
        self.val_acc_best = MaxMetric()

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def step(self, batch, metrics: MetricCollection) -> tuple[torch.Tensor, torch.Tensor]:
        """(the batch's loss, its logits), the split's metrics updated with them."""
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        metrics.update(preds=logits.detach(), target=y, value=loss.detach(), weight=len(y))
        return loss, logits

    def training_step(self, batch, batch_idx):
        loss, _ = self.step(batch, self.train_metrics)
        self.log("train/loss", loss.detach(), prog_bar=True)  # written every trainer.log_every_n_steps
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics)
        if not self.trainer.lr_scheduler_configs:
            # a constant rate, logged once an epoch (LearningRateMonitor logs a schedule's every step:
            # ~0.5 ms a step, a third of a linear model's)
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # the sanity check does not count
        if self.trainer.ckpt_path:  # a resumed fit: said in one short line (Lightning's notices are off)
            note = self.plan_resumed_schedule()
            log.info("Resumed from %s at step %d (epoch %d)%s.", shown(self.trainer.ckpt_path), self.trainer.global_step, self.trainer.current_epoch, note)

    def plan_resumed_schedule(self) -> str:
        """What a resumed fit does with its schedule, for the resume's line: a constant rate here."""
        return ""

    def validation_step(self, batch, batch_idx):
        self.step(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_metrics["acc"].compute()  # kept: Lightning's own compute below returns it
        self.log_dict(self.val_metrics, prog_bar=True)
        if not self.trainer.sanity_checking:
            self.val_acc_best(acc)
        self.log("val/acc_best", self.val_acc_best.compute() if self.val_acc_best.update_count else acc)

    def test_step(self, batch, batch_idx):
        _, logits = self.step(batch, self.test_metrics)
        return logits  # for callbacks that look at the errors (ErrorAnalysis)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics)


class Classifier(ClassifierBase):
    """Any net trained with a torch optimizer and an optional step-wise LR schedule. `net` is built
    here with in_channels and num_classes (a partial, `_partial_: true`), or passed built; `scheduler`
    gets the run's total steps in the argument its `steps_arg` names (conf/scheduler);
    `decay_norm_and_bias=False` puts norm parameters and biases at weight decay 0 (`param_groups`)."""

    def __init__(self, net: nn.Module | Callable[..., nn.Module],
                 optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.AdamW, lr=1e-3),
                 scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None, in_channels: int = 1,
                 num_classes: int = 10, channels_last: bool = False, label_smoothing: float = 0.0, compile: bool = False,
                 decay_norm_and_bias: bool = True):
        super().__init__(num_classes)
        self.net = net if isinstance(net, nn.Module) else net(in_channels=in_channels, num_classes=num_classes)
        self.decay_norm_and_bias = decay_norm_and_bias
        self.label_smoothing = label_smoothing
        self.optimizer_factory = optimizer
        self.scheduler_factory, self.steps_arg = without_steps_arg(scheduler)
        self.in_channels = in_channels
        self.channels_last = channels_last
        self.compile_net = compile  # not self.compile: that is nn.Module's method
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def configure_model(self) -> None:
        # in place: no wrapper module, so checkpoints keep the plain net's keys (no `_orig_mod.`);
        # Lightning calls this for fit and again for test
        if self.compile_net and not getattr(self, "net_compiled", False):
            self.net.compile()
            self.net_compiled = True

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing if self.training else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=param_groups(self, self.decay_norm_and_bias))
        # the config's rates, before a schedule changes them: a schedule started on resume starts from these
        self.configured_lrs = [group["lr"] for group in optimizer.param_groups]
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        # stepped every step, and named: LearningRateMonitor (callbacks.lr_monitor) logs its rate as train/lr
        scheduler = self.make_scheduler(optimizer, self.planned_steps())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"}}

    def planned_steps(self) -> int:
        """The optimizer steps this fit ends at (counted from the run's start, resumed steps included).
        At least 10: OneCycleLR divides by the length of its phases, which vanish below that (smoke runs)."""
        return max(int(self.trainer.estimated_stepping_batches), 10)

    def make_scheduler(self, optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        return self.scheduler_factory(optimizer, **({self.steps_arg: steps} if self.steps_arg else {}))

    def setup(self, stage: str) -> None:
        self.resumed_schedule: dict | None = None  # the checkpoint's schedule, when a fit resumes

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.trainer.state.fn == TrainerFn.FITTING:
            # {}: the run had no schedule (a constant rate)
            self.resumed_schedule = (checkpoint.get("lr_schedulers") or [{}])[0]

    def plan_resumed_schedule(self) -> str:
        """A resumed fit's schedule, once Lightning has restored it; returns what was done, for the
        resume's line. A run resumed to the step its schedule ends at carries on with it unchanged
        (the same steps as an unstopped run). A run trained further (a larger trainer.max_epochs or
        max_steps), or made with another kind of schedule, gets a new one over the added steps: a
        one-cycle's warm-up and annealing (fastai's second fit_one_cycle), a cosine from optimizer.lr
        down again (SGDR's warm restart); a one-cycle run past its end would fail at its next step."""
        saved, self.resumed_schedule = getattr(self, "resumed_schedule", None), None
        step, planned, key = self.trainer.global_step, self.planned_steps(), self.steps_arg
        if saved is None or step >= planned:
            return ""  # not a resumed fit, or nothing left to train
        configs = self.trainer.lr_scheduler_configs
        # the saved schedule's kind, by the length its state holds (none: a constant rate)
        saved_key = next((k for k in (key, *SCHEDULE_NAMES) if k and k in saved), None)
        if saved_key == key:
            if key is None:
                how = "at a constant learning rate" if not configs else "on its schedule"
                return f"; training on to step {planned} {how}"
            end = step - int(configs[0].scheduler.last_epoch) + int(getattr(configs[0].scheduler, key))
            name = SCHEDULE_NAMES.get(key, type(configs[0].scheduler).__name__)
            if end > planned:
                log.warning(
                    "This run now stops at step %d, before the end of its %s learning-rate schedule (step %d): the "
                    "rate will not have come down. To finish the schedule, resume with the trainer.max_epochs (or "
                    "max_steps) the run was started or trained further with.", planned, name, end)
            if end >= planned:
                return f"; training on to step {planned} on its {name} schedule"
        optimizer = self.trainer.optimizers[0]
        for group, lr in zip(optimizer.param_groups, getattr(self, "configured_lrs", [])):
            group["lr"] = group["initial_lr"] = lr  # a cosine starts from the group's rate as it finds it
        added = planned - step
        if not configs:
            lr = optimizer.param_groups[0]["lr"]
            return f"; training on to step {planned}: {added} more steps, with a constant learning rate of {lr:g}"
        # at least 10 steps, as configure_optimizers
        configs[0].scheduler = self.make_scheduler(optimizer, max(added, 10))
        lrs = [g["max_lr"] for g in optimizer.param_groups] if key == "total_steps" else configs[0].scheduler.get_last_lr()
        if key in SCHEDULE_NAMES:
            what = f"a new {SCHEDULE_NAMES[key]} schedule (peak learning rate {max(lrs):g})"
        else:
            what = f"a new {type(configs[0].scheduler).__name__} from learning rate {max(lrs):g}"
        return f"; training on to step {planned}: {added} more steps, with {what}"


def without_steps_arg(scheduler: Callable | None) -> tuple[Callable | None, str | None]:
    """(the scheduler partial, the argument it takes the run's length in): conf/scheduler names that
    argument in `steps_arg`, a key for the Classifier, taken out of the scheduler's own arguments."""
    keywords = dict(getattr(scheduler, "keywords", None) or {})
    if "steps_arg" not in keywords:
        return scheduler, None
    steps_arg = keywords.pop("steps_arg")
    return partial(scheduler.func, *scheduler.args, **keywords), steps_arg


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
    """The blog's first principles: its own parameters (plain tensors from `randn * std`), its own
    log-softmax + NLL loss and a hand-written SGD step, under Lightning's manual optimization. Its rate
    is the `optimizer` config's `lr`, which must be plain SGD: `optimizer.lr=` means what it does for
    every model."""

    def __init__(self, optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.SGD, lr=1.0), in_channels: int = 1,
                 image_size: int = 28, num_classes: int = 10, init_std: float = 0.01):
        super().__init__(num_classes)
        self.automatic_optimization = False
        self.in_channels = in_channels
        kw = getattr(optimizer, "keywords", {})
        if getattr(optimizer, "func", None) is not torch.optim.SGD or kw.get("momentum") or kw.get("weight_decay"):
            raise ConfigError("model=linear_scratch makes its own plain SGD step, so it needs optimizer=sgd with "
                              f"momentum=0 and weight_decay=0 (got {getattr(optimizer, 'func', optimizer)} with {kw}). "
                              "Drop the optimizer override, or pick another model such as model=linear.")
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
        loss, _ = self.step(batch, self.train_metrics)
        opt = self.optimizers()
        self.manual_backward(loss)
        opt.step()  # p -= lr * p.grad
        opt.zero_grad()  # then zero the grads
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss.detach()  # not used for the step; lets callbacks see the loss

    def configure_optimizers(self):
        return {"optimizer": HandwrittenSGD([self.weights, self.bias], lr=self.lr)}
