"""The model summary at the start of fitting: the net's layers, parameters and multiply-adds per image."""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger(__name__)


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
    """The model in a few lines: its net's layers `max_depth` deep, each with its parameters, multiply-adds
    per image (torch's FlopCounterMode: written-out matrix products count too) and output shape, those
    with neither named at the end, and the totals; a model without a `net` shows its own parameters."""
    net = getattr(model, "net", None)
    net = net if isinstance(net, nn.Module) else model
    params = list(net.parameters())
    n_params, n_trainable = sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
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
    root, total_macs = type(net).__name__, flops.get("Global", 0) // 2
    trainable = "" if n_trainable == n_params else f" ({n_trainable:,} trainable)"
    cost = (f"{human(total_macs)} multiply-adds per {in_channels}x{image_size}x{image_size} image, {shape_text(out)} outputs"
            if out is not None else f"multiply-adds unknown (it takes no {in_channels}x{image_size}x{image_size} image)")
    lines = [f"Model: {root}, {n_params:,} parameters{trainable}, {cost}"]
    table, hidden = [], {}
    if net is model:  # its own parameters, no layers
        table = [(name, f"Parameter {'x'.join(map(str, p.shape))}", f"{p.numel():,}", "", "")
                 for name, p in model.named_parameters() if "." not in name]
    for name, m in rows:
        n = sum(p.numel() for p in m.parameters())
        macs = flops.get(f"{root}.{name}", 0) // 2
        if n == 0 and macs == 0:
            hidden[type(m).__name__] = None  # named once each, in order
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
    """The model summary at the start of fitting, in mnist99's words: the net's layers with their parameters and
    multiply-adds per image (summary_lines), instead of Lightning's table of every submodule, whose torchmetrics rows
    hold nothing and whose FLOPs column reads 0. Being a ModelSummary, it keeps Lightning from adding its own;
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
