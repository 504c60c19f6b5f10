"""A person's digit images, brought to MNIST's form.

MNIST's digits are white on black, 28x28, the digit scaled (keeping its aspect
ratio) into a 20x20 box and centred in the frame by its centre of mass. People's
pictures are usually the opposite: a dark digit on light paper, off-centre, of
any size and colour, often JPEG. `to_mnist(picture)` does what MNIST's makers
did:

1. greyscale (a transparent background counts as white paper);
2. inverted when the background is light (the background is the median of the
   picture's border);
3. the background level subtracted and the contrast stretched to [0, 1]; pixels
   below `INK` of the strongest are noise (paper texture, JPEG artefacts);
4. cropped to the ink's bounding box, scaled so its longer side is `BOX` pixels;
5. placed in a 28x28 frame with its centre of mass at the centre.

A picture with no ink (contrast below `MIN_CONTRAST`: an empty page) is refused.

`read(path)` gives `[(label, uint8 28x28)]` for a picture file (PNG, JPEG, BMP,
GIF, any format pillow reads), or for IDX files and `.npy` arrays of many images
already in MNIST's form (28x28, white on black, uint8 or floats in [0, 1]).
"""

from __future__ import annotations

import os

import numpy as np

from tbkit.errors import DataError

#: The side of the box MNIST scales each digit into, inside the 28x28 frame.
BOX = 20
SIZE = 28
#: Ink is what reaches this fraction of the picture's strongest contrast.
INK = 0.25
#: A picture whose strongest contrast with its background is below this (on a 0..1
#: scale) holds no digit.
MIN_CONTRAST = 0.15


class DigitError(DataError):
    """A file that cannot be read as digit images, or a picture with no digit."""


def _grey(image) -> np.ndarray:
    """A pillow image as floats in [0, 1], transparency composited on white."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def to_mnist(picture: np.ndarray) -> np.ndarray:
    """A greyscale picture (floats in [0, 1], any size) in MNIST's form: uint8 28x28.

    Raises:
      DigitError: no digit in it (an empty or uniform page).
    """
    from PIL import Image

    a = np.asarray(picture, dtype=np.float32)
    if a.ndim != 2 or min(a.shape) < 2:
        raise DigitError(f"not a 2-D picture: shape {list(a.shape)}")
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    background = float(np.median(border))
    if background > 0.5:  # dark ink on light paper: MNIST is light on dark
        a, background = 1.0 - a, 1.0 - background
    a = np.clip(a - background, 0.0, None)
    peak = float(a.max())
    if peak < MIN_CONTRAST:
        raise DigitError("no digit found (an empty page)")
    a = a / peak
    a[a < INK] = 0.0
    rows, cols = np.nonzero(a)
    a = a[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = a.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    box = np.asarray(Image.fromarray(a, mode="F").resize(size, Image.Resampling.LANCZOS))
    box = np.clip(box, 0.0, 1.0)
    total = float(box.sum())
    ys, xs = np.indices(box.shape)
    com = (float((ys * box).sum() / total), float((xs * box).sum() / total))
    frame = np.zeros((SIZE, SIZE), np.float32)
    top = int(np.clip(round(SIZE / 2 - com[0]), 0, SIZE - box.shape[0]))
    left = int(np.clip(round(SIZE / 2 - com[1]), 0, SIZE - box.shape[1]))
    frame[top : top + box.shape[0], left : left + box.shape[1]] = box
    return np.round(frame * 255).astype(np.uint8)


def _as_mnist_array(a: np.ndarray, path: str) -> np.ndarray:
    """An array of MNIST-form images as uint8 `(n, 28, 28)`."""
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (SIZE, SIZE):
        raise DigitError(
            f"{path}: an array of images must be (n, 28, 28) or (n, 28, 28, 1) in MNIST's "
            f"form. Received: shape {list(a.shape)}"
        )
    if a.dtype == np.uint8:
        return a
    if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        raise DigitError(f"{path}: the array holds non-numeric or non-finite values")
    if a.min() < 0 or a.max() > (1.0 if np.issubdtype(a.dtype, np.floating) else 255):
        raise DigitError(f"{path}: values outside [0, 1] (floats) or [0, 255] (integers)")
    scale = 255.0 if np.issubdtype(a.dtype, np.floating) else 1.0
    return np.round(a.astype(np.float64) * scale).astype(np.uint8)


def _is_idx(path: str) -> bool:
    name = os.path.basename(path).lower().removesuffix(".gz")
    return name.endswith(".idx") or "idx3" in name or name.endswith("-ubyte")


def read(path: str) -> list[tuple[str, np.ndarray]]:
    """The digit images of one file, each `(label, uint8 28x28)`: `path` for a picture,
    `path[i]` for the i-th image of an IDX file or `.npy` array.

    Raises:
      DigitError: the file cannot be read, holds no digit, or an array of another form.
    """
    if not os.path.isfile(path):
        raise DigitError(f"{path}: no such file")
    if path.lower().endswith(".npy"):
        try:
            a = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DigitError(f"{path}: not a readable .npy array ({e})") from None
        images = _as_mnist_array(a, path)
        return [(f"{path}[{i}]", im) for i, im in enumerate(images)]
    if _is_idx(path):
        from tbkit.datasets import idx

        try:
            a = idx.parse_idx(idx.read_bytes(path), path, 3, (SIZE, SIZE))
        except DataError as e:
            raise DigitError(str(e)) from None
        images = _as_mnist_array(a, path)
        return [(f"{path}[{i}]", im) for i, im in enumerate(images)]
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.seek(0)  # a GIF's first frame
            grey = _grey(image)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DigitError(f"{path}: cannot read it as an image ({e.__class__.__name__})") from None
    try:
        return [(path, to_mnist(grey))]
    except DigitError as e:
        raise DigitError(f"{path}: {e}") from None
