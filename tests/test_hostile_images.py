"""Hostile pictures (not an image, truncated, too many pixels) are refused with a one-line reason,
before they are decoded, and no library warning reaches the console; a data folder names them
(data.on_bad_image=error) or leaves them out and lists them (skip). predict.py over such a folder:
tests/test_predict.py."""

from __future__ import annotations

import io
import shutil
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from mnist99.data import safe_image
from mnist99.data.digit_image import to_mnist
from mnist99.data.imagetree import decode_split, list_split
from mnist99.data.safe_image import BadImage, open_image
from mnist99.errors import DataError


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels, with almost no pixel data: what a
    decompression bomb's header looks like, in 100 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def encoded(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))


@pytest.mark.parametrize("width, height, words", [
    (8000, 8000, "8000x8000 = 64,000,000 pixels"),  # over mnist99's limit, under PIL's: only ours refuses it
    (12000, 12000, "12000x12000 = 144,000,000 pixels"),  # over PIL's warning limit too: no warning shown
    (100_000, 100_000, "more than"),  # over twice PIL's limit: PIL refuses it while reading the header
])
def test_a_header_over_the_limit_is_refused_before_decoding(tmp_path, width, height, words):
    path = tmp_path / "bomb.png"
    path.write_bytes(header_only_png(width, height))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(BadImage) as refused:
        warnings.simplefilter("always")
        with open_image(path) as img:
            img.load()
    # "too large", not "truncated": the header was enough, the 64 bytes of pixels were never decoded
    assert str(refused.value).startswith("too large: ") and words in str(refused.value)
    assert "over the limit of 40,000,000" in str(refused.value)
    assert caught == []


@pytest.mark.parametrize("data, words", [
    (truncated(encoded(NOISE, "PNG")), "truncated"),
    (truncated(encoded(NOISE, "JPEG")), "truncated"),
    (b"", "cannot identify image file"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "cannot identify image file"),  # EPS: not one of FORMATS
])
def test_broken_files_are_refused_with_a_reason(tmp_path, data, words):
    path = tmp_path / "picture.png"
    path.write_bytes(data)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(BadImage, match="^not a readable image") as refused:
        warnings.simplefilter("always")
        with open_image(path) as img:
            np.asarray(img)  # a truncated file is found only when decoded
    assert words in str(refused.value) and "\n" not in str(refused.value)
    assert caught == []


def test_truncated_files_stay_detected_once_mnist99_and_its_libraries_are_imported():
    import lightning.pytorch  # noqa: F401
    import torchvision.datasets  # noqa: F401

    import mnist99.cli.eval
    import mnist99.cli.predict
    import mnist99.cli.train
    import mnist99.evaluate
    import mnist99.pipeline
    import mnist99.predict  # noqa: F401

    # PIL would fill a truncated picture with grey, silently, if anything set this
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_the_limit_is_one_constant_read_when_opening(tmp_path, monkeypatch):
    path = tmp_path / "twenty.png"
    Image.new("L", (20, 20)).save(path)
    with open_image(path) as img:
        assert img.size == (20, 20)
    monkeypatch.setattr(safe_image, "MAX_PIXELS", 100)
    with pytest.raises(BadImage, match="20x20 = 400 pixels, over the limit of 100"), open_image(path):
        pass


def test_a_digit_picture_is_a_writable_array():
    # torch.from_numpy on a read-only array warns on the console ("non-writable NumPy array")
    for picture in (Image.new("L", (100, 100)), Image.new("L", (28, 28)), NOISE):
        assert to_mnist(picture).flags.writeable


@pytest.fixture
def hostile_split(tiny_tree, tmp_path):
    """The tiny tree's training split with an over-limit header and a truncated PNG in class 3."""
    root = tmp_path / "training"
    shutil.copytree(tiny_tree / "training", root)
    (root / "3" / "bomb.png").write_bytes(header_only_png(12000, 12000))
    cut = root / "3" / "3000.png"
    cut.write_bytes(truncated(cut.read_bytes()))
    return root


def test_a_data_folder_names_a_hostile_file_or_skips_and_lists_it(hostile_split):
    listing = list_split(hostile_split)
    filters = list(warnings.filters)
    with pytest.raises(DataError) as refused:
        decode_split(listing, threads=4)
    message = str(refused.value)
    assert str(hostile_split / "3") in message and "data.on_bad_image=skip" in message
    assert "too large: 12000x12000" in message or "not a readable image" in message

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = decode_split(listing, threads=4, on_bad_image="skip")
    assert caught == []
    assert len(decoded.images) == len(listing.files) - 2 == int(decoded.keep.sum())
    assert decoded.skipped == (
        f"{hostile_split / '3' / '3000.png'}: not a readable image (OSError: image file is truncated)",
        f"{hostile_split / '3' / 'bomb.png'}: too large: 12000x12000 = 144,000,000 pixels, over the limit of 40,000,000",
    )
    assert warnings.filters == filters  # threads opening pictures at once left the process's warning filters as they were
