"""An exponential moving average of the weights, validated, saved and tested in their place."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class EMA(L.Callback):
    """An exponential moving average of the weights and BatchNorm buffers (torch's AveragedModel), taken
    every `every_n_steps` optimizer steps from `start_step` on, validated, saved and tested in place of the
    raw weights (which are the model until averaging starts). Checkpoints are laid out as Lightning's
    WeightAveraging lays them out (`state_dict` the average, `current_model_state` the raw weights,
    `averaging_state` its count); WeightAveraging itself has no public way to reach the average."""

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
        return {k.removeprefix("module."): v for k, v in self.average.state_dict().items() if k.startswith("module.")}

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

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started:  # the average in, and back out at the end: no training step runs in between
            self.swap(pl_module)

    on_validation_epoch_end = on_validation_epoch_start

    @torch.no_grad()
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started:  # the model ends the run with the average
            for averaged, current in zip(self.tensors(self.average.module), self.tensors(pl_module)):
                current.copy_(averaged)

    def state_dict(self) -> dict:
        return {"latest_update_step": self.updated_at}  # WeightAveraging's name

    def load_state_dict(self, state_dict: dict) -> None:
        self.updated_at = int(state_dict.get("latest_update_step", 0))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.started:
            checkpoint["current_model_state"] = checkpoint["state_dict"]
            checkpoint["state_dict"] = self.averaged_state_dict()
            checkpoint["averaging_state"] = {k: v for k, v in self.average.state_dict().items() if not k.startswith("module.")}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # a resumed fit gets both weights back (a test has the average already); one saved before averaging restarts it
        if trainer.state.fn != TrainerFn.FITTING or self.average is None:
            return
        if "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            self.average.load_state_dict({**{f"module.{k}": v for k, v in checkpoint["state_dict"].items()},
                                          **checkpoint["averaging_state"]})
            pl_module.load_state_dict(checkpoint["current_model_state"])
