"""Shared fixtures: a tiny synthetic PNG tree, in-process config composition, the real MNIST files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

from mnist99.config import CONFIG_DIR, register_resolvers

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"

register_resolvers()


def synthetic_digit(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 uint8 image whose class is a bright 6x6 block at a label-dependent place, plus noise:
    learnable in a few steps by every model, so 'accuracy went up' is a fair test."""
    img = rng.integers(0, 60, size=(28, 28), dtype=np.uint8)
    r, c = divmod(label, 4)
    y, x = 2 + 8 * r + rng.integers(-1, 2), 2 + 6 * c + rng.integers(-1, 2)
    img[y : y + 6, x : x + 6] = 255
    return img


def write_png_tree(root: Path, n_train: int = 40, n_test: int = 12, classes: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("training", n_train), ("testing", n_test)):
        for label in range(classes):
            d = root / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(synthetic_digit(label, rng), mode="L").save(d / f"{label * 1000 + i}.png")
    return root


@pytest.fixture(scope="session", autouse=True)
def decoded_cache(tmp_path_factory) -> Path:
    """Decoded splits go to a folder of the test session's (the runs it starts inherit it), not to
    the checkout's data/.cache."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["MNIST99_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    """10 classes x (40 training + 12 testing) synthetic 28x28 PNGs."""
    return write_png_tree(tmp_path_factory.mktemp("tiny") / "mnist_png")


@pytest.fixture
def make_cfg(tmp_path, tiny_tree):
    """Compose `conf/train.yaml` in-process with overrides, pointed at the tiny tree and tmp_path."""

    def _make(*overrides: str, data_dir: Path | None = None, val_size: int | None = 60) -> DictConfig:
        """val_size=None keeps the composed value (the tiny tree's 400 images are fewer than 5000)."""
        GlobalHydra.instance().clear()
        base = [f"data.data_dir={data_dir or tiny_tree}"] + ([f"data.val_size={val_size}"] if val_size is not None else [])
        with initialize_config_dir(config_dir=CONFIG_DIR):
            cfg = compose("train", overrides=[*base, *overrides], return_hydra_config=True)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
            cfg.hydra.runtime.output_dir = str(tmp_path)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _make
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def shared_mnist() -> Path:
    if not all((SHARED_MNIST / f"{n}.gz").is_file() for n in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")):
        pytest.skip(f"the real MNIST IDX files are not at {SHARED_MNIST}")
    return SHARED_MNIST


def fit(cfg: DictConfig, *callbacks):
    """mnist99.pipeline.run of a composed config, `callbacks` first among the run's: its outcome for
    the test to look at (metrics, parts, status and message); a crash raises its exception."""
    from mnist99.pipeline import run

    outcome = run(cfg, callbacks=callbacks)
    if outcome.status == "crashed":
        raise outcome.error
    return outcome


def one_paragraph(text: str) -> str:
    """The one paragraph a command said on its stderr: asserted to be mnist99's only one, a line of its
    own with nothing after it, and no traceback."""
    lines = text.rstrip().splitlines()
    said = [i for i, line in enumerate(lines) if line.startswith("mnist99: ")]
    assert len(said) == 1 and said[0] == len(lines) - 1 and "Traceback" not in text, text[-3000:]
    return lines[said[0]]


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python train.py ARGS` in a new interpreter, as a user would; returns the finished process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def run_in_process(command: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python <command>.py ARGS` run by its main() inside this process: what the user sees
    (stdout, stderr, exit status) without a new interpreter's ~10 s of imports. Most tests run
    this way; DDP, signals, parallel launchers and the first end-to-end run keep a real process."""
    import importlib

    main = importlib.import_module(f"mnist99.cli.{command}").main
    return captured(main, [str(ROOT / f"{command}.py"), *args], cwd)


def run_script_in_process(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python scripts/<script>.py ARGS`, run as __main__ inside this process (see run_in_process)."""
    import runpy

    path = ROOT / "scripts" / f"{script}.py"
    return captured(lambda: runpy.run_path(str(path), run_name="__main__"), [str(path), *args], cwd)


def captured(main, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run main() with sys.argv = argv in cwd; its stdout, stderr and exit status as a finished process's."""
    import contextlib
    import io
    import traceback

    out, err, code = io.StringIO(), io.StringIO(), 0
    saved_argv, here = sys.argv, Path.cwd()
    sigterm = signal.getsignal(signal.SIGTERM)  # the command puts in its own (mnist99.stopping); pytest's stays
    GlobalHydra.instance().clear()
    try:
        sys.argv = list(argv)
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    code = e.code or 0
                else:  # sys.exit("message"): the message on stderr, status 1
                    print(e.code, file=sys.stderr)
                    code = 1
            except Exception:  # noqa: BLE001 - a crash, shown as the interpreter would
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(here)
        signal.signal(signal.SIGTERM, sigterm)
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def trained_run_process(tiny_tree, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """(the finished command, the run folder) of the default recipe as a user runs it:
    `python train.py` (in-process: the tests that need a new interpreter start their own), started
    from another folder, 2 epochs on the tiny tree, TensorBoard on, every step logged. Shared by
    the tests that read a run folder: one that changes the folder works on a copy."""
    logs = tmp_path_factory.mktemp("runlogs")
    proc = run_in_process("train", f"data.data_dir={tiny_tree}", "data.val_size=60", "data.batch_size=32", "trainer.max_epochs=2",
                          "trainer.log_every_n_steps=1", f"paths.log_dir={logs}", cwd=tmp_path_factory.mktemp("elsewhere"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = (logs / "runs").iterdir()
    return proc, found


@pytest.fixture(scope="session")
def trained_run(trained_run_process) -> Path:
    return trained_run_process[1]


@pytest.fixture(scope="session")
def real_subset(shared_mnist, tmp_path_factory):
    """The first 4000 training and 4000 test images of MNIST, as an mnist_png tree."""
    from mnist99.data.prepare import prepare_mnist_png

    root = tmp_path_factory.mktemp("real") / "mnist_png"
    return prepare_mnist_png(root, source=shared_mnist, mirrors=(), pypi=False, progress=False, limit=4000)


def search_path_with(tmp_path: Path, relpath: str, text: str) -> str:
    """Write `text` as conf/<relpath> under tmp_path; returns the override that adds that conf/ to
    Hydra's search path (a config of the test's own, as a user's would be)."""
    path = tmp_path / "conf" / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
