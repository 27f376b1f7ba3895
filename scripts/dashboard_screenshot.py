"""Screenshot the dashboards with headless Chromium (Debian's `chromium`): TensorBoard's SCALARS,
HPARAMS and IMAGES tabs for a log folder, as one PNG; with --mlflow, the MLflow UI comparing the runs
of one experiment (a sweep run with logger=[tensorboard,mlflow]):

    python scripts/dashboard_screenshot.py outputs/multirun/<sweep> --out docs/tensorboard.png
    python scripts/dashboard_screenshot.py outputs/multirun/<sweep> --mlflow sqlite:///outputs/mlflow/mlflow.db \
        --experiment "sweep <sweep>" --mlflow-out docs/mlflow.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from PIL import Image

# Without the networking switches Chromium keeps calling Google's hosts, which this machine refuses.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the dashboard's server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.read() not in (b"", b"[]"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"the dashboard's server did not serve {url} within {seconds:.0f} s")


def screenshot(browser: str, url: str, path: Path, size: tuple[int, int], profile: Path) -> Image.Image:
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                    "--virtual-time-budget=60000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=120)
    return Image.open(path).convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/tensorboard.png"))
    parser.add_argument("--scalars", default="val/acc", help="tag filter for the SCALARS view")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--mlflow", help="an MLflow store (sqlite:///outputs/mlflow/mlflow.db) to screenshot too")
    parser.add_argument("--experiment", help="the MLflow experiment whose runs to compare (a sweep's: 'sweep <its folder>')")
    parser.add_argument("--mlflow-out", type=Path, default=Path("docs/mlflow.png"))
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        sys.exit("needs Chromium: apt-get install chromium")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(args.logdir), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/data/runs", server)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            shots = [screenshot(browser, f"{base}/#scalars&tagFilter={args.scalars}&_smoothingWeight=0", tmp / "scalars.png", (args.width, 470), tmp / "p1"),
                     screenshot(browser, f"{base}/#hparams", tmp / "hparams.png", (args.width, 560), tmp / "p2"),
                     screenshot(browser, f"{base}/#images", tmp / "images.png", (args.width, 620), tmp / "p3")]
    finally:
        server.terminate()
        server.wait(timeout=30)
    save_sheet(shots, args.out)
    if args.mlflow:
        save_sheet([mlflow_compare(browser, args.mlflow, args.experiment, args.width)], args.mlflow_out)


def save_sheet(shots: list[Image.Image], out: Path) -> None:
    sheet = Image.new("RGB", (max(s.width for s in shots), sum(s.height for s in shots)), "white")
    top = 0
    for s in shots:
        sheet.paste(s, (0, top))
        top += s.height
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=64).save(out, optimize=True)  # a screenshot needs few colours: a small file
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


def mlflow_compare(browser: str, store: str, experiment: str, width: int) -> Image.Image:
    """`mlflow server` on the store (what `mlflow ui` runs), and its page comparing the experiment's runs."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", server)
        query = urllib.parse.quote(experiment)
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={query}") as r:
            exp_id = json.load(r)["experiment"]["experiment_id"]
        search = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=json.dumps({"experiment_ids": [exp_id]}).encode(),
                                        headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(search) as r:
            ids = sorted(run["info"]["run_id"] for run in json.load(r)["runs"])
        url = f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}&experiments={urllib.parse.quote(json.dumps([exp_id]))}"
        with tempfile.TemporaryDirectory() as tmp:
            return screenshot(browser, url, Path(tmp) / "compare.png", (width, 2200), Path(tmp) / "profile")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
