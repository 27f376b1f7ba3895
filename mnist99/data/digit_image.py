"""Any picture of one digit -> an MNIST-style image: grey, white digit on black, 28x28, the digit
scaled into a 20x20 box and centred by its centre of mass (how MNIST itself was made).

The rules, in order (docs/outputs.md, "Predicting your own images", repeats them):
1. Transparency: an image whose alpha channel varies (a digit drawn on a transparent canvas) uses
   the alpha as the ink, whatever the stroke colour. Otherwise the picture is converted to grey
   (ITU-R 601-2 luma, PIL's "L").
2. Polarity: when the median of the outermost 2-pixel frame is brighter than mid-grey (128),
   the picture is dark-on-light and is inverted.
3. Size: a picture already of the model's size (28x28) is used as it is. Any other is cropped to
   the box of its ink (pixels above a quarter of the brightest), scaled so that the longer side is
   20/28 of the model's size, and pasted so that its centre of mass falls on the image centre.
   A picture with no ink at all is just resized.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def ink(img: Image.Image) -> np.ndarray:
    """Steps 1 and 2: uint8 (not float: a 40 MP photo costs 40 MB here, not 160), 0 = background, 255 = strokes."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        alpha = np.asarray(img.convert("RGBA").getchannel("A"))
        if alpha.min() < alpha.max():
            return alpha
    grey = np.asarray(img.convert("L"))
    frame = np.concatenate([grey[:2].ravel(), grey[-2:].ravel(), grey[:, :2].ravel(), grey[:, -2:].ravel()])
    return 255 - grey if np.median(frame) > 128 else grey


def to_mnist(img: Image.Image, size: int = 28) -> np.ndarray:
    """uint8 (size, size): white digit on black, framed as MNIST frames its digits."""
    a = ink(img)
    if a.shape == (size, size):
        return a.copy()
    # the rows and columns holding ink (any() per axis: nonzero() would list every ink pixel)
    strokes = a > a.max() / 4
    rows, cols = np.flatnonzero(strokes.any(1)), np.flatnonzero(strokes.any(0))
    if len(rows) == 0:  # no ink at all
        return np.array(Image.fromarray(a).resize((size, size), Image.LANCZOS))
    a = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = round(size * 20 / 28) / max(a.shape)
    h, w = max(1, round(a.shape[0] * scale)), max(1, round(a.shape[1] * scale))
    digit = np.asarray(Image.fromarray(a).resize((w, h), Image.LANCZOS), dtype=np.float32)
    # centre of mass to the centre, the digit kept whole inside the frame
    total = digit.sum() or 1.0
    cy, cx = (digit.sum(1) * np.arange(h)).sum() / total, (digit.sum(0) * np.arange(w)).sum() / total
    top, left = int(np.clip(round((size - 1) / 2 - cy), 0, size - h)), int(np.clip(round((size - 1) / 2 - cx), 0, size - w))
    out = np.zeros((size, size), dtype=np.float32)
    out[top : top + h, left : left + w] = digit
    return out.round().clip(0, 255).astype(np.uint8)
