"""Every option of every config group composes, and the objects it names can be built."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import OmegaConf

from mnist99.build import build_callbacks, build_loggers, build_model
from mnist99.config import CONFIG_DIR, expand_shorthands, unknown_override_keys, validate
from mnist99.errors import ConfigError
from mnist99.trusted import instantiate

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
    """The model's own configure_optimizers, for a run of 10 steps: the schedule gets its length."""
    cfg = make_cfg("model=mlp", f"optimizer={optimizer}", f"scheduler={scheduler}")
    model = build_model(cfg)
    model.trainer = SimpleNamespace(estimated_stepping_batches=10)
    configured = model.configure_optimizers()
    opt = configured["optimizer"]
    assert model.configured_lrs[0] == cfg.optimizer.lr  # the optimizer's rate, before a schedule sets its own
    if cfg.scheduler:
        sched = configured["lr_scheduler"]["scheduler"]
        assert getattr(sched, cfg.scheduler.steps_arg) == 10
        start = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] != start  # the schedule moved the rate


@pytest.mark.parametrize("trainer", GROUPS["trainer"])
def test_every_trainer_instantiates_as_composed(make_cfg, trainer):
    """The composed trainer node is lightning.pytorch.Trainer's arguments and nothing else."""
    cfg = make_cfg(f"trainer={trainer}")
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            validate(cfg)
        return
    built = instantiate(cfg.trainer)
    assert isinstance(built, L.Trainer) and built.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("typed,composed", [
    ("trainer.gpus=2", {"accelerator": "gpu", "devices": 2}),
    ("trainer.gpus=[0,1]", {"accelerator": "gpu", "devices": [0, 1]}),
    ("trainer.gpus=0", {"accelerator": "cpu", "devices": "auto"}),
])
def test_gpus_shorthand_is_resolved_before_composition(typed, composed):
    cfg = OmegaConf.to_container(compose_unchecked(expand_shorthands([typed])).trainer)
    assert "gpus" not in cfg and {k: cfg[k] for k in composed} == composed


def compose_unchecked(overrides):
    from hydra import compose, initialize_config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        return compose("train", overrides=overrides)


@pytest.mark.parametrize("logger", GROUPS["logger"])
@pytest.mark.parametrize("callbacks", GROUPS["callbacks"])
def test_every_logger_and_callbacks_builds(make_cfg, logger, callbacks):
    cfg = make_cfg(f"logger={logger}", f"callbacks={callbacks}")
    loggers = build_loggers(cfg)
    built = build_callbacks(cfg, with_logger=bool(loggers))
    assert len(loggers) == len(cfg.logger or {})
    if callbacks == "none":
        assert built == []  # none means none: nothing is added behind the config's back
    else:  # early_stopping is an add-on, alone here: no lr monitor in it
        monitor = "lr_monitor" in cfg.callbacks
        expected = len(cfg.callbacks) - (1 if monitor and not loggers else 0)  # the lr monitor needs a logger
        assert len(built) == expected and any(isinstance(c, LearningRateMonitor) for c in built) == (monitor and bool(loggers))
        constant = build_callbacks(make_cfg(f"logger={logger}", f"callbacks={callbacks}", "scheduler=none"), with_logger=bool(loggers))
        assert not any(isinstance(c, LearningRateMonitor) for c in constant)  # train/lr comes from the module then


def test_checkpoints_follow_the_optimized_metric(make_cfg):
    best = build_callbacks(make_cfg())[0]
    assert (best.monitor, best.mode) == ("val/acc_best", "max")
    best = build_callbacks(make_cfg("optimized_metric=val/loss"))[0]
    assert (best.monitor, best.mode) == ("val/loss", "min")


def test_task_name_is_the_model_unless_an_experiment_names_it(make_cfg):
    assert make_cfg("model=mlp").task_name == "mlp"
    assert make_cfg("experiment=fast", val_size=None).task_name == "fast"


@pytest.mark.parametrize("experiment", GROUPS["experiment"])
def test_every_experiment_composes(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}", val_size=None)
    validate(cfg)
    assert cfg.task_name == experiment
    if experiment.startswith("blog_"):
        assert cfg.data.val_size == 0  # the blog validates on testing/
    build_model(cfg)


@pytest.mark.parametrize("native_bf16, precision", [(True, "bf16-mixed"), (False, "32-true")])
def test_fast_recipes_use_bfloat16_only_where_the_cpu_has_it(make_cfg, monkeypatch, native_bf16, precision):
    """On an AVX2 CPU bf16 autocast is emulated (~5x slower): the recipes fall back to float32."""
    from mnist99 import config

    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: native_bf16)
    for experiment in ("fast", "accurate", "best"):
        cfg = make_cfg(f"experiment={experiment}", "trainer.accelerator=cpu", val_size=None)
        assert cfg.trainer.precision == precision, experiment
    # a user's own choice wins
    assert make_cfg("experiment=fast", "trainer.accelerator=cpu", "trainer.precision=32-true").trainer.precision == "32-true"


def test_the_cpu_recipes(make_cfg):
    """What the README promises of each recipe: its net, its epochs, all 60,000 training images
    (validation on testing/ draws the curve only), the final weights tested."""
    from mnist99.models.nets import LeNet, StridedCNN

    expected = {"fast": (LeNet, 1, None), "accurate": (LeNet, 8, "shift"), "best": (StridedCNN, None, "affine")}
    for experiment, (net, epochs, augment) in expected.items():
        cfg = make_cfg(f"experiment={experiment}", val_size=None)
        assert cfg.data.val_size == 0 and cfg.model.label_smoothing == 0.1, experiment
        assert isinstance(build_model(cfg).net, net), experiment
        assert epochs is None or cfg.trainer.max_epochs == epochs
        if augment is None:
            assert not cfg.get("augment"), experiment
        else:  # shift: whole pixels only; affine: rotations too
            assert cfg.augment.shift > 0 and (cfg.augment.degrees > 0) == (augment == "affine"), experiment
    # fast narrows lenet to stay under 12 s on a 2-core CPU; accurate widens it
    assert list(make_cfg("experiment=fast").model.net.widths) == [16, 32]
    assert list(make_cfg("experiment=accurate").model.net.widths) == [32, 64]
    ensemble = make_cfg("experiment=ensemble", val_size=None)
    best = make_cfg("experiment=best", val_size=None)
    assert ensemble.ensemble.members == 3 and [0, 0] in ensemble.ensemble.tta_shifts
    assert ensemble.model == best.model and ensemble.trainer.max_epochs == best.trainer.max_epochs


def test_linear_scratch_selects_plain_sgd(make_cfg):
    cfg = make_cfg("model=linear_scratch")
    assert cfg.optimizer._target_ == "torch.optim.SGD" and not cfg.scheduler


def test_blog_resnet_uses_three_channels(make_cfg):
    cfg = make_cfg("experiment=blog_resnet18")
    # MNIST read as grey, repeated into the ResNet's 3-channel stem
    assert cfg.model.in_channels == 3 and cfg.data.channels == 1 and cfg.data.model_channels == 3 and cfg.data.batch_size == 64
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


def flat(node: dict, prefix: str = "") -> dict:
    """{dotted key: value} of a YAML mapping, its defaults list left out."""
    out = {}
    for k, v in node.items():
        if k != "defaults":
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def test_model_files_say_only_what_differs_from_their_base():
    """A model file extends a base (conf/model_classifier.yaml, conf/model_resnet.yaml, which extends
    the first): it repeats none of the base's settings, and a ResNet's file is little more than its depth."""
    import yaml

    conf = Path(CONFIG_DIR)
    read = lambda path: yaml.safe_load(path.read_text()) or {}  # noqa: E731
    bases = {"/model_classifier@_here_": flat(read(conf / "model_classifier.yaml"))}
    bases["/model_resnet@_here_"] = bases["/model_classifier@_here_"] | flat(read(conf / "model_resnet.yaml"))
    for path in sorted((conf / "model").glob("*.yaml")):
        text = read(path)
        extends = [d for d in text.get("defaults", []) if isinstance(d, str) and d in bases]
        if not extends:  # a model of its own kind (linear_scratch: a global config choosing its optimizer)
            assert text["model"]["_target_"] != "mnist99.models.classifier.Classifier", path.name
            continue
        base = bases[extends[0]]
        assert not {k for k, v in flat(text).items() if k in base and base[k] == v}, path.name
        if path.stem.startswith("resnet"):
            settings = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
            assert len(settings) <= 5 and flat(text) == {"net.name": path.stem}, path.name
