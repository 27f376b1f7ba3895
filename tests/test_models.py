"""Models: each trains a fast_dev_run; the first-principles model's step is the hand-written one."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from conftest import fit

from mnist99.config import group_options
from mnist99.errors import ConfigError
from mnist99.models.classifier import Classifier, ScratchLinear
from mnist99.models.nets import FastCNN, LeNet, ResNet, StackCNN, StridedCNN, count_macs

MODELS = group_options()["model"]  # every conf/model/<name>.yaml: a new net is tested without being named here


@pytest.mark.parametrize("model", MODELS)
def test_fast_dev_run(make_cfg, model):
    """One step of each model; test/acc and test/loss are those of the tested weights on the tested
    batch (fast_dev_run tests the first 8 test images), recomputed here."""
    cfg = make_cfg(f"model={model}", "trainer.fast_dev_run=true", "data.batch_size=8", "trainer.accelerator=cpu")
    outcome = fit(cfg)
    metrics, module, datamodule = outcome.metrics, outcome.parts.model, outcome.parts.datamodule
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    x, y = datamodule.on_after_batch_transfer(next(iter(datamodule.test_dataloader())), 0)  # as the model got it
    module.eval()
    with torch.no_grad(), module.trainer.precision_plugin.forward_context():
        logits = module(x).float()
    assert metrics["test/acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert metrics["test/loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-2)


def test_training_raises_accuracy(make_cfg):
    """A short real training on the synthetic tree goes from chance (10%) to well above it."""
    cfg = make_cfg("model=cnn", "trainer.max_epochs=4", "data.batch_size=32", "trainer.accelerator=cpu", "logger=none")
    metrics = fit(cfg).metrics
    assert metrics["test/acc"] > 0.6, metrics
    assert metrics["val/acc_best"] >= metrics["val/acc"] - 1e-6


def test_scratch_step_is_plain_sgd():
    torch.manual_seed(0)
    model = ScratchLinear(optimizer=partial(torch.optim.SGD, lr=0.5))
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    before = model.weights.detach().clone()
    loss = model.loss(model(x), y)
    # the written-out loss is log-softmax + NLL, i.e. cross-entropy
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(model(x), y))
    loss.backward()
    grad = model.weights.grad.clone()
    opt = model.configure_optimizers()["optimizer"]
    opt.step()
    torch.testing.assert_close(model.weights.detach(), before - 0.5 * grad)


@pytest.mark.parametrize("bad", [partial(torch.optim.Adam, lr=0.1), partial(torch.optim.SGD, lr=0.1, momentum=0.9)])
def test_scratch_refuses_other_optimizers(bad):
    with pytest.raises(ConfigError, match="optimizer=sgd"):
        ScratchLinear(optimizer=bad)


def test_fast_cnn_is_cheap():
    assert count_macs(FastCNN()) < 2.5e6


def test_label_smoothing_applies_to_training_only():
    from mnist99.models.nets import LinearNet

    model = Classifier(LinearNet(), label_smoothing=0.2)
    logits, y = torch.tensor([[8.0] + [0.0] * 9]), torch.tensor([0])
    assert model.training and model.loss(logits, y) > torch.nn.functional.cross_entropy(logits, y) + 0.1
    model.eval()
    torch.testing.assert_close(model.loss(logits, y), torch.nn.functional.cross_entropy(logits, y))


def test_time_to_accuracy_records_the_first_crossing(monkeypatch):
    from types import SimpleNamespace

    import mnist99.callbacks
    from mnist99.callbacks import TimeToAccuracy

    now = [100.0]  # a fake clock: fit starts at 100, then one validation a second
    monkeypatch.setattr(mnist99.callbacks.timing.time, "perf_counter", lambda: now[0])
    clock = TimeToAccuracy((0.9, 0.99))
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={})
    clock.on_train_start(trainer, None)
    for acc in (0.5, 0.95, 0.92, 0.995):
        now[0] += 1
        trainer.callback_metrics["val/acc"] = torch.tensor(acc)
        clock.on_validation_end(trainer, None)
    # 0.9 first crossed at the 2nd validation (not moved by the dip and the later crossing)
    assert clock.reached == {0.9: 2.0, 0.99: 4.0}
    assert [v for point in clock.curve for v in point] == pytest.approx([1.0, 0.5, 2.0, 0.95, 3.0, 0.92, 4.0, 0.995])


def test_lenet_and_strided_cnn_shapes_and_costs():
    """The sizes the README gives: LeNet 28 -> 24 -> 12 -> 10 -> 5 pixels under 800 hidden inputs,
    StridedCNN 28 -> 24 -> 12 -> 8 -> 4; their multiply-adds per image."""
    lenet, strided = LeNet(), StridedCNN()
    assert lenet(torch.zeros(2, 1, 28, 28)).shape == strided(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert lenet[7].in_features == 32 * 5 * 5 and strided[7].in_features == 64 * 4 * 4
    assert 1.2e6 < count_macs(lenet) < 1.3e6 and 15e6 < count_macs(strided) < 15.5e6
    assert 2.6e6 < count_macs(LeNet(widths=(32, 64))) < 2.8e6  # experiment=accurate's
    assert 0.85e6 < count_macs(LeNet(widths=(16, 32))) < 0.95e6  # experiment=fast's
    with pytest.raises(ValueError, match="at least"):
        LeNet(image_size=8)


def test_strided_cnn_dropout():
    """Deotte's dropout: three layers when asked for, active in training only; none at 0, so a
    dropout-free net keeps the same parameter names (and checkpoints) as before the option."""
    plain, dropped = StridedCNN(), StridedCNN(dropout=0.4)
    assert sum(isinstance(m, torch.nn.Dropout) for m in plain.modules()) == 0
    assert sum(isinstance(m, torch.nn.Dropout) for m in dropped.modules()) == 3
    assert list(plain.state_dict()) == list(StridedCNN(dropout=0.0).state_dict())
    x = torch.rand(8, 1, 28, 28)
    dropped.eval()
    assert torch.equal(dropped(x), dropped(x))
    dropped.train()
    torch.manual_seed(0)
    assert not torch.allclose(dropped(x), dropped(x))
    with pytest.raises(ValueError, match="dropout"):
        StridedCNN(dropout=1.0)


def test_stack_cnn_is_an_et_al_m3():
    net = StackCNN()
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert 170e6 < count_macs(net) < 176e6
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 10
    with pytest.raises(ValueError, match="do not fit"):
        StackCNN(widths=tuple(range(8, 8 * 15, 8)))


def test_stack_cnn_kernel_size_gives_m7():
    """kernel_size=7 with An et al.'s M7 widths: four 7x7 convs take 28 pixels to 4."""
    net = StackCNN(widths=(48, 96, 144, 192), kernel_size=7)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert [m.kernel_size for m in net.modules() if isinstance(m, torch.nn.Conv2d)] == [(7, 7)] * 4
    assert net[-2].in_features == 192 * 4 * 4
    with pytest.raises(ValueError, match="do not fit"):
        StackCNN(widths=(48, 96, 144, 192, 240), kernel_size=7)
    with pytest.raises(ValueError, match="odd"):
        StackCNN(kernel_size=4)


def test_compile_keeps_checkpoint_keys_plain():
    """model.compile=true compiles the net in place when the trainer sets the model up, without
    changing the saved weights' names."""
    plain = Classifier(FastCNN())
    compiled = Classifier(FastCNN(), compile=True)
    compiled.configure_model()
    assert list(compiled.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(compiled.state_dict())


def test_compiled_net_is_used_for_any_network(monkeypatch):
    """configure_model compiles the net (once, though Lightning calls it for fit and again for
    test), and the compiled forward is the one that runs, also for nets that are not nn.Sequential."""
    compiled = []

    def fake_compile(forward, *args, **kwargs):
        def run(*a, **kw):
            compiled.append(len(a[0]))
            return forward(*a, **kw)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = Classifier(ResNet("resnet18", in_channels=1), compile=True)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10) and compiled == []  # not before the trainer sets it up
    model.configure_model()
    model.configure_model()
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10) and compiled == [2]
