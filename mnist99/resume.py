"""`python train.py resume=<run dir or .ckpt>`: the command line that continues a run (its saved config, its folder,
its checkpoint), or a one-paragraph refusal before anything is written: a group swapped, a file that is not a
checkpoint, a checkpoint without the state training goes on from, a run with nothing left to train. A .ckpt
copied alone continues with the config it holds, in a new run folder; a copied run folder writes into itself."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from mnist99 import trusted
from mnist99.cli import NO_RUN_FLAGS, split_argv
from mnist99.config import CONFIG_DIR, compose_checked, folder_name, group_options, new_folder, project_root
from mnist99.errors import ConfigError
from mnist99.locate import run_of, torch_file_start


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=<run dir or .ckpt>`: compose the run's config.yaml (what ran, its config-group choices
    included, so no override needs repeating), write into the same folder and continue from last.ckpt.
    Other overrides on the line still apply (e.g. trainer.max_epochs=5 to train longer). A .ckpt copied
    alone continues with the config it holds, in a new run folder. Refused in one paragraph, before
    anything is written: a group swapped, a file that cannot be resumed, a run with nothing left to train."""
    asked = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("resume=")]
    if not asked:
        return argv
    typed, rest = asked[-1], [a for a in argv[1:] if not a.startswith("resume=")]
    run_dir, ckpt = resumed_files(typed)
    swapped = [a for a in rest if a.split("=", 1)[0].lstrip("+~") in group_options()]
    if swapped:
        raise ConfigError(f"resume={typed} continues the run with its own saved config, whose groups are already composed, so "
                          f"{' '.join(swapped)} cannot swap one. Change keys instead (e.g. trainer.max_epochs=N, optimizer.lr=...), "
                          "or start a new run with that option.")
    flags, overrides = split_argv(rest)
    runs = not any(f in flags for f in (*NO_RUN_FLAGS, "--cfg", "-c"))  # --cfg job: only print the config
    state = resumable_state(typed, ckpt) if runs or run_dir is None else None
    record = None
    if run_dir is None:  # a checkpoint copied alone: its own config, into a new run folder
        config = lone_config(typed, ckpt, state, overrides)
        run_dir = Path(config.paths.output_dir)
    else:
        config = OmegaConf.load(run_dir / "config.yaml")
        with contextlib.suppress(OSError, yaml.YAMLError):  # missing or damaged: the checkpoint alone decides
            record = yaml.safe_load((run_dir / "run.yaml").read_text())
    trusted.check_targets(config)  # a copied folder may not be ours (its hydra section too)
    config_dir = composed_from(config, run_dir)
    lengths = trainer_lengths(overrides, config_dir) if runs else None  # None: an override checked_argv will refuse
    # trainer.max_epochs=null sizes the fit from train_images: a new one is a new length, which only the data tells
    if lengths and (lengths[0] is not None or lengths[2] == config.get("train_images")):
        refuse_nothing_left(typed, ckpt, state, lengths[:2], record)
    quoted = lambda p: str(p).replace('"', '\\"')  # noqa: E731 - a path as a quoted override value
    # Hydra's section of the run's config is Hydra's bare default: conf/hydra/default.yaml adds mnist99's console
    # (the messages alone), as a new run has it
    return [argv[0], "--config-path", str(config_dir), "--config-name", "config", f'hydra.run.dir="{quoted(run_dir)}"',
            "hydra.output_subdir=null", f'hydra.searchpath=["file://{quoted(CONFIG_DIR)}"]', "+hydra=default",
            f'++resume_ckpt="{quoted(ckpt)}"', *rest]


def refuse_nothing_left(typed: str, ckpt: Path, state: dict, lengths: tuple, record: dict | None) -> None:
    """A resume that would train nothing is refused (it would test the run again and write over its record),
    with the command that trains it further."""
    from mnist99.checkpoints import fit_progress, nothing_left

    where = nothing_left(state, *lengths, record)
    if where is None:
        return
    (epochs, step), max_steps = fit_progress(state), lengths[1]
    by_steps = isinstance(max_steps, int) and max_steps != -1 and step >= max_steps  # nothing_left's first test
    more = f"trainer.max_steps={2 * step}" if by_steps else f"trainer.max_epochs={epochs + 2}"
    raise ConfigError(f"resume={typed}: there is nothing left to train. Its checkpoint {ckpt.name} is at {where}"
                      + ("" if by_steps else f" (step {step})") + ", so Lightning would stop before its first step, and "
                      "resuming would only test it again" + (" and write over the run's record" if record else "")
                      + f". To train it further, give it more {'steps' if by_steps else 'epochs'} in all: python train.py "
                      f"resume={typed} {more}. To test it again: python eval.py ckpt_path={typed}")


def resumed_files(typed: str) -> tuple[Path | None, Path]:
    """(run folder, checkpoint) of `resume=`: a run folder and its last.ckpt, a .ckpt in its run folder,
    or (None, the file) for a .ckpt copied alone. Read without torch: a path that is neither is refused."""
    target = Path(typed).expanduser().resolve()
    if target.is_file():
        why = torch_file_start(target)
        if why:
            raise ConfigError(f"resume={typed}: {target} is neither a run folder nor a checkpoint: {why}. Pass the folder of a "
                              "run made by train.py (outputs/runs/<time>_<task>), or one of its .ckpt files.")
        return run_of(target), target
    ckpt = target / "checkpoints" / "last.ckpt"
    for needed in (target / "config.yaml", ckpt):
        if not needed.is_file():
            raise ConfigError(f"resume={typed}: {needed} does not exist. Pass the folder of a run made by train.py "
                              "(outputs/runs/<time>_<task>), which holds config.yaml and checkpoints/last.ckpt, "
                              "or one of its .ckpt files.")
    return target, ckpt


def resumable_state(typed: str, ckpt: Path) -> dict:
    """The checkpoint, read safely (torch, now that a run resumes), with the state training goes on from."""
    from mnist99.checkpoints import read_checkpoint

    state = read_checkpoint(ckpt, mmap=True)  # its counters and entry: the weights are read as the run starts
    lacking = [k for k in ("loops", "optimizer_states", "global_step") if k not in state]
    if lacking:
        raise ConfigError(f"resume={typed}: {ckpt} holds the weights only, without the state training goes on from "
                          f"({', '.join(lacking)}): it was saved with callbacks.model_checkpoint.save_weights_only=true, or by "
                          "another program. Resume from a full checkpoint of the run (its checkpoints/last.ckpt).")
    return state


def lone_config(typed: str, ckpt: Path, state: dict, overrides: list[str]) -> DictConfig:
    """The config a .ckpt copied alone holds, moved to a new run folder under outputs/runs/ (or the
    paths.log_dir= given): the lone file has no folder of its own, and its config still names the one it
    was written in, on whatever machine that was."""
    from mnist99.checkpoints import stored_run

    entry = stored_run(state, ckpt)
    if entry is None:
        raise ConfigError(f"resume={typed}: {ckpt} holds no config of its own (it was written by another program, or by an "
                          "mnist99 from before checkpoints carried their config), and it lies outside a run folder. Put it "
                          "back in its run's checkpoints/ folder and resume that run: python train.py resume=<run dir>.")
    config = OmegaConf.create(entry["config"])
    missing = [k for k in ("paths", "model", "data", "trainer") if not OmegaConf.is_dict(config.get(k))]
    if missing:
        raise ConfigError(f"resume={typed}: the config stored in {ckpt} has no {', '.join(missing)} section: it is not the "
                          "config of a run made by train.py.")
    given = [o.split("=", 1)[1].strip("'\"") for o in overrides if o.lstrip("+").startswith("paths.log_dir=")]
    log_dir = Path(given[-1]).expanduser().resolve() if given else Path(project_root()) / "outputs"
    run_dir = new_folder(str(log_dir / "runs" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{folder_name(config.get('task_name'))}"))
    config.paths.log_dir = str(log_dir)
    return moved(config, run_dir)


def moved(config: DictConfig, run_dir: Path | str) -> DictConfig:
    """`config` with every path inside the folder it names as its own (paths.output_dir: the trainer's,
    the checkpoints', the loggers') moved into `run_dir`: a copied run folder, or a lone checkpoint's new
    one, writes into itself, never into the folder it was copied from."""
    old = str(OmegaConf.select(config, "paths.output_dir", default="") or "")
    if not old or Path(old).resolve() == Path(run_dir).resolve():
        return config

    def move(value):
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
            return str(run_dir) + value[len(old.rstrip("/")):]
        return value

    return OmegaConf.create(move(OmegaConf.to_container(config)))


def composed_from(config: DictConfig, run_dir: Path) -> Path:
    """The folder whose config.yaml the resumed run composes: the run's own, unless its paths name
    another folder (a copied run, a lone checkpoint): then a copy moved into run_dir, in a temporary folder."""
    if (run_dir / "config.yaml").is_file() and moved(config, run_dir) is config:
        return run_dir
    folder = Path(tempfile.mkdtemp(prefix="mnist99-resume-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # read as Hydra composes (DDP's processes too): kept to the end
    OmegaConf.save(moved(config, run_dir), folder / "config.yaml")
    return folder


def trainer_lengths(overrides: list[str], config_dir: Path) -> tuple[object, object, object] | None:
    """(trainer.max_epochs, trainer.max_steps, train_images) of the config the resumed run composes (its
    config.yaml and the overrides), or None where Hydra cannot compose it (checked_argv then says why)."""
    try:
        cfg = compose_checked(overrides, str(config_dir), "config", check_values=False)
        lengths = tuple(OmegaConf.select(cfg, key, default=None) for key in ("trainer.max_epochs", "trainer.max_steps", "train_images"))
    except Exception:  # noqa: BLE001 - a bad override, an interpolation that cannot resolve yet
        return None
    # trainer.max_epochs=abc: not a length; checked_argv names it
    return lengths if all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in lengths) else None
