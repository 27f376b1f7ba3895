"""What each of mnist99's nets needs of its input, from its config alone and without torch: the start-up
checks (mnist99.schema) refuse an image size a net cannot take before a run folder is made, instead of a
shape error in the first batch or a run that cannot learn. The nets (mnist99.models.nets) size their layers
with the same functions. A net of the user's own is checked by one forward pass when it is built."""

from __future__ import annotations

from typing import Any, Callable, Mapping


def lenet_side(image_size: int) -> int:
    """LeNet's last feature map: an unpadded 5x5 conv, a 2x2 pool, an unpadded 3x3 conv, a 2x2 pool."""
    return ((image_size - 4) // 2 - 2) // 2


def strided_side(image_size: int) -> int:
    """StridedCNN's last feature map: each stage two unpadded 3x3 convs (-4), then a stride-2 conv (halved, up)."""
    return ((image_size - 4 + 1) // 2 - 4 + 1) // 2


def stack_side(image_size: int, kernel_size: int, layers: int) -> int:
    """StackCNN's last feature map: `layers` unpadded convs of `kernel_size`."""
    return image_size - (kernel_size - 1) * layers


def fast_cnn_side(image_size: int, stem_kernel: int = 3, stem_stride: int = 1) -> int:
    """FastCNN's map before its global pool: a 'same' stem (stride 1, then a 2x2 pool; or stride 2), a 2x2 pool."""
    after_stem = image_size // 2 if stem_stride == 1 else (image_size + 2 * (stem_kernel // 2) - stem_kernel) // stem_stride + 1
    return after_stem // 2


# ResNets halve the image five times (stem conv, max pool, layer2..4): MNIST's 28 pixels reach 1x1 at layer4.
# Below 16 pixels layer3 and layer4 see one pixel padded on every side, and such runs do not learn.
RESNET_MIN = 16

# The smallest side of a feature map a net can take, by the net's _target_, from the net's config.
SIDES: dict[str, Callable[[int, Mapping[str, Any]], int]] = {
    "mnist99.models.nets.LeNet": lambda s, net: lenet_side(s),
    "mnist99.models.nets.StridedCNN": lambda s, net: strided_side(s),
    "mnist99.models.nets.StackCNN": lambda s, net: stack_side(s, int(net.get("kernel_size", 3)), len(net.get("widths") or [0] * 10)),
    "mnist99.models.nets.FastCNN": lambda s, net: fast_cnn_side(s, int(net.get("stem_kernel", 3)), int(net.get("stem_stride", 1))),
    "mnist99.models.nets.ResNet": lambda s, net: 1 + s - RESNET_MIN,
}


# Nets with BatchNorm, which cannot train on a batch of one image (one value per channel).
BATCHNORM = ("mnist99.models.nets.FastCNN", "mnist99.models.nets.StridedCNN", "mnist99.models.nets.StackCNN", "mnist99.models.nets.ResNet")


def smallest_image(target: str, net: Mapping[str, Any]) -> int | None:
    """The smallest data.image_size the net named `target` takes with these arguments (None: any, or not ours)."""
    side = SIDES.get(target)
    if side is None:
        return None
    return next((s for s in range(1, 1025) if side(s, net) >= 1), None)
