"""Ensembles, test-time shifts and the EMA callback."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
import yaml
from conftest import fit, run_in_process, run_script_in_process

from mnist99.callbacks import EMA
from mnist99.ensemble import ShiftTTA, accuracy, check, combine
from mnist99.ensemble import test_probs as softmax_on_test  # not test_*: pytest would collect it
from mnist99.errors import ConfigError
from mnist99.evaluate import load
from mnist99.locate import locate
from mnist99.trusted import instantiate


def one_hot(labels, n=3):
    return torch.nn.functional.one_hot(torch.tensor(labels), n).float()


def test_combine_averages_models_and_shifts():
    labels = torch.tensor([0, 1, 2, 0])
    # model a is wrong on image 3 and b on image 2, each with low confidence: the average is right
    a = torch.stack([one_hot([0, 1, 2, 0]) * 0.9 + 0.05, one_hot([0, 1, 2, 1]) * 0.4 + 0.2], 1)  # (N, shifts=2, C)
    b = torch.stack([one_hot([0, 1, 1, 0]) * 0.4 + 0.2, one_hot([0, 1, 2, 0]) * 0.9 + 0.05], 1)
    out = combine([a, b], labels, [[0, 0], [1, 0]])
    assert out["test/acc_member0"] == pytest.approx(1.0) and out["test/acc_member1"] == pytest.approx(0.75)
    assert out["test/acc_members_mean"] == pytest.approx(0.875)
    assert out["test/acc_member0_tta"] == pytest.approx(1.0)
    assert out["test/acc_ensemble_no_tta"] == pytest.approx(1.0) and out["test/acc"] == pytest.approx(1.0)


def test_shift_tta_rolls_whole_pixels():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(len(x), 10)

    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 12] = 1
    probs, _ = ShiftTTA(Probe(), [[0, 0], [1, 0], [0, -2]]).predict_step((x, torch.tensor([3])), 0)
    assert probs.shape == (1, 3, 10)
    assert [tuple(s[0, 0].nonzero()[0].tolist()) for s in seen] == [(10, 12), (11, 12), (10, 10)]


@pytest.mark.parametrize("override, match", [
    ("ensemble.members=0", "ensemble.members=0"),
    ("ensemble.tta_shifts=[[1]]", r"\[dy, dx\] pair"),
    ("ensemble.tta_shifts=[[9,0]]", "between -4 and 4"),
])
def test_impossible_ensembles_are_refused(make_cfg, override, match):
    with pytest.raises(ConfigError, match=match):
        check(make_cfg("ensemble.members=2", override))


def test_ensemble_trains_members_and_tests_their_average(make_cfg, tmp_path):
    cfg = make_cfg("model=cnn", "ensemble.members=2", "ensemble.tta_shifts=[[0,0],[1,0]]", "trainer.max_epochs=2",
                   "data.batch_size=32", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false")
    out = fit(cfg).metrics
    assert out["ensemble/members"] == 2
    for i in range(2):
        assert (tmp_path / f"member{i}" / "checkpoints" / "last.ckpt").is_file()
        assert 0.25 < out[f"test/acc_member{i}"] <= 1  # learned (chance is 0.1); 2 epochs of 340 images vary by seed
    assert out["test/acc"] >= min(out["test/acc_member0_tta"], out["test/acc_member1_tta"]) - 0.05
    assert yaml.safe_load((tmp_path / "member1" / "hparams.yaml").read_text())["seed"] == cfg.seed + 1
    # a member folder is a run folder: its own config rebuilds the model that was tested
    member_cfg, model = load(*locate(tmp_path / "member1"))
    assert member_cfg.seed == cfg.seed + 1
    dm = instantiate(member_cfg.data, _convert_="all")
    dm.setup("test")
    probs, labels = softmax_on_test(model, dm, [[0, 0]], {"accelerator": "cpu"})
    assert accuracy(probs[:, 0], labels) == pytest.approx(out["test/acc_member1"], abs=1e-6)


@pytest.mark.slow  # two training runs and the script: 25 s
def test_ensemble_script_on_finished_runs(tiny_tree, tmp_path):
    logs = tmp_path / "logs"
    for seed in (0, 1):
        proc = run_in_process("train", f"data.data_dir={tiny_tree}", "data.val_size=60", "trainer.max_epochs=2", "data.batch_size=32",
                       f"seed={seed}", f"paths.log_dir={logs}", "hydra.run.dir=" + str(logs / f"run{seed}"))
        assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "ens.json"
    proc = run_script_in_process("ensemble", str(logs / "run0"), str(logs / "run1"), "--tta", "0,0", "0,-1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert all(0.5 < result[f"test/acc_member{i}"] <= 1 for i in (0, 1))  # last.ckpt of each run
    assert 0.5 < result["test/acc"] <= 1 and "| ensemble, 2 shifts |" in proc.stdout
    held_out = run_script_in_process("ensemble", str(logs / "run0"), str(logs / "run1"), "--split", "val", "--tta", "0,0", "1,0")
    assert held_out.returncode == 0, held_out.stderr[-2000:]
    assert "Scored on the 60 held-out training images" in held_out.stdout and "| held-out acc |" in held_out.stdout
    missing = run_script_in_process("ensemble", str(tmp_path))
    assert missing.returncode != 0 and "config.yaml is missing" in missing.stderr and "Traceback" not in missing.stderr


class WeightsAfterEachStep(L.Callback):
    """The first layer's raw weights after every optimizer step, as (global_step, weights)."""

    def __init__(self):
        self.weights: list[tuple[int, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append((trainer.global_step, pl_module.net[0][0].weight.detach().clone()))


@pytest.mark.parametrize("val_size", [0, 60])
def test_ema_weights_are_the_ones_tested(make_cfg, val_size):
    """With the EMA callback the model is tested with the averaged weights, whether they are the
    final ones (val_size=0) or come from the best checkpoint, not with the raw training weights."""
    base = ("model=cnn", "trainer.max_epochs=3", "data.batch_size=32", "trainer.accelerator=cpu", "logger=none",
            "trainer.enable_progress_bar=false", "callbacks=none")
    plain = fit(make_cfg(*base, val_size=val_size)).parts.model
    ema, seen = EMA(decay=0.9, start_step=5), WeightsAfterEachStep()
    outcome = fit(make_cfg(*base, val_size=val_size), ema, seen)
    metrics, model = outcome.metrics, outcome.parts.model
    raw, averaged, tested = plain.net[0][0].weight, ema.averaged_state_dict()["net.0.0.weight"], model.net[0][0].weight
    assert not torch.allclose(raw, averaged)
    # the average is the EMA of the raw weights of step 6 on (step_idx 5, zero-based), computed here on its own
    expected = None
    for step, weight in seen.weights:
        if step >= 6:
            expected = weight if expected is None else 0.9 * expected + 0.1 * weight
    assert len(seen.weights) > 20 and torch.allclose(averaged, expected, rtol=0, atol=1e-6)
    if val_size == 0:
        assert torch.equal(tested, averaged)
    else:  # the checkpoint holds both; its state_dict is the average
        ckpt = torch.load(metrics["tested_weights"], weights_only=True)
        assert torch.equal(tested, ckpt["state_dict"]["net.0.0.weight"])
        assert not torch.equal(tested, ckpt["current_model_state"]["net.0.0.weight"])
    assert metrics["test/acc"] > 0.5


def test_ema_before_its_start_leaves_the_raw_weights(make_cfg):
    """Until averaging starts the average holds the initial weights: validating, saving or ending
    with them would show a random model (8.9% on the first epochs of a real run)."""
    base = ("model=cnn", "trainer.max_epochs=2", "data.batch_size=32", "trainer.accelerator=cpu", "logger=none",
            "trainer.enable_progress_bar=false", "callbacks=none", "data.val_size=0")
    plain = fit(make_cfg(*base))
    plain_metrics, plain = plain.metrics, plain.parts.model
    ema = EMA(decay=0.9, start_step=10_000)
    outcome = fit(make_cfg(*base), ema)
    metrics, model = outcome.metrics, outcome.parts.model
    assert not ema.started
    assert torch.equal(model.net[0][0].weight, plain.net[0][0].weight)  # the trained weights, not the initial ones
    assert metrics["val/acc"] == plain_metrics["val/acc"] and metrics["test/acc"] == plain_metrics["test/acc"] > 0.3


def test_ema_checkpoint_resumes_both_weights():
    """A checkpoint saved after averaging started holds the average as its state_dict and the raw
    weights beside it; a fit resumed from it carries on with both, as if never stopped."""
    from types import SimpleNamespace

    from lightning.pytorch.trainer.states import TrainerFn

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 2)

    def step(ema, module, global_step):  # an optimizer step, then the callback's turn
        with torch.no_grad():
            module.layer.weight.add_(torch.randn(2, 3))
        ema.on_train_batch_end(SimpleNamespace(global_step=global_step), module, None, None, 0)

    trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING))
    torch.manual_seed(0)
    a, a_model = EMA(decay=0.5, start_step=2), Tiny()
    a.setup(trainer, a_model, "fit")
    for s in range(1, 5):
        step(a, a_model, s)
    assert a.started and not torch.equal(a.averaged_state_dict()["layer.weight"], a_model.layer.weight)
    checkpoint = {"state_dict": {k: v.clone() for k, v in a_model.state_dict().items()}}
    a.on_save_checkpoint(trainer, a_model, checkpoint)
    assert torch.equal(checkpoint["state_dict"]["layer.weight"], a.averaged_state_dict()["layer.weight"])
    assert torch.equal(checkpoint["current_model_state"]["layer.weight"], a_model.layer.weight)

    b, b_model = EMA(decay=0.5, start_step=2), Tiny()
    b.setup(trainer, b_model, "fit")
    b_model.load_state_dict(checkpoint["state_dict"])  # what Lightning loads first, then the callback's hooks
    b.on_load_checkpoint(trainer, b_model, checkpoint)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b_model.layer.weight, a_model.layer.weight)
    b.on_train_batch_end(SimpleNamespace(global_step=4), b_model, None, None, 1)  # step 4 is averaged already: not again
    assert torch.equal(b.averaged_state_dict()["layer.weight"], a.averaged_state_dict()["layer.weight"])
    rng = torch.get_rng_state()
    step(a, a_model, 5)
    torch.set_rng_state(rng)
    step(b, b_model, 5)
    assert torch.equal(b.averaged_state_dict()["layer.weight"], a.averaged_state_dict()["layer.weight"])


def test_ema_schedule():
    ema = EMA(decay=0.99, start_step=10, every_n_steps=2)
    assert not ema.should_update(step_idx=8) and ema.should_update(step_idx=10) and not ema.should_update(step_idx=11)
    with pytest.raises(ValueError):
        EMA(decay=1.5)


def test_held_out_scoring_needs_one_real_hold_out():
    import runpy

    from omegaconf import OmegaConf

    from conftest import ROOT

    check_held_out = runpy.run_path(str(ROOT / "scripts" / "ensemble.py"))["check_held_out"]

    def run(val_size, split_seed=0):
        return OmegaConf.create({"data": {"val_size": val_size, "split_seed": split_seed}})

    check_held_out([run(5000), run(5000)])
    for runs in ([run(0), run(0)], [run(5000), run(1000)], [run(5000), run(5000, split_seed=1)]):
        with pytest.raises(ConfigError, match="held out the same training images"):
            check_held_out(runs)


def test_ensemble_script_reads_negative_shifts():
    """`--tta 0,0 1,0 -1,0 0,1 0,-1`, as the README writes it: -1,0 is a shift, not an option."""
    import runpy

    from conftest import ROOT

    parser = runpy.run_path(str(ROOT / "scripts" / "ensemble.py"))["parser"]()
    args = parser.parse_args(["runs/a", "runs/b", "--tta", "0,0", "1,0", "-1,0", "0,1", "0,-1", "--json", "e.json"])
    assert args.tta == ["0,0", "1,0", "-1,0", "0,1", "0,-1"] and [str(r) for r in args.runs] == ["runs/a", "runs/b"]


def test_ensemble_script_takes_a_sweep_folder_or_its_glob(tmp_path):
    """`outputs/multirun/<time>` stands for its jobs, and `<time>/*` leaves out the sweep's files."""
    import runpy

    from conftest import ROOT

    run_folders = runpy.run_path(str(ROOT / "scripts" / "ensemble.py"))["run_folders"]
    sweep = tmp_path / "sweep"
    for job in ("0_seed=0", "1_seed=1"):
        (sweep / job).mkdir(parents=True)
        (sweep / job / "run.yaml").write_text("status: completed\n")
        (sweep / job / "config.yaml").write_text("seed: 0\n")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (sweep / "summary.md").write_text("# Sweep\n")
    jobs = [sweep / "0_seed=0", sweep / "1_seed=1"]
    assert run_folders([sweep]) == jobs
    assert run_folders(sorted(sweep.iterdir())) == jobs
    assert run_folders([tmp_path / "missing"]) == [tmp_path / "missing"]  # left for load_run to name
