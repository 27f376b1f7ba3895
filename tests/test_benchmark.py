"""scripts/benchmark.py runs end to end and writes its JSON (figures are not asserted: noisy machines)."""

from __future__ import annotations

import json

from conftest import run_script_in_process


def test_benchmark_runs_on_a_tiny_tree(tiny_tree, tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script_in_process("benchmark", "--data-dir", str(tiny_tree), "--models", "linear,cnn", "--steps", "2", "--batch-size", "16",
                                 "--workers", "0", "--variant", "model.channels_last=true", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["load"]["images"] == 520
    assert set(result["training"]) == {"linear", "cnn"}
    assert all(r["bare_img_s"] > 0 and r["lightning_img_s"] > 0 for r in result["training"].values())
    assert "| ratio |" in proc.stdout
    assert all(r["variants"]["model.channels_last=true"]["lightning_img_s"] > 0 for r in result["training"].values())
    assert "| cnn | `model.channels_last=true` |" in proc.stdout


def test_time_to_accuracy_on_a_tiny_tree(tiny_tree, tmp_path):
    """--tta runs a recipe once per seed and reports when val/acc crossed each threshold (or never)."""
    out = tmp_path / "tta.json"
    proc = run_script_in_process("benchmark", "--data-dir", str(tiny_tree), "--skip-speed", "--tta", "fast", "--seeds", "2",
                                 "--set", "data.val_size=60", "--set", "data.batch_size=32", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(out.read_text())["time_to_accuracy"]["fast"]["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert all(0 <= r["test_acc"] <= 1 and r["fit_s"] > 0 and "s_to_0.99" in r for r in runs)
    assert "| fast | 2 |" in proc.stdout
