"""Batch augmentation: identity when off, bounded shifts, labels and shapes kept, training only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lightning.pytorch.plugins.precision import DoublePrecision, HalfPrecision, Precision

from mnist99.data.augment import BatchRandomAffine
from mnist99.data.datamodule import ImageFolderDataModule, to_model_input


def test_no_op_settings_are_the_identity():
    x = torch.rand(8, 1, 28, 28)
    torch.testing.assert_close(BatchRandomAffine()(x), x)


def test_shift_moves_whole_pixels_within_bounds():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    out = BatchRandomAffine(shift=2)(x)
    flat = out.flatten(1)
    assert torch.allclose(flat.sum(1), torch.ones(64))  # one whole pixel moved, nothing blurred
    rows, cols = flat.argmax(1) // 28, flat.argmax(1) % 28
    assert ((rows - 14).abs() <= 2).all() and ((cols - 14).abs() <= 2).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # different shifts per image


def ink_moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (B, H, W): the angle of the ink's main axis (degrees from horizontal) and its spread
    (the root mean square distance of the ink from its centre, in pixels)."""
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    w = images / images.sum((1, 2), keepdim=True)
    cy, cx = (w * ys).sum((1, 2), keepdim=True), (w * xs).sum((1, 2), keepdim=True)
    vyy, vxx, vxy = (w * (ys - cy) ** 2).sum((1, 2)), (w * (xs - cx) ** 2).sum((1, 2)), (w * (xs - cx) * (ys - cy)).sum((1, 2))
    return torch.rad2deg(0.5 * torch.atan2(2 * vxy, vxx - vyy)), (vxx + vyy).sqrt()


def test_rotation_turns_each_image_by_up_to_degrees():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 13:15, 4:24] = 1.0  # a horizontal bar
    angles, _ = ink_moments(BatchRandomAffine(degrees=30)(x)[:, 0])
    assert angles.abs().max() <= 31  # within the range asked for
    assert angles.min() < -15 and angles.max() > 15  # turned both ways, each image its own
    assert ink_moments(x[:, 0])[0].abs().max() < 1e-4


def test_zoom_scales_each_image_within_its_range():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    _, before = ink_moments(x[:, 0])
    _, halved = ink_moments(BatchRandomAffine(scale=(0.5, 0.5))(x)[:, 0])
    torch.testing.assert_close(halved / before, torch.full((64,), 0.5), atol=0.06, rtol=0)
    _, zoomed = ink_moments(BatchRandomAffine(scale=(0.7, 1.3))(x)[:, 0])
    ratio = zoomed / before
    assert ratio.min() > 0.62 and ratio.max() < 1.38 and ratio.max() - ratio.min() > 0.3  # each image its own zoom


def test_rotation_keeps_shape_and_most_ink():
    torch.manual_seed(0)
    x = torch.zeros(16, 3, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    out = BatchRandomAffine(shift=2, degrees=15, scale=(0.9, 1.1))(x)
    assert out.shape == x.shape
    assert (out.sum((1, 2, 3)) / x.sum((1, 2, 3)) - 1).abs().max() < 0.3


def test_elastic_distortion_bends_each_image_its_own_way_and_smoothly():
    """Every pixel moves by a smooth field of its own per image: a vertical bar stays one stroke,
    bends differently in each image, by about a pixel on average at torchvision-like settings."""
    from mnist99.data.augment import smooth_noise

    torch.manual_seed(0)
    x = torch.zeros(32, 1, 28, 28)
    x[:, :, 4:24, 13:15] = 1.0
    out = BatchRandomAffine(elastic_alpha=40.0, elastic_sigma=4.0)(x)
    assert out.shape == x.shape and not torch.equal(out[0], out[1])
    ink = out[:, 0, 8:20]
    assert (ink.sum(-1) > 0.5).all()  # no row of the bar's middle torn off
    cols = (ink * torch.arange(28.0)).sum(-1) / ink.sum(-1)  # the bar's centre on each row
    moved = (cols - 13.5).abs()
    assert 0.2 < moved.mean() < 3 and moved.max() < 6
    assert (cols[:, 1:] - cols[:, :-1]).abs().max() < 1.5  # neighbouring rows move alike: a bend, not noise
    field = smooth_noise(4, 28, 28, 4.0, x)
    assert field.shape == (4, 2, 28, 28) and field.abs().max() < 1
    assert (field[..., 1:] - field[..., :-1]).abs().mean() < 0.3 * field.abs().mean()  # raw noise: > 1


@pytest.mark.parametrize("kw", [{"shift": -1}, {"degrees": -5}, {"scale": (1.2, 1.0)}, {"elastic_alpha": -1}, {"elastic_sigma": 0}])
def test_impossible_settings(kw):
    with pytest.raises(ValueError):
        BatchRandomAffine(**kw)


def test_datamodule_augments_training_batches_only(tiny_tree):
    dm = ImageFolderDataModule(tiny_tree, val_size=60, batch_size=32, augment=BatchRandomAffine(shift=3))
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    dm.trainer = SimpleNamespace(training=False, current_epoch=0, precision_plugin=Precision())
    plain, y_plain = dm.on_after_batch_transfer((x, y), 0)
    dm.trainer = SimpleNamespace(training=True, current_epoch=0, precision_plugin=Precision())
    torch.manual_seed(1)
    augmented, y_aug = dm.on_after_batch_transfer((x, y), 0)
    assert torch.equal(y_plain, y) and torch.equal(y_aug, y)
    assert augmented.shape == plain.shape == (32, 1, 28, 28)
    assert not torch.equal(augmented, plain)
    torch.testing.assert_close(plain, to_model_input(x))  # eval batches are left as they are


@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_blur_matrix_is_the_reflect_padded_gaussian_convolution(sigma):
    """The matmul form of the elastic field's blur gives what two reflect-padded 1-D convolutions give."""
    import torch.nn.functional as F

    from mnist99.data.augment import blur_matrix

    torch.manual_seed(0)
    noise = torch.rand(8, 1, 28, 20) * 2 - 1
    radius = int(4 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    want = F.conv2d(F.pad(noise, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    want = F.conv2d(F.pad(want, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    got = blur_matrix(28, sigma, noise) @ noise @ blur_matrix(20, sigma, noise).T
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(blur_matrix(28, sigma, noise).sum(1), torch.ones(28))  # a blur keeps the mean


@pytest.mark.parametrize("plugin, dtype", [(DoublePrecision(), torch.float64), (HalfPrecision("bf16-true"), torch.bfloat16)])
def test_a_true_precision_gets_its_input_in_the_models_dtype(tiny_tree, plugin, dtype):
    """trainer.precision=64-true, 16-true, bf16-true: the batch is uint8 when Lightning converts it, so the datamodule does."""
    dm = ImageFolderDataModule(tiny_tree, val_size=60, batch_size=32)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    dm.trainer = SimpleNamespace(training=False, current_epoch=0, precision_plugin=plugin)
    x, _ = dm.on_after_batch_transfer(batch, 0)
    assert x.dtype == dtype
