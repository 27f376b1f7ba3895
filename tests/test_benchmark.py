"""scripts/benchmark.py runs end to end and writes its JSON (figures are not asserted: noisy machines)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_benchmark_runs_on_a_tiny_tree(tiny_tree, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--data-dir", str(tiny_tree), "--models", "linear,cnn",
         "--steps", "2", "--batch-size", "16", "--workers", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["load"]["images"] == 520
    assert set(result["training"]) == {"linear", "cnn"}
    assert all(r["bare_img_s"] > 0 and r["lightning_img_s"] > 0 for r in result["training"].values())
    assert "| ratio |" in proc.stdout
