"""One summary per sweep: summary.csv, summary.md and summary.png in the multirun folder, written by the Hydra callback
`SweepSummary` when a multirun ends. Built from each job's run.yaml and config.yaml, so it works whatever launcher ran
the jobs, and for a sweep still running or interrupted (`scripts/summarize.py <sweep-dir>`)."""

from __future__ import annotations

import csv
import logging
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnist99.job_names import LOCATION_KEYS

log = logging.getLogger("mnist99")

FAILED = ("failed", "diverged", "crashed")
SEARCH_PICTURES = {"optuna_history.png": "optimization history", "optuna_importances.png": "parameter importances"}
COLUMNS = ["job", "overrides", "status", "val/acc_best", "test/acc", "reference", "epochs", "wall_s", "error"]


@dataclass
class SweepResult:
    """What the last sweep of this process left: main() turns `failed` into the exit code."""

    jobs: int = 0
    failed: int = 0


LAST_SWEEP = SweepResult()


def _job_number(path: Path) -> tuple[int, str]:
    m = re.match(r"(\d+)", path.parent.name)
    return (int(m.group(1)) if m else 1 << 30, path.parent.name)


def _load(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {} if path.is_file() else {}
    except (OSError, yaml.YAMLError):
        return {}


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder holding a run.yaml, in job order."""
    rows = []
    for record_file in sorted(Path(sweep_dir).glob("*/run.yaml"), key=_job_number):
        record, cfg = _load(record_file), _load(record_file.parent / "config.yaml")
        metrics, choices = record.get("metrics") or {}, record.get("choices") or {}
        overrides = [o for o in record.get("overrides") or [] if not o.lstrip("+~").startswith(LOCATION_KEYS)]
        reference = cfg.get("reference") or {}
        rows.append({
            "job": record_file.parent.name, "overrides": " ".join(overrides), "status": record.get("status", "unknown"),
            "val/acc_best": metrics.get("val/acc_best"), "test/acc": metrics.get("test/acc"),
            "reference": reference.get("test_acc"), "reference_name": reference.get("name"), "epochs": record.get("epochs"),
            "wall_s": record.get("wall_seconds"), "error": (record.get("error") or "").split(". ")[0][:160],
            # for grouping and plotting
            "arch": choices.get("experiment") or choices.get("model") or "", "lr": (cfg.get("optimizer") or {}).get("lr"),
            "seed": cfg.get("seed"), "no_seed": " ".join(o for o in overrides if not o.startswith("seed=")),
            "metric": cfg.get("optimized_metric", "val/acc_best"),
        })
    return rows


def ranked(rows: list[dict]) -> list[dict]:
    """Finished jobs by the optimized metric, best first; then the rest in job order."""
    metric = rows[0]["metric"] if rows else "val/acc_best"
    done = [r for r in rows if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    rest = [r for r in rows if r not in done]
    return sorted(done, key=lambda r: -r[metric]) + rest


def seed_groups(rows: list[dict]) -> list[dict]:
    """Jobs that differ only by seed, as mean ± std of their finished runs (groups of 2 or more)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["no_seed"], []).append(r)
    out = []
    for key, members in groups.items():
        done = [r for r in members if r["status"] == "completed" and r["test/acc"] is not None]
        if len({r["seed"] for r in members}) < 2 or len(done) < 2:
            continue
        stats = {m: (statistics.fmean(v), statistics.stdev(v)) for m in ("test/acc", "val/acc_best", "wall_s")
                 if len(v := [r[m] for r in done if r[m] is not None]) >= 2}
        out.append({"overrides": key or "(none)", "seeds": sorted(r["seed"] for r in done), "jobs": len(members), **stats})
    return out


def _pct(v) -> str:
    return f"{v:.2%}" if isinstance(v, (int, float)) and math.isfinite(v) else ""


def markdown(sweep_dir: Path, rows: list[dict]) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in dict.fromkeys(r["status"] for r in rows)}
    metric = rows[0]["metric"] if rows else "val/acc_best"
    ref = next((r["reference_name"] or "reference" for r in rows if r["reference"] is not None), None)
    common = set.intersection(*(set(r["overrides"].split()) for r in rows)) if len(rows) > 1 else set()
    shared = " ".join(o for o in rows[0]["overrides"].split() if o in common) if rows else ""
    lines = [f"# Sweep {Path(sweep_dir).name}", "",
             f"{len(rows)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f". Sorted by {metric}, best first."
             + (f" Every job also had `{shared}`." if shared else ""), "",
             "| job | overrides | status | val/acc_best | test/acc |" + (f" {ref} |" if ref else "") + " epochs | wall s | note |",
             "| --- | --- | --- | --- | --- |" + (" --- |" if ref else "") + " --- | --- | --- |"]
    for r in ranked(rows):
        wall = f"{r['wall_s']:.1f}" if isinstance(r["wall_s"], (int, float)) else ""
        own = " ".join(o for o in r["overrides"].split() if o not in common)
        lines.append(f"| {r['job'].split('_')[0]} | {own or '(defaults)'} | {r['status']} | {_pct(r['val/acc_best'])} "
                     f"| {_pct(r['test/acc'])} |" + (f" {_pct(r['reference'])} |" if ref else "")
                     + f" {r['epochs'] if r['epochs'] is not None else ''} | {wall} | {r['error'].replace('|', '/')} |")
    if groups := seed_groups(rows):
        lines += ["", "Jobs that differ only by seed:", "",
                  "| overrides | seeds | test/acc mean ± std | val/acc_best mean ± std | wall s mean |", "| --- | --- | --- | --- | --- |"]
        for g in groups:
            cell = lambda m, f: f.format(*g[m]) if m in g else ""  # noqa: E731
            lines.append(f"| {g['overrides']} | {', '.join(map(str, g['seeds']))} | {cell('test/acc', '{:.2%} ± {:.2%}')} "
                         f"| {cell('val/acc_best', '{:.2%} ± {:.2%}')} | {cell('wall_s', '{:.1f}')} |")
    searched = [f"![{what}]({file})" for file, what in SEARCH_PICTURES.items() if (Path(sweep_dir) / file).is_file()]
    if searched:  # an Optuna search's pictures (mnist99.study), of the whole study
        lines += ["", "The study, all its workers' trials:", "", *searched]
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: list[dict]) -> None:
    """Test accuracy against learning rate, one line per architecture (log x); a bar chart of the jobs when the learning
    rate does not vary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    metric = "test/acc" if any(r["test/acc"] is not None for r in rows) else rows[0]["metric"]
    done = [r for r in rows if r["status"] == "completed" and isinstance(r.get(metric), (int, float))]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    lrs = {r["lr"] for r in done if isinstance(r["lr"], (int, float))}
    if len(lrs) > 1:
        for arch in dict.fromkeys(r["arch"] for r in done):
            pts = sorted((r["lr"], r[metric] * 100) for r in done if r["arch"] == arch and isinstance(r["lr"], (int, float)))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=arch or "run")
        ax.set(xscale="log", xlabel="learning rate (optimizer.lr)")
        ax.legend(title="model")
    else:
        labels = [r["overrides"] or r["job"] for r in done]
        ax.barh(range(len(done)), [r[metric] * 100 for r in done])
        ax.set_yticks(range(len(done)), [lab if len(lab) < 40 else lab[:37] + "..." for lab in labels], fontsize=8)
        ax.invert_yaxis()
        low = min((r[metric] * 100 for r in done), default=0)
        ax.set_xlim(max(0, low - 2), 100)
    ax.set_ylabel(f"{metric} (%)") if len(lrs) > 1 else ax.set_xlabel(f"{metric} (%)")
    failed = sum(r["status"] in FAILED for r in rows)
    ax.set_title(f"{path.parent.name}: {len(done)} completed" + (f", {failed} failed or diverged (not shown)" if failed else ""), fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_summary(sweep_dir: Path) -> list[dict]:
    """Write summary.csv, summary.md and summary.png into `sweep_dir`; returns the rows."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(ranked(rows))
    (sweep_dir / "summary.md").write_text(markdown(sweep_dir, rows))
    if rows:
        plot(sweep_dir / "summary.png", rows)
    return rows


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, summarise it and remember how many jobs failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = write_summary(sweep_dir)
        LAST_SWEEP.jobs, LAST_SWEEP.failed = len(rows), sum(r["status"] in FAILED for r in rows)
        print(f"\nmnist99: sweep of {len(rows)} jobs, {LAST_SWEEP.failed} failed or diverged; summary: {sweep_dir / 'summary.md'}")
