"""The package's shape: the library apart from the commands, no import cycles, public APIs only,
and a wheel that carries its configs."""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import inspect
import shutil
import subprocess
import sys
import textwrap
import traceback
import zipfile
from pathlib import Path

import lightning as L
import pytest
import yaml

from conftest import ROOT

PACKAGE = ROOT / "mnist99"
# The one module allowed to touch Lightning's internals (DDP jobs inside a Hydra sweep).
INTERNALS_MODULE = PACKAGE / "ddp_sweep.py"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_mnist99_modules(path: Path) -> set[str]:
    """Every mnist99 module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mnist99")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist99"):
            # `from mnist99 import ensemble` imports the module mnist99.ensemble
            subs = {f"{node.module}.{a.name}" for a in node.names}
            found |= {s for s in subs if (ROOT / (s.replace(".", "/") + ".py")).is_file()} or {node.module}
    return found


def test_no_module_imports_one_that_imports_it_back():
    graph = {module_name(p): imported_mnist99_modules(p) for p in PACKAGE.rglob("*.py")}
    assert "mnist99.pipeline" in graph and "mnist99.cli.train" in graph

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, {m}))
    assert not cycles, f"modules in an import cycle: {cycles}"


def test_importing_the_library_changes_no_global_state():
    """evaluate and predict import nothing of the commands, and leave warnings, resolvers and
    logging as they were."""
    probe = """
import logging, sys, warnings
from omegaconf import OmegaConf
import lightning  # its own import-time settings are not ours
filters, levels = list(warnings.filters), {n: logging.getLogger(n).level for n in ("lightning", "lightning.pytorch")}
import mnist99.evaluate, mnist99.predict, mnist99.pipeline, mnist99.build
assert not [m for m in sys.modules if m.startswith("mnist99.cli")], [m for m in sys.modules if m.startswith("mnist99.cli")]
assert warnings.filters == filters, "warning filters changed"
assert not [r for r in ("mnist99.root", "mnist99.new_folder", "mnist99.mode") if OmegaConf.has_resolver(r)], "resolvers registered"
assert {n: logging.getLogger(n).level for n in levels} == levels, "logging levels changed"
print("clean")
"""
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr[-2000:]


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def import_table(tree: ast.Module) -> dict[str, str]:
    """What each imported name stands for: {"L": "lightning", "nn": "torch.nn", "WeightAveraging":
    "lightning.pytorch.callbacks.WeightAveraging"}."""
    table = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                table[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            table.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    return table


def dotted(expr: ast.expr) -> str | None:
    """`L.Callback` -> "L.Callback"; `Generic[T]` -> "Generic"; anything else -> None."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        head = dotted(expr.value)
        return f"{head}.{expr.attr}" if head else None
    return dotted(expr.value) if isinstance(expr, ast.Subscript) else None


def resolve(path: str):
    """The object a dotted path names, importing the longest module prefix it has."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


@functools.cache
def library_private_names(cls: type) -> frozenset[str]:
    """The private names a library class and its bases define or set on their instances
    (`_average_model`, set in WeightAveraging.__init__), read from their class dicts and sources."""
    names = set()
    for c in cls.__mro__:
        if c is object:
            continue
        names |= {n for n in vars(c) if is_private(n)}
        try:
            source = textwrap.dedent(inspect.getsource(c))
        except (OSError, TypeError):  # a class written in C, or without its source
            continue
        names |= {n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                  and n.value.id in ("self", "cls") and is_private(n.attr)}
    return frozenset(names)


def inherited_private_names(path: Path, class_name: str, seen: frozenset = frozenset()) -> set[str]:
    """The private names a class of mnist99 inherits from the library classes among its ancestors
    (through its own bases in mnist99, followed in their files); empty for a class of mnist99 alone."""
    tree = parsed(path)
    node = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    if node is None or (path, class_name) in seen:
        return set()
    seen |= {(path, class_name)}
    table, names = import_table(tree), set()
    for base in node.bases:
        name = dotted(base)
        if name is None:
            continue
        head, _, rest = name.partition(".")
        if head not in table:  # a class of this file, or a builtin
            if not rest and any(isinstance(n, ast.ClassDef) and n.name == head for n in ast.walk(tree)):
                names |= inherited_private_names(path, head, seen)
            elif not rest and isinstance(getattr(builtins, head, None), type):
                names |= library_private_names(getattr(builtins, head))
            continue
        full = ".".join([table[head], *([rest] if rest else [])])
        if full.split(".")[0] == "mnist99":  # mnist99's own class: its file, read the same way
            module, _, cls = full.rpartition(".")
            file = ROOT / (module.replace(".", "/") + ".py")
            if not file.is_file():
                file = ROOT / module.replace(".", "/") / "__init__.py"
            names |= inherited_private_names(file, cls, seen)
            continue
        obj = resolve(full)
        if isinstance(obj, type):
            names |= library_private_names(obj)
    return names


def private_reads(path: Path) -> list[str]:
    """`obj._name` and getattr(obj, "_name") on anything but self, cls or a class of the file; and,
    on self or cls, a private name that a library base class of the enclosing class defines or sets
    (a subclass of Lightning's WeightAveraging reading `self._average_model`). A class's own private
    attributes stay allowed."""
    tree = parsed(path)
    own = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)} | {"self", "cls"}
    where = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    found = []

    def visit(node: ast.AST, inherited: set[str]) -> None:
        if isinstance(node, ast.ClassDef):
            inherited = inherited_private_names(path, node.name)
        name, base = None, None
        if isinstance(node, ast.Attribute):
            name, base = node.attr, node.value
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr", "hasattr") and len(node.args) > 1:
            if isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                name, base = node.args[1].value, node.args[0]
        if name and is_private(name):
            on_self = isinstance(base, ast.Name) and base.id in ("self", "cls")
            if not (isinstance(base, ast.Name) and base.id in own) or (on_self and name in inherited):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)[:80]}")
        for child in ast.iter_child_nodes(node):
            visit(child, inherited)

    visit(tree, set())
    return found


# numpy's array reconstructor, which the restricted unpickler of the PyPI fallback allows by name
NOT_LIGHTNING_OPTUNA_OR_HYDRA = {"multiarray._reconstruct"}


def test_no_private_attribute_outside_the_ddp_sweep_module():
    files = [p for p in [*PACKAGE.rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")] if p != INTERNALS_MODULE]
    found = [f for p in files for f in private_reads(p) if not any(ok in f for ok in NOT_LIGHTNING_OPTUNA_OR_HYDRA)]
    assert not found, "private attributes read or written:\n" + "\n".join(found)
    assert private_reads(INTERNALS_MODULE), "the scan sees nothing: it cannot fail"


def test_the_scan_catches_a_library_base_class_private_reached_through_self(tmp_path):
    """self._name is a library's internals when a library base class defines or sets _name (here
    Lightning's WeightAveraging, as mnist99's EMA once read it), and the class's own business
    otherwise; mnist99's own bases are followed to the library classes above them."""
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent("""
        import lightning as L
        from lightning.pytorch.callbacks import WeightAveraging


        class EMA(WeightAveraging):
            def __init__(self):
                super().__init__()
                self._own = 0

            @property
            def started(self):
                return self._own >= 0 and self._average_model is not None and getattr(self, "_latest_update_step") > 0


        class Again(EMA):
            def started(self):
                return self._swap_models


        class Plain(L.Callback):
            def __init__(self):
                self._seen = []  # a private name of its own: no base class has it


        class Mine:
            def f(self):
                return self._anything
    """))
    found = [line.split(": ", 1)[1] for line in private_reads(snippet)]
    assert found == ["self._average_model", "getattr(self, '_latest_update_step')", "self._swap_models"], found


def test_ddp_sweep_module_refuses_untested_lightning(monkeypatch):
    from omegaconf import OmegaConf

    from mnist99 import ddp_sweep
    from mnist99.errors import ConfigError

    cfg = OmegaConf.create({"trainer": {"strategy": "ddp"}})
    monkeypatch.setattr(ddp_sweep.metadata, "version", lambda name: "9.9.0")
    with pytest.raises(ConfigError, match="tested with lightning 2.6.x; this environment has lightning 9.9.0"):
        ddp_sweep.check_supported(cfg)
    ddp_sweep.check_supported(OmegaConf.create({"trainer": {"strategy": "auto"}}))  # no DDP: nothing to refuse


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` would build, built from a copy of the sources (setuptools leaves
    build/ behind, whose stale files would end up in later wheels)."""
    out, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source") / "mnist99"
    run_outputs = {ROOT / n for n in ("data", "outputs", "multirun", "lightning_logs", "build")}
    shutil.copytree(ROOT, source, ignore=lambda folder, names: [
        n for n in names if Path(folder, n) in run_outputs or n in (".git", "__pycache__") or n.startswith(".venv")
        or n.endswith(".egg-info")])
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = out.glob("mnist99-*.whl")
    return found


def test_the_wheel_carries_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert {f"mnist99/conf/{c}" for c in configs} <= names
    assert "mnist99/cli/train.py" in names and "hydra_plugins/mnist99_search/__init__.py" in names


@pytest.mark.slow
def test_the_installed_wheel_trains_and_evaluates_outside_the_repository(wheel, tiny_tree, tmp_path):
    """The wheel alone (its files first on the path, not this checkout): train from an empty folder,
    then eval reproduces the run's test accuracy."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    command = lambda cli, *args: subprocess.run(  # noqa: E731
        [sys.executable, "-c", f"import sys; from mnist99.cli.{cli} import main; sys.argv[0] = 'mnist99-{cli}'; main()", *args],
        cwd=empty, capture_output=True, text=True, timeout=600, env=env)
    trained = command("train", "experiment=fast", "trainer.max_epochs=1", f"data.data_dir={tiny_tree}", "data.val_size=60",
                      "trainer.enable_progress_bar=false")
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run_dir,) = (empty / "outputs" / "runs").iterdir()  # outputs/ of the current folder: no checkout here
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    sources = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["config_sources"]
    main = next(s["path"] for s in sources if s["provider"] == "main")
    assert main.endswith(str(site / "mnist99" / "conf"))  # the configs the wheel carries, not this checkout's
    evaluated = command("eval", f"ckpt_path={run_dir}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert yaml.safe_load(next((empty / "outputs" / "evals").glob("*/eval.yaml")).read_text())["test/acc"] == pytest.approx(record["metrics"]["test/acc"], abs=1e-3)


class FramesAtFitStart(L.Callback):
    """The stack as `fit` starts: the frames of train.py and of the mnist99 package on it."""

    frames: list[str] = []

    def on_fit_start(self, trainer, pl_module):
        ours = [f for f in traceback.extract_stack() if Path(f.filename).resolve() == ROOT / "train.py"
                or Path(f.filename).resolve().is_relative_to(PACKAGE)]
        FramesAtFitStart.frames = [f"{Path(f.filename).relative_to(ROOT)}:{f.name}" for f in ours]


def test_five_frames_of_mnist99_lead_from_train_py_to_fit(tiny_tree, tmp_path, monkeypatch):
    """`python train.py experiment=fast` as a user starts it (train.py run as __main__): the command,
    its checks, Hydra's job and the run, then Lightning's fit."""
    import runpy

    from conftest import captured

    monkeypatch.setenv("MNIST99_ALLOW_TARGETS", "test_structure.FramesAtFitStart")
    args = ["experiment=fast", f"data.data_dir={tiny_tree}", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path}",
            "+callbacks.frames._target_=test_structure.FramesAtFitStart"]
    proc = captured(lambda: runpy.run_path(str(ROOT / "train.py"), run_name="__main__"), [str(ROOT / "train.py"), *args], ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert FramesAtFitStart.frames == ["train.py:<module>", "mnist99/commands.py:start", "mnist99/cli/train.py:main",
                                       "mnist99/cli/train.py:job", "mnist99/pipeline.py:run"]
