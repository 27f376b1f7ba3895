"""The four MNIST IDX files: their names and published MD5s, the checks every copy must pass,
and torchvision's readers that decode them (mnist99.data.prepare gets them from a source)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Mapping

import numpy as np
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import calculate_md5

from mnist99.errors import DataError

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# The published MD5s of the uncompressed IDX files (torchvision knows only those of its .gz copies).
EXPECTED_MD5 = {
    TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",  # 47,040,016 bytes
    TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",  # 60,008 bytes
    TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",  # 7,840,016 bytes
    TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",  # 10,008 bytes
}

IMAGE_SHAPE = (28, 28)


def check_idx(path: Path, name: str) -> None:
    """Refuse, naming the file, what torchvision's IDX reader would misread or fail on silently: a magic number that is
    not unsigned bytes (a gzip file never unpacked), a header or payload shorter or longer than its dimensions say."""
    bad = f"MNIST file {name} is not a valid IDX file"
    fix = "Replace it with the original file (or delete it to let mnist99 fetch another copy)."
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4:
            raise DataError(f"{bad}: it is only {size} bytes long. {fix}")
        zero1, zero2, dtype_code, ndim = head
        if zero1 != 0 or zero2 != 0 or dtype_code != 0x08 or not 1 <= ndim <= 3:
            raise DataError(f"{bad}: bad magic number 0x{struct.unpack('>I', head)[0]:08x} (expected 0x0000080N for unsigned "
                            f"bytes with N = 1 to 3 dimensions; a gzip file that was not decompressed starts with 0x1f8b). {fix}")
        dims_bytes = f.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise DataError(f"{bad}: truncated header ({size} bytes for {ndim} dimensions). {fix}")
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    expected_len = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64))
    if size != expected_len:
        raise DataError(f"{bad}: dimensions {dims} need {expected_len:,} bytes but the file has {size:,} "
                        f"(truncated or padded). {fix}")


def verify(paths: Mapping[str, Path], expected_md5: Mapping[str, str] | None = None, origin: str = "", how_to_fix: str = "") -> None:
    """Check every IDX file of `paths` (name -> uncompressed file), its structure then its MD5;
    a DataError names the first that is missing, malformed or another file."""
    expected_md5 = EXPECTED_MD5 if expected_md5 is None else expected_md5
    where = f" from {origin}" if origin else ""
    for name in IDX_FILES:
        if name not in paths:
            raise DataError(f"MNIST file {name}{where} is missing. {how_to_fix}".strip())
        check_idx(paths[name], name)
        if (actual := calculate_md5(paths[name])) != expected_md5[name]:
            raise DataError(f"MNIST file {name}{where} failed its checksum: expected MD5 {expected_md5[name]} (of the "
                            f"uncompressed file) but got {actual} ({paths[name].stat().st_size:,} bytes); the file is corrupt, "
                            f"truncated or not the original MNIST file. {how_to_fix}".strip())


def _read(reader, paths: Mapping[str, Path], name: str, what: str) -> np.ndarray:
    """torchvision's reader on one file; what it refuses (asserts, wrong dtype or rank) named."""
    try:
        return reader(str(paths[name])).numpy()
    except (AssertionError, TypeError, ValueError, KeyError) as exc:
        raise DataError(f"MNIST file {name} does not hold {what} ({exc}). Replace it with the original file.") from None


def read_arrays(paths: Mapping[str, Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four checked IDX files as {"training": (images, labels), "testing": ...}, read by
    torchvision: images uint8 [N, 28, 28], labels uint8 [N] with values 0..9."""
    out = {}
    for split, img_name, lbl_name in (("training", TRAIN_IMAGES, TRAIN_LABELS), ("testing", TEST_IMAGES, TEST_LABELS)):
        images = _read(read_image_file, paths, img_name, "[N, 28, 28] unsigned-byte images")
        labels = _read(read_label_file, paths, lbl_name, "[N] unsigned-byte labels")
        if images.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"MNIST file {img_name} holds an array of shape {images.shape}; expected [N, 28, 28] images. "
                            "Replace it with the original file.")
        if len(labels) != len(images):
            raise DataError(f"MNIST files {img_name} ({len(images)} images) and {lbl_name} ({len(labels)} labels) do not "
                            "match. Replace them with the original files.")
        if len(labels) and int(labels.max()) > 9:
            raise DataError(f"MNIST file {lbl_name} has label {int(labels.max())}; labels must be 0..9. Replace it with the "
                            "original file.")
        out[split] = (images, labels.astype(np.uint8))
    return out


def encode_idx(array: np.ndarray) -> bytes:
    """A uint8 array as IDX bytes (big-endian header 0x000008NN, then the dims): torchvision reads
    IDX files but does not write them."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape) + array.tobytes()


def write_idx_files(files: Mapping[str, bytes], staging: str | Path) -> dict[str, Path]:
    """IDX bytes (name -> bytes) as files in `staging`; returns name -> file."""
    staging = Path(staging)
    staging.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (staging / name).write_bytes(data)
    return {name: staging / name for name in files}
