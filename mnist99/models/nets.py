"""The networks of the progression, as plain nn.Modules taking (B, C, 28, 28) float input."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision
from torch import nn

from mnist99.errors import ConfigError
from mnist99.models.input_needs import lenet_side, stack_side, strided_side


class LinearNet(nn.Sequential):
    """`nn.Linear(784, 10)`: the blog's second step."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10):
        super().__init__(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))


class MLP(nn.Sequential):
    """784-hidden-ReLU-10: the blog's third step."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden_size: int = 30, num_classes: int = 10):
        super().__init__(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, hidden_size), nn.ReLU(inplace=True),
                         nn.Linear(hidden_size, num_classes))


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int | None = None) -> nn.Sequential:
    """Conv (no bias: BatchNorm has one), BatchNorm, ReLU; 'same' padding unless told."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2 if padding is None else padding, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class FastCNN(nn.Sequential):
    """A small BatchNorm conv net sized for a CPU: three conv blocks at 28 (or 14), 14 and 7 pixels,
    about 1.9 M multiply-adds per image with widths (16, 32, 64). `stem_stride=2` (with `stem_kernel=5`)
    goes straight to 14x14: the same multiply-adds, a quarter of the activations to write (what costs
    on a CPU)."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, int, int] = (16, 32, 64), num_classes: int = 10,
                 stem_kernel: int = 3, stem_stride: int = 1):
        w1, w2, w3 = widths
        super().__init__(conv_bn(in_channels, w1, stem_kernel, stem_stride), *([nn.MaxPool2d(2)] if stem_stride == 1 else []),
                         conv_bn(w1, w2), nn.MaxPool2d(2), conv_bn(w2, w3),  # 14x14, then 7x7
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w3, num_classes))


class LeNet(nn.Sequential):
    """Two unpadded conv stages, each max-pooled, then a hidden fully connected layer: LeNet's shape,
    as tuomaso/train_mnist_fast sized it for speed (5x5 conv to 24 channels, 3x3 conv to 32, 256
    hidden units; about 1.2 M multiply-adds per image). Unlike FastCNN's global pooling, the hidden
    layer sees where on the 5x5 grid each feature is: 99% after one or two epochs. The pools come
    before the ReLUs (the same function, on a quarter of the values)."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, int] = (24, 32), hidden_size: int = 256,
                 num_classes: int = 10, image_size: int = 28):
        c1, c2 = widths
        side = lenet_side(image_size)
        if side < 1:
            raise ValueError(f"LeNet needs images of at least 12 pixels, not {image_size}")
        super().__init__(nn.Conv2d(in_channels, c1, 5), nn.MaxPool2d(2), nn.ReLU(inplace=True),
                         nn.Conv2d(c1, c2, 3), nn.MaxPool2d(2), nn.ReLU(inplace=True),
                         nn.Flatten(), nn.Linear(c2 * side * side, hidden_size), nn.ReLU(inplace=True), nn.Linear(hidden_size, num_classes))


def dropout_layer(p: float) -> list[nn.Module]:
    """[nn.Dropout(p)], or nothing at p=0."""
    return [nn.Dropout(p)] if p > 0 else []


class StridedCNN(nn.Sequential):
    """Two stages of conv-BN-ReLU: 3x3, 3x3 (both unpadded), then a 5x5 stride-2 conv instead of a
    pool; then a hidden BatchNorm layer: the net of Chris Deotte's Kaggle study of MNIST architectures.
    With widths (32, 64): 28 -> 24 -> 12 -> 8 -> 4 pixels, about 15 M multiply-adds per image.
    `dropout` > 0 puts his dropout (he used 0.4) after each stage and the hidden layer; at 0 the
    layers are left out, so the module indices, and the checkpoints, stay the same."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, int] = (32, 64), hidden_size: int = 128,
                 num_classes: int = 10, image_size: int = 28, dropout: float = 0.0):
        if not 0 <= dropout < 1:
            raise ValueError(f"StridedCNN dropout must be in [0, 1), not {dropout}")
        c1, c2 = widths
        side = strided_side(image_size)
        if side < 1:
            raise ValueError(f"StridedCNN needs images of at least 13 pixels, not {image_size}")
        super().__init__(conv_bn(in_channels, c1, 3, padding=0), conv_bn(c1, c1, 3, padding=0), conv_bn(c1, c1, 5, stride=2),
                         *dropout_layer(dropout),
                         conv_bn(c1, c2, 3, padding=0), conv_bn(c2, c2, 3, padding=0), conv_bn(c2, c2, 5, stride=2),
                         *dropout_layer(dropout),
                         nn.Flatten(), nn.Linear(c2 * side * side, hidden_size, bias=False), nn.BatchNorm1d(hidden_size),
                         nn.ReLU(inplace=True), *dropout_layer(dropout), nn.Linear(hidden_size, num_classes))


class StackCNN(nn.Sequential):
    """A stack of unpadded conv-BN-ReLU layers with no pooling, then one linear layer with BatchNorm:
    the "M3" net of An et al. (2020, arXiv:2008.10400), with `kernel_size` 5 or 7 (and their widths)
    its M5 and M7. The default ten 3x3 layers (32 to 176 channels) take 28x28 to 8x8: about 170 M
    multiply-adds per image, a GPU net."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (32, 48, 64, 80, 96, 112, 128, 144, 160, 176),
                 num_classes: int = 10, image_size: int = 28, kernel_size: int = 3):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"StackCNN kernel_size must be odd and positive, not {kernel_size}")
        side = stack_side(image_size, kernel_size, len(widths))
        if side < 1:
            raise ValueError(f"{len(widths)} unpadded {kernel_size}x{kernel_size} convs do not fit a {image_size}-pixel image")
        layers, c_in = [], in_channels
        for w in widths:
            layers.append(conv_bn(c_in, w, kernel_size, padding=0))
            c_in = w
        super().__init__(*layers, nn.Flatten(), nn.Linear(c_in * side * side, num_classes, bias=False), nn.BatchNorm1d(num_classes))


HEADS = ("linear", "fastai")


class AdaptiveConcatPool2d(nn.Module):
    """Max- and average-pooling side by side, concatenated on the channels (fastai's layer):
    twice the features of the average alone."""

    def __init__(self, size: int = 1):
        super().__init__()
        self.max, self.avg = nn.AdaptiveMaxPool2d(size), nn.AdaptiveAvgPool2d(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.max(x), self.avg(x)], dim=1)


def fastai_head(n_features: int, num_classes: int, hidden: int = 512, dropout: tuple[float, float] = (0.25, 0.5)) -> nn.Sequential:
    """fastai's `create_head` with its defaults: concat-pool, then two BatchNorm-Dropout-Linear
    blocks (the Linears without bias, BatchNorm follows). Its Linears are kaiming-normal with zero
    bias, as fastai's `apply_init`; its BatchNorms start at weight 1 and bias 1e-3, as fastai's
    `BatchNorm` layer."""
    head = nn.Sequential(AdaptiveConcatPool2d(), nn.Flatten(), nn.BatchNorm1d(2 * n_features), nn.Dropout(dropout[0]),
                         nn.Linear(2 * n_features, hidden, bias=False), nn.ReLU(inplace=True),
                         nn.BatchNorm1d(hidden), nn.Dropout(dropout[1]), nn.Linear(hidden, num_classes, bias=False))
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.constant_(m.bias, 1e-3)
    return head


class ResNet(nn.Sequential):
    """A torchvision ResNet by name (get_model), random weights, the standard stem, as the blog trains it.
    in_channels other than 3 rebuilds the first conv. head="linear" keeps torchvision's pool + fc (its
    layers and weight names); head="fastai" is fastai's `cnn_learner`: the body, then `fastai_head`."""

    def __init__(self, name: str = "resnet18", in_channels: int = 3, num_classes: int = 10, head: str = "linear"):
        if head not in HEADS:
            raise ConfigError(f"model.net.head={head!r} is not a head: use linear (torchvision's pool + fc) or fastai "
                              "(fastai's concat-pool, BatchNorm, Dropout, 512-unit head).")
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        if in_channels != 3:
            old = net.conv1
            net.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
        layers = dict(net.named_children())
        if head == "linear":  # torchvision's forward flattens between the pool and fc
            super().__init__(OrderedDict([*list(layers.items())[:-1], ("flatten", nn.Flatten()), ("fc", net.fc)]))
        else:
            super().__init__(nn.Sequential(*list(layers.values())[:-2]), fastai_head(net.fc.in_features, num_classes))


def count_macs(net: nn.Module, in_channels: int = 1, image_size: int = 28) -> int:
    """Multiply-adds of one forward pass of one image (convs and linears only)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output[0].numel() * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = net.training
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, in_channels, image_size, image_size))
    net.train(was_training)
    for h in handles:
        h.remove()
    return total
