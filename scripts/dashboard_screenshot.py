"""Screenshot TensorBoard's SCALARS and HPARAMS tabs for a log folder with headless Chromium
(Debian's `chromium`), one PNG with both, for the README:

    python scripts/dashboard_screenshot.py outputs/multirun/<sweep> --out docs/tensorboard.png
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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
            sys.exit(f"tensorboard exited: {server.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.read() not in (b"", b"[]"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"tensorboard did not serve {url} within {seconds:.0f} s")


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
                     screenshot(browser, f"{base}/#hparams", tmp / "hparams.png", (args.width, 560), tmp / "p2")]
    finally:
        server.terminate()
        server.wait(timeout=30)
    sheet = Image.new("RGB", (args.width, sum(s.height for s in shots)), "white")
    top = 0
    for s in shots:
        sheet.paste(s, (0, top))
        top += s.height
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=64).save(args.out, optimize=True)  # a screenshot needs few colours: a small file
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
