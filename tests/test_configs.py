"""Every option of every config group composes, and the objects it names can be built."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from mnist99.config import CONFIG_DIR, unknown_override_keys, validate
from mnist99.models.optim import optimizer_from_config, param_groups
from mnist99.train import build_model

GROUPS = {g.name: sorted(p.stem for p in g.glob("*.yaml")) for g in Path(CONFIG_DIR).iterdir() if g.is_dir()}


def test_groups_present():
    for group in ("data", "augment", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment", "paths", "hydra"):
        assert GROUPS.get(group), f"conf/{group}/ is missing or empty"
    assert {"linear_scratch", "linear", "mlp", "cnn", "resnet18", "resnet34", "resnet50", "resnet152"} <= set(GROUPS["model"])


@pytest.mark.parametrize("model", GROUPS["model"])
def test_every_model_builds(make_cfg, model):
    cfg = make_cfg(f"model={model}")
    validate(cfg)
    module = build_model(cfg)
    assert sum(p.numel() for p in module.parameters()) > 0


@pytest.mark.parametrize("optimizer", GROUPS["optimizer"])
@pytest.mark.parametrize("scheduler", GROUPS["scheduler"])
def test_every_optimizer_and_scheduler_builds(make_cfg, optimizer, scheduler):
    cfg = make_cfg("model=mlp", f"optimizer={optimizer}", f"scheduler={scheduler}")
    factory, decay_norm_and_bias = optimizer_from_config(cfg.optimizer)
    opt = factory(params=param_groups(build_model(cfg), decay_norm_and_bias))
    assert opt.param_groups[0]["lr"] == cfg.optimizer.lr
    if cfg.scheduler:
        sched_factory = instantiate(cfg.scheduler)
        params = {"total_steps": 10} if "OneCycle" in cfg.scheduler._target_ else {"T_max": 10}
        sched = sched_factory(opt, **params)
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] != cfg.optimizer.lr  # the schedule moved the rate


@pytest.mark.parametrize("trainer", GROUPS["trainer"])
def test_every_trainer_composes(make_cfg, trainer):
    cfg = make_cfg(f"trainer={trainer}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    assert "max_epochs" in cfg.trainer and "gpus" in cfg.trainer


@pytest.mark.parametrize("logger", GROUPS["logger"])
@pytest.mark.parametrize("callbacks", GROUPS["callbacks"])
def test_every_logger_and_callbacks_builds(make_cfg, logger, callbacks):
    cfg = make_cfg(f"logger={logger}", f"callbacks={callbacks}")
    for section in (cfg.logger or {}).values():
        instantiate(section)
    for section in (cfg.callbacks or {}).values():
        instantiate(section)


@pytest.mark.parametrize("experiment", GROUPS["experiment"])
def test_every_experiment_composes(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}", val_size=None)
    validate(cfg)
    assert cfg.task_name == experiment
    if experiment.startswith("blog_"):
        assert cfg.data.val_size == 0  # the blog validates on testing/
    build_model(cfg)


def test_linear_scratch_selects_plain_sgd(make_cfg):
    cfg = make_cfg("model=linear_scratch")
    assert cfg.optimizer._target_ == "torch.optim.SGD" and not cfg.scheduler


def test_blog_resnet_uses_three_channels(make_cfg):
    cfg = make_cfg("experiment=blog_resnet18")
    assert cfg.model.in_channels == 3 and cfg.data.channels == 3 and cfg.data.batch_size == 64
    assert build_model(cfg).net[0][0].in_channels == 3  # fastai's (body, head): the body's stem conv
    assert build_model(make_cfg("model=resnet18", "model.in_channels=1")).net.conv1.in_channels == 1


def test_unknown_keys_are_named_with_the_valid_ones():
    GlobalHydra.instance().clear()
    assert unknown_override_keys(["optimizer.lr=0.1", "model=mlp", "model.net.hidden_size=3", "-m", "seed=1,2"]) is None
    message = unknown_override_keys(["optimizer=sgd", "optimizer.momentun=0.9"])
    assert "'optimizer.momentun'" in message and "momentum" in message
    assert unknown_override_keys(["+optimizer.foo=1", "hydra.job.chdir=false"]) is None


@pytest.mark.parametrize("augment", GROUPS["augment"])
def test_every_augment_builds(make_cfg, augment):
    dm = instantiate(make_cfg(f"augment={augment}").data, _convert_="all")
    assert (dm.augment is None) == (augment == "none")
