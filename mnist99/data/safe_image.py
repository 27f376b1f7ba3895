"""Opening a picture that may be hostile. Every picture mnist99 reads (predict.py's inputs, the
images of a data folder) is opened by `open_image`, so one check decides: a file that is not an
image, is truncated or has more than MAX_PIXELS pixels raises BadImage, whose message is the
one-line reason. The size comes from the file's header, before anything is decoded."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

# Real pictures pass (a phone photo is 12 MP, 48-50 MP only in full-resolution mode; an A4 page at 600 dpi 35 MP);
# one at the limit costs predict.py 210 MB more. PIL's own limit (89 MP, a warning) let a 144 MP PNG take 1.8 GB.
MAX_PIXELS = 40_000_000

# Any other format is not an image here (PIL would start Ghostscript for an EPS); a JPEG named .png is read all the same.
FORMATS = ("BMP", "GIF", "JPEG", "PNG", "PPM", "TIFF", "WEBP")

# catch_warnings swaps a process-wide list: one thread at a time (data folders decode in threads; headers only).
_HEADER_LOCK = threading.Lock()


class BadImage(Exception):
    """A file that is not a usable picture; its message is the reason, in one line."""


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """The picture at `path`, its size checked but not yet decoded (a JPEG's draft mode still
    works). Raises BadImage when it is refused, or when decoding it inside the `with` fails (a
    truncated file is found only then)."""
    try:
        # PIL's DecompressionBombWarning while it opens a picture over its limit would be noise: MAX_PIXELS refuses it
        with _HEADER_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path, formats=FORMATS)
        with opened as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise BadImage(f"too large: {width}x{height} = {width * height:,} pixels, over the limit of {MAX_PIXELS:,}")
            yield img
    except Image.DecompressionBombError:  # so large that PIL refuses it while reading the header
        raise BadImage(f"too large: more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, over the limit of {MAX_PIXELS:,}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # what PIL raises for a broken or truncated file
        raise BadImage(f"not a readable image ({type(e).__name__}: {e})") from None
