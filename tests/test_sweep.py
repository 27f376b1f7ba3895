"""Sweeps: one summary per multirun, seed groups, failed and diverged jobs, the exit status."""

from __future__ import annotations

import csv

import pytest
import yaml

from conftest import run_in_process, run_script_in_process
from mnist99.sweep import collect, seed_groups, write_summary


def fake_job(sweep, num, overrides, status="completed", test_acc=None, val_best=None, lr=0.01, seed=42, model="mlp", reference=None):
    job = sweep / f"{num}_{','.join(overrides)}"
    job.mkdir(parents=True)
    record = {"status": status, "overrides": overrides, "choices": {"model": model}, "epochs": 3, "wall_seconds": 5.0 + num}
    if test_acc is not None:
        record["metrics"] = {"test/acc": test_acc, "val/acc_best": val_best if val_best is not None else test_acc - 0.01}
    if status != "completed":
        record["error"] = "The training loss became nan at step 4 (epoch 0), so the run was stopped. More text."
    (job / "run.yaml").write_text(yaml.safe_dump(record))
    cfg = {"optimizer": {"lr": lr}, "seed": seed, "optimized_metric": "val/acc_best", "reference": reference}
    (job / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture
def sweep(tmp_path):
    s = tmp_path / "multirun" / "2026-11-28_12-00-00"
    fake_job(s, 0, ["model=linear", "optimizer.lr=0.01"], test_acc=0.92, lr=0.01, model="linear")
    fake_job(s, 1, ["model=linear", "optimizer.lr=0.1"], test_acc=0.91, lr=0.1, model="linear")
    fake_job(s, 2, ["model=mlp", "optimizer.lr=0.01"], test_acc=0.97, lr=0.01)
    fake_job(s, 3, ["model=mlp", "optimizer.lr=0.1"], test_acc=0.96, lr=0.1)
    fake_job(s, 4, ["model=mlp", "optimizer.lr=100"], status="diverged", lr=100)
    return s


def test_summary_files_rank_jobs_and_keep_failures(sweep):
    write_summary(sweep)
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["job"][0] for r in rows] == ["2", "3", "0", "1", "4"]  # by val/acc_best, the diverged job last
    assert rows[-1]["status"] == "diverged" and rows[-1]["error"].startswith("The training loss became nan")
    md = (sweep / "summary.md").read_text()
    assert "5 jobs: 4 completed, 1 diverged" in md and "| 2 | model=mlp optimizer.lr=0.01 | completed | 96.00% | 97.00% |" in md
    png = (sweep / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_seed_sweeps_are_grouped_with_mean_and_std(tmp_path):
    s = tmp_path / "sweep"
    for i, (seed, acc) in enumerate([(0, 0.990), (1, 0.992), (2, 0.994)]):
        fake_job(s, i, ["experiment=fast", f"seed={seed}"], test_acc=acc, seed=seed)
    fake_job(s, 3, ["experiment=accurate", "seed=0"], test_acc=0.995, seed=0)
    (group,) = seed_groups(collect(s))
    assert group["overrides"] == "experiment=fast" and group["seeds"] == [0, 1, 2]
    assert group["test/acc"] == pytest.approx((0.992, 0.002))
    write_summary(s)
    assert "| experiment=fast | 0, 1, 2 | 99.20% ± 0.20% |" in (s / "summary.md").read_text()


def test_reference_column_when_recipes_name_one(tmp_path):
    s = tmp_path / "sweep"
    fake_job(s, 0, ["experiment=blog_mlp"], test_acc=0.9635, reference={"name": "blog", "test_acc": 0.95})
    write_summary(s)
    md = (s / "summary.md").read_text()
    assert "| blog |" in md.splitlines()[4] and "| 96.35% | 95.00% |" in md


def test_summarize_script_and_its_error(sweep, tmp_path):
    proc = run_script_in_process("summarize", str(sweep))
    assert proc.returncode == 0 and "| 4 | model=mlp optimizer.lr=100 | diverged |" in proc.stdout
    empty = run_script_in_process("summarize", str(tmp_path))
    assert empty.returncode != 0 and "no job folders" in empty.stderr and "Traceback" not in empty.stderr


def test_multirun_summarises_and_counts_failed_jobs(tiny_tree, tmp_path):
    """A real sweep with one impossible job: the others finish, the summary is written, and the sweep exits with
    3, the code for "some jobs failed" (not 2, a command refused at start-up)."""
    proc = run_in_process("train", "-m", f"data.data_dir={tiny_tree}", "data.val_size=60", "trainer.max_epochs=1", "model=linear",
                   "data.batch_size=32,0", f"paths.log_dir={tmp_path}", "trainer.enable_progress_bar=false")
    assert proc.returncode == 3, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    rows = {r["job"].split("_")[0]: r for r in csv.DictReader((sweep / "summary.csv").open())}
    assert "data.data_dir" not in rows["0"]["overrides"] and "data.batch_size=32" in rows["0"]["overrides"]
    assert rows["0"]["status"] == "completed" and float(rows["0"]["test/acc"]) > 0.5
    assert rows["1"]["status"] == "failed" and rows["1"]["error"].startswith("data.batch_size=0 is impossible")
    assert "sweep of 2 jobs, 1 failed or diverged" in proc.stdout
    assert (sweep / "summary.png").is_file()
