"""Test accuracy against training seconds, per recipe over seeds: read from finished runs (or
handed over by scripts/benchmark.py --tta) and drawn as one figure, with other tools' points."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import yaml


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # a file only: never a window
    import matplotlib.pyplot as plt

    return plt


@dataclass
class Run:
    recipe: str
    seed: int | None
    test_acc: float
    fit_s: float
    # (seconds since fit started, test accuracy) at each epoch's end; empty unless validation ran on testing/
    curve: list[tuple[float, float]] = field(default_factory=list)
    machine: str = ""  # the CPU or GPU it trained on, as run.yaml records it


@dataclass
class Peer:
    """Another tool's result to show beside the recipes: `label=seconds:accuracy` (accuracy in %)."""

    label: str
    seconds: float
    accuracy: float

    @classmethod
    def parse(cls, text: str) -> Peer:
        try:
            label, rest = text.rsplit("=", 1)
            seconds, acc = rest.split(":")
            return cls(label.strip(), float(seconds), float(acc))
        except ValueError:
            raise ValueError(f"--peer {text!r}: write it as LABEL=SECONDS:ACCURACY, e.g. 'fastai ResNet-18=860:98.89'") from None


def test_curve(run_dir: Path) -> list[tuple[float, float]]:
    """The run's val/acc at each epoch end against the seconds of training so far (the sum of
    time/epoch_seconds), from its TensorBoard events; meaningful when validation ran on testing/."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags().get("scalars", [])
    if "val/acc" not in tags or "time/epoch_seconds" not in tags:
        return []
    accs = [e.value for e in sorted(events.Scalars("val/acc"), key=lambda e: e.step)]
    secs = [e.value for e in sorted(events.Scalars("time/epoch_seconds"), key=lambda e: e.step)]
    elapsed, curve = 0.0, []
    for s, a in zip(secs, accs):
        elapsed += s
        curve.append((elapsed, a))
    return curve


def runs_in(folders: Iterable[Path]) -> list[Run]:
    """Every completed, tested run under `folders` (searched for run.yaml), named by its
    experiment (or task_name)."""
    runs = []
    for folder in folders:
        for record_file in sorted(Path(folder).rglob("run.yaml")):
            record = yaml.safe_load(record_file.read_text()) or {}
            metrics = record.get("metrics") or {}
            if record.get("status") != "completed" or "test/acc" not in metrics or "fit_seconds" not in metrics:
                continue
            cfg_file = record_file.parent / "config.yaml"
            cfg = (yaml.safe_load(cfg_file.read_text()) or {}) if cfg_file.is_file() else {}
            recipe = (record.get("choices") or {}).get("experiment") or cfg.get("task_name") or record_file.parent.name
            on_test = (cfg.get("data") or {}).get("val_size") == 0
            runs.append(Run(recipe, cfg.get("seed"), metrics["test/acc"], metrics["fit_seconds"],
                            test_curve(record_file.parent) if on_test else [],
                            str((record.get("versions") or {}).get("machine", ""))))
    return runs


def save(path: Path, runs: Iterable[Run]) -> None:
    """The figure's data, so that it can be drawn again (and a recipe replaced) once the run
    folders are gone."""
    path.write_text(json.dumps([asdict(r) for r in runs], indent=1) + "\n")


def load(path: Path) -> list[Run]:
    try:
        return [Run(**{**r, "curve": [tuple(c) for c in r.get("curve", [])]}) for r in json.loads(path.read_text())]
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path} is not a time-to-accuracy JSON written by --plot ({e})") from None


def runs_from(sources: Iterable[Path]) -> list[Run]:
    """The runs under run folders and in JSON files written by `save`. A recipe found in a run
    folder replaces the same recipe read from a JSON file: the way to redraw one recipe anew."""
    sources = list(sources)
    fresh = runs_in([s for s in sources if s.is_dir()])
    fresh_recipes = {r.recipe for r in fresh}
    kept = [r for s in sources if s.is_file() for r in load(s) if r.recipe not in fresh_recipes]
    return kept + fresh


def spread(values: Sequence[float]) -> float:
    """The sample standard deviation, 0 for a single value."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def by_recipe(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by recipe, the groups in order of their mean training seconds."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.recipe, []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: statistics.fmean(r.fit_s for r in kv[1])))


def summary(groups: dict[str, list[Run]]) -> str:
    """A Markdown table: per recipe, its seeds, test accuracy and training seconds (mean ± std, min)."""
    lines = ["| recipe | seeds | test/acc mean ± std | lowest | fit s mean ± std | median fit s |", "| --- | --- | --- | --- | --- | --- |"]
    for recipe, runs in groups.items():
        accs, secs = [r.test_acc * 100 for r in runs], [r.fit_s for r in runs]
        seeds = ", ".join(str(r.seed) for r in runs)
        lines.append(f"| {recipe} | {seeds} | {statistics.fmean(accs):.2f} ± {spread(accs):.2f}% | {min(accs):.2f}% "
                     f"| {statistics.fmean(secs):.1f} ± {spread(secs):.1f} | {statistics.median(secs):.1f} |")
    return "\n".join(lines)


def mean_curve(runs: Sequence[Run]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Epoch by epoch over the runs that have that epoch: mean seconds, mean, lowest and highest accuracy (%)."""
    n = max((len(r.curve) for r in runs), default=0)
    out: tuple[list[float], ...] = ([], [], [], [])
    for i in range(n):
        points = [r.curve[i] for r in runs if len(r.curve) > i]
        accs = [a * 100 for _, a in points]
        for column, v in zip(out, (statistics.fmean(s for s, _ in points), statistics.fmean(accs), min(accs), max(accs))):
            column.append(v)
    return out  # type: ignore[return-value]


def figure(groups: dict[str, list[Run]], peers: Sequence[Peer] = (), title: str = ""):
    """Test accuracy (%) against training seconds (log scale): for each recipe its mean curve over
    the epochs with the seeds' range shaded, and its final accuracy as mean ± std over seeds;
    peers as labelled points."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lowest = 99.0
    for (recipe, runs), color in zip(groups.items(), colors):
        secs, mean, lo, hi = mean_curve(runs)
        if len(secs) > 1:
            ax.plot(secs, mean, color=color, lw=1.2, alpha=0.8)
            ax.fill_between(secs, lo, hi, color=color, alpha=0.15, lw=0)
        accs, fits = [r.test_acc * 100 for r in runs], [r.fit_s for r in runs]
        m = statistics.fmean(accs)
        ax.errorbar(statistics.fmean(fits), m, xerr=spread(fits), yerr=spread(accs), fmt="o", color=color, capsize=3,
                    label=f"{recipe}: {m:.2f} ± {spread(accs):.2f}% in {statistics.fmean(fits):,.0f} s ({len(runs)} seeds)")
        lowest = min(lowest, min(accs))  # early epochs may fall below the axis: the finish is what counts
    for p in peers:
        ax.plot(p.seconds, p.accuracy, marker="s", color="0.35", ls="none")
        ax.annotate(p.label, (p.seconds, p.accuracy), textcoords="offset points", xytext=(6, -3), fontsize=8, color="0.25")
        lowest = min(lowest, p.accuracy)
    for level in (99.0, 99.5, 99.7):
        ax.axhline(level, color="0.8", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(max(math.floor(lowest * 2) / 2 - 0.1, 90), 99.9)
    ax.set_xlabel("training seconds (fit, validation included)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig
