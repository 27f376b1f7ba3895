"""The blog_resnet* recipes are fastai's `cnn_learner` + `fit_one_cycle`: its head, its Adam with
no weight decay on normalisation parameters and biases, its one-cycle schedule, its data."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torchvision
from conftest import one_paragraph, run_in_process, run_script_in_process
from torch import nn

from mnist99.build import build_model
from mnist99.config import validate
from mnist99.errors import ConfigError
from mnist99.models.nets import AdaptiveConcatPool2d, ResNet
from mnist99.trusted import instantiate


def test_fastai_head_layers_shape_and_init():
    torch.manual_seed(0)
    net = ResNet("resnet18", head="fastai")
    body, head = net
    # the body is torchvision's, up to layer4: no avgpool, no fc
    assert [type(m).__name__ for m in body][-1] == "Sequential" and not any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.Linear)) for m in body.modules())
    assert [type(m) for m in head] == [
        AdaptiveConcatPool2d, nn.Flatten, nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear,
    ]
    bn1, drop1, lin1, bn2, drop2, lin2 = head[2], head[3], head[4], head[6], head[7], head[8]
    assert (bn1.num_features, lin1.in_features, lin1.out_features, bn2.num_features) == (1024, 1024, 512, 512)
    assert (lin2.in_features, lin2.out_features) == (512, 10)
    assert (drop1.p, drop2.p) == (0.25, 0.5)
    assert lin1.bias is None and lin2.bias is None
    for bn in (bn1, bn2):
        assert torch.all(bn.weight == 1) and torch.allclose(bn.bias, torch.full_like(bn.bias, 1e-3))
    # kaiming-normal (fan_in, gain sqrt(2)): std sqrt(2 / fan_in), mean 0
    for lin in (lin1, lin2):
        w = lin.weight.detach()
        assert w.std().item() == pytest.approx(math.sqrt(2 / lin.in_features), rel=0.05)
        assert abs(w.mean().item()) < 0.1 * math.sqrt(2 / lin.in_features)
    net.eval()
    assert net(torch.rand(2, 3, 28, 28)).shape == (2, 10)


def test_concat_pool_is_max_then_average():
    x = torch.arange(8.0).reshape(1, 2, 2, 2)
    assert AdaptiveConcatPool2d()(x).flatten().tolist() == [3.0, 7.0, 1.5, 5.5]


@pytest.mark.parametrize("name, features", [("resnet34", 512), ("resnet50", 2048)])
def test_fastai_head_fits_every_backbone(name, features):
    net = ResNet(name, in_channels=1, num_classes=7, head="fastai")
    assert net[0][0].in_channels == 1 and net[1][2].num_features == 2 * features
    assert net.eval()(torch.rand(1, 1, 28, 28)).shape == (1, 7)


def test_linear_head_is_torchvisions(make_cfg):
    cfg = make_cfg("model=resnet18")
    assert cfg.model.net.head == "linear"
    net = build_model(cfg).net
    assert isinstance(net.fc, nn.Linear) and isinstance(net.avgpool, nn.AdaptiveAvgPool2d)
    reference = torchvision.models.resnet18(num_classes=10).eval()
    net.load_state_dict(reference.state_dict())  # the same layers under the same names
    x = torch.rand(2, 3, 28, 28)
    torch.testing.assert_close(net.eval()(x), reference(x), rtol=1e-4, atol=1e-5)


def test_unknown_head_is_refused_in_one_paragraph(tiny_tree, tmp_path):
    proc = run_in_process("train", f"data.data_dir={tiny_tree}", "model=resnet18", "model.net.head=fancy", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 2 and "model.net.head='fancy' is not a head" in one_paragraph(proc.stderr)


def blog_model(make_cfg, arch: str = "resnet18", *overrides: str):
    cfg = make_cfg(f"experiment=blog_{arch}", *overrides, val_size=None)
    validate(cfg)
    return cfg, build_model(cfg)


def configured(model, steps: int):
    """The model's optimizer and scheduler as Lightning gets them, for a run of `steps` steps."""
    model.trainer = SimpleNamespace(estimated_stepping_batches=steps)
    config = model.configure_optimizers()
    return config["optimizer"], config["lr_scheduler"]["scheduler"]


def test_blog_optimizer_takes_norm_params_and_biases_out_of_weight_decay(make_cfg):
    _, model = blog_model(make_cfg)
    opt, _ = configured(model, 100)
    assert type(opt) is torch.optim.AdamW
    decayed, exempt = opt.param_groups
    assert decayed["weight_decay"] == 0.01 and exempt["weight_decay"] == 0.0
    assert tuple(decayed["betas"])[1] == 0.99 and decayed["eps"] == 1e-5
    norm = {id(p) for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for p in m.parameters()}
    biases = {id(m.bias) for m in model.modules() if getattr(m, "bias", None) is not None}
    weights = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {id(p) for p in exempt["params"]} == norm | biases
    assert {id(p) for p in decayed["params"]} == weights
    assert len(decayed["params"]) + len(exempt["params"]) == len(list(model.parameters()))


def test_other_recipes_still_decay_every_parameter(make_cfg):
    cfg = make_cfg("model=cnn")
    assert cfg.optimizer.decay_norm_and_bias is True
    opt, _ = configured(build_model(cfg), 100)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == cfg.optimizer.weight_decay


def test_blog_schedule_matches_fit_one_cycle(make_cfg):
    _, model = blog_model(make_cfg)
    steps = 5 * (60_000 // 64)  # five epochs of full batches: the last partial one is dropped
    opt, sched = configured(model, steps)
    lrs, beta1s = [], []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        beta1s.append(opt.param_groups[0]["betas"][0])
        opt.step()
        sched.step()
    peak = max(range(steps), key=lrs.__getitem__)
    assert lrs[0] == pytest.approx(1e-3 / 25) and beta1s[0] == pytest.approx(0.95)
    assert peak == pytest.approx(0.25 * steps, abs=2)
    assert lrs[peak] == pytest.approx(1e-3) and beta1s[peak] == pytest.approx(0.85)
    assert lrs[-1] == pytest.approx(1e-3 / 1e5, rel=1e-3) and beta1s[-1] == pytest.approx(0.95)
    # cosine in both phases: halfway up the warm-up the rate is halfway between its ends
    assert lrs[peak // 2] == pytest.approx((1e-3 / 25 + 1e-3) / 2, rel=0.01)
    # every group follows the schedule, the weight-decay-free one too
    assert opt.param_groups[1]["lr"] == opt.param_groups[0]["lr"]


def test_blog_data_is_unnormalised_and_drops_the_partial_batch(make_cfg):
    cfg, _ = blog_model(make_cfg)
    assert (cfg.data.batch_size, cfg.data.drop_last, cfg.data.normalize, cfg.data.val_size) == (64, True, False, 0)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup()
    assert len(dm.data_train) == 400 and len(dm.train_dataloader()) == 400 // 64  # 6 full batches, 16 images dropped
    assert sum(len(y) for _, y in dm.test_dataloader()) == 120  # every test image is tested
    x, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape[1] == 3 and x.min() >= 0 and x.max() <= 1  # /255 only, grey repeated 3 times


@pytest.mark.parametrize("arch, reference", [("resnet18", 0.9949), ("resnet152", 0.9941)])
def test_blog_resnets_compose_with_their_reference(make_cfg, arch, reference):
    cfg, model = blog_model(make_cfg, arch)
    assert cfg.task_name == f"blog_{arch}" and cfg.reference.test_acc == reference
    assert cfg.model.net.name == arch and cfg.model.net.head == "fastai"
    assert isinstance(model.net[1][0], AdaptiveConcatPool2d)


@pytest.mark.parametrize("override, message", [
    ("optimizer.betas=[0.9,1.5]", "optimizer.betas=[0.9, 1.5] is impossible"),
    ("optimizer.betas=[0.9]", "optimizer.betas=[0.9] is impossible"),
    ("optimizer.eps=0", "optimizer.eps=0 is impossible"),
    ("scheduler.base_momentum=1.2", "scheduler.base_momentum=1.2 is impossible"),
    ("scheduler.final_div_factor=-1", "scheduler.final_div_factor=-1 is impossible"),
    ("optimizer.decay_norm_and_bias=maybe", "optimizer.decay_norm_and_bias='maybe' is not a switch"),
    ("data.drop_last=2", "data.drop_last=2 is not a switch"),
])
def test_impossible_recipe_values_are_refused(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(make_cfg("experiment=blog_resnet18", override, val_size=None))



FAKE_FASTAI = """#!/bin/sh
# stands in for fastai's venv python: writes what scripts/fastai_blog.py would to its --json=
for a in "$@"; do case "$a" in --json=*) out="${a#--json=}";; esac; done
echo '{"per_epoch": [{"accuracy": 0.5, "seconds": 3.0}, {"accuracy": 0.75, "seconds": 2.0}], "final_accuracy": 0.75, "versions": {}}' > "$out"
"""


@pytest.mark.slow  # two training processes: ~20 s
def test_side_by_side_script_runs_both_and_tabulates(tiny_tree, tmp_path):
    """mnist99's blog recipe (cut to a few batches) beside a stand-in for fastai: the per-epoch
    accuracy and seconds come back from mnist99's TensorBoard events and fastai's JSON."""
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_FASTAI)
    fake.chmod(0o755)
    out = tmp_path / "side"
    proc = run_script_in_process("blog_side_by_side", "--epochs", "2", "--data-dir", str(tiny_tree), "--fastai-python", str(fake),
                                 "--out", str(out), "--set", "trainer.limit_train_batches=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "side_by_side.json").read_text())
    mnist99, fastai = report["results"].values()
    assert len(mnist99["accuracy_per_epoch"]) == 2 and all(s > 0 for s in mnist99["seconds_per_epoch"])
    assert mnist99["final_accuracy"] == pytest.approx(mnist99["accuracy_per_epoch"][-1])  # tested on testing/ with the final weights
    assert fastai["accuracy_per_epoch"] == [0.5, 0.75]
    assert "| fastai vision_learner(resnet18) | 50.00% | 75.00% | 2 |" in proc.stdout
