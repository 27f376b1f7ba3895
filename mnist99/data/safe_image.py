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

# At most 40 megapixels per picture. A digit needs few (MNIST's are 28x28, and every picture is
# brought down to the model's size); a phone photo is 12 MP (48-50 MP only in a full-resolution
# mode) and an A4 page scanned at 600 dpi 35 MP, so real pictures pass. One at the limit took
# predict.py 210 MB more (a 40 MP RGBA PNG), whatever a file claims. PIL's own limit is 89 MP (a
# warning; an error past 179 MP): before this check, a 144 MP PNG took predict.py to 1.8 GB.
MAX_PIXELS = 40_000_000

# The formats of the suffixes mnist99 reads (a JPEG named .png is read all the same); a file of any
# other format is not an image here (PIL would start Ghostscript for an EPS, for one).
FORMATS = ("BMP", "GIF", "JPEG", "PNG", "PPM", "TIFF", "WEBP")

# catch_warnings swaps a process-wide list, so two threads (data folders decode in threads) must not
# use it at once; it only guards reading a header, which holds Python's lock anyway.
_HEADER_LOCK = threading.Lock()


class BadImage(Exception):
    """A file that is not a usable picture; its message is the reason, in one line."""


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """The picture at `path`, its size checked but not yet decoded (a JPEG's draft mode still
    works). Raises BadImage when it is refused, or when decoding it inside the `with` fails (a
    truncated file is found only then)."""
    try:
        with _open(path) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise BadImage(f"too large: {width}x{height} = {width * height:,} pixels, over the limit of {MAX_PIXELS:,}")
            yield img
    except Image.DecompressionBombError:  # so large that PIL refuses it while reading the header
        raise BadImage(f"too large: more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, over the limit of {MAX_PIXELS:,}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # what PIL raises for a broken or truncated file
        raise BadImage(f"not a readable image ({type(e).__name__}: {e})") from None


def _open(path: str | Path) -> Image.Image:
    # PIL warns (DecompressionBombWarning) about a picture over its own limit while it opens it;
    # MAX_PIXELS refuses that picture anyway, so the warning would only be noise on the console.
    with _HEADER_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path, formats=FORMATS)
