"""Image summaries: pure builders (arrays in, uint8 RGB images out) and thin writers.

Builders never touch `tf.summary`; they are unit-tested on arrays. Writers
render only when a summary will actually be recorded and return what
`tf.summary.image` returns.

Filter grids: one tile per output filter, in filter order, row-major on a
near-square grid. A kernel with C input channels draws each tile as a
near-square sub-grid of its C `(kh, kw)` slices (channel order, row-major), so
every weight is visible; a 1-channel kernel gives plain `kh x kw` tiles. All
tiles share one symmetric colour scale `[-max|w|, +max|w|]` through the
`seismic` colour map: white is zero, blue negative, red positive.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import matplotlib
import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_GAP = (128, 128, 128)
_LEVELS = 255  # colour-map levels of a filter grid; index 255 is the grey of its lines


def _grid_shape(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def _tile(patches: np.ndarray, fill: float, gap: int = 1) -> np.ndarray:
    """Lays `(n, h, w, ...)` patches on a near-square grid separated by `gap`-px lines."""
    n, h, w = patches.shape[:3]
    rest = patches.shape[3:]
    rows, cols = _grid_shape(n)
    # Every patch padded by the gap on its right and bottom, the grid filled up with
    # blank patches, then one reshape: no Python loop over the patches (a 3x3x512x512
    # kernel has 262,144 of them).
    padded = np.full((rows * cols, h + gap, w + gap) + rest, fill, patches.dtype)
    padded[:n, :h, :w] = patches
    grid = padded.reshape((rows, cols, h + gap, w + gap) + rest)
    grid = grid.transpose((0, 2, 1, 3) + tuple(range(4, 4 + len(rest))))
    grid = grid.reshape((rows * (h + gap), cols * (w + gap)) + rest)
    return grid[: rows * (h + gap) - gap, : cols * (w + gap) - gap]


def filter_grid(kernel, scale: int | None = None, cmap: str = "seismic") -> np.ndarray:
    """Renders a conv kernel `(kh, kw, in, out)` as an RGB uint8 image.

    Args:
      kernel: a 4-D array (or variable) of weights.
      scale: each weight becomes a `scale x scale` block (nearest neighbour);
        by default the largest (up to 8) that keeps the image within ~320 px.
      cmap: matplotlib colour map (default `seismic`), in 255 levels.

    Returns:
      uint8 array `(H, W, 3)`: grey 1-px lines between the input-channel slices
      of a filter, 3-px lines between filters.
    """
    index, palette = filter_grid_indexed(kernel, scale, cmap)
    return palette[index]


def filter_grid_indexed(kernel, scale: int | None = None, cmap: str = "seismic"):
    """`filter_grid` as `(index, palette)`: `(H, W)` uint8 indices into a `(256, 3)`
    palette (the colour map's 255 levels, then the grey of the lines), which a
    palette PNG stores in a third of the bytes of the RGB image."""
    k = np.asarray(kernel, dtype=np.float32)
    if k.ndim != 4:
        raise ValueError(f"kernel must be 4-D (kh, kw, in, out). Received shape: {k.shape}")
    kh, kw, cin, cout = k.shape
    finite = np.isfinite(k)
    vmax = float(np.max(np.abs(k[finite]))) if finite.any() else 0.0
    vmax = vmax or 1.0
    normed = np.clip((np.nan_to_num(k) + vmax) / (2 * vmax), 0.0, 1.0)  # 0.5 == zero weight
    if scale is None:
        sub_r, sub_c = _grid_shape(cin)
        out_r, out_c = _grid_shape(cout)
        weights_across = max(out_r * sub_r * kh, out_c * sub_c * kw)
        scale = max(1, min(8, 320 // max(weights_across, 1)))
    # Level of each weight as matplotlib's colour maps pick it: floor(x * N), N - 1 at 1.
    levels = np.minimum((normed * _LEVELS).astype(np.uint8), _LEVELS - 1)
    # (out, in, kh, kw): one tile per output filter, a sub-grid of its input channels.
    per_filter = np.transpose(levels, (3, 2, 0, 1))
    per_filter = np.repeat(np.repeat(per_filter, scale, axis=2), scale, axis=3)
    tiles = np.stack([_tile(f, _LEVELS, gap=1) for f in per_filter])
    index = _tile(tiles, _LEVELS, gap=3)
    lut = matplotlib.colormaps[cmap].resampled(_LEVELS)(np.arange(_LEVELS))[:, :3]
    palette = np.concatenate([(lut * 255).astype(np.uint8), np.array([_GAP], np.uint8)])
    return index, palette


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """Counts `(true, predicted)` pairs: an int64 `(num_classes, num_classes)` array."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    predictions = np.asarray(predictions, dtype=np.int64).ravel()
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels and predictions differ in size: {labels.size} vs {predictions.size}"
        )
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat[: num_classes * num_classes].reshape(num_classes, num_classes)


def _tick_names(class_names, n: int) -> list[str]:
    """`n` names: the given ones, then class numbers for any class beyond them."""
    names = [str(c) for c in (class_names or ())][:n]
    return names + [str(i) for i in range(len(names), n)]


def confusion_matrix_text(cm, class_names: Sequence[str] | None = None) -> str:
    """The matrix as aligned text: rows are true classes, columns predictions."""
    cm = np.asarray(cm)
    names = _tick_names(class_names, len(cm))
    width = max(len(str(int(cm.max()))) if cm.size else 1, *(len(n) + 2 for n in names))
    lines = []
    for name, row in zip(names, cm, strict=True):
        lines.append(" ".join(f"{int(v):>{width}d}" for v in row) + f"  ({name})")
    lines.append(" ".join(f"{'(' + n + ')':>{width}}" for n in names))
    return "\n".join(lines)


DRAWING = threading.Lock()
"""Held while tbkit renders a figure: the validation pictures are drawn in a worker
thread, and matplotlib's font objects are shared between figures."""


def figure_to_image(fig) -> np.ndarray:
    """Renders a matplotlib figure to an RGB uint8 array with Agg, then closes it.

    No display is needed; pyplot figures are closed so they do not accumulate.
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    with DRAWING:  # matplotlib's fonts are shared and not thread-safe
        canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if getattr(canvas, "manager", None) is not None:  # a pyplot figure: release it
        import matplotlib.pyplot as plt

        plt.close(fig)
    return image


def confusion_matrix_image(
    cm, class_names: Sequence[str] | None = None, normalize: bool = False, title: str | None = None
) -> np.ndarray:
    """Draws a confusion matrix with counts in the cells, axis labels and a colour bar.

    Args:
      cm: `(n, n)` counts, rows true classes.
      class_names: tick labels (default `0..n-1`).
      normalize: colour and annotate by row-normalised rates instead of counts.
      title: optional figure title.

    Returns:
      uint8 RGB image.
    """
    cm = np.asarray(cm, dtype=np.float64)
    n = len(cm)
    names = _tick_names(class_names, n)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    fig = Figure(figsize=(6, 5.4), dpi=100)
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=max(float(shown.max()), 1e-9))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set(xticks=range(n), yticks=range(n), xticklabels=names, yticklabels=names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    if title:
        ax.set_title(title)
    threshold = shown.max() / 2 if shown.size else 0
    for i in range(n):
        for j in range(n):
            text = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            colour = "white" if shown[i, j] > threshold else "black"
            ax.text(
                j, i, text, ha="center", va="center", color=colour, fontsize=8 if n <= 10 else 6
            )
    # Fixed margins: `tight_layout` renders the figure once more to measure it (~45% of
    # the drawing time), and a validation at every improvement draws this picture.
    fig.subplots_adjust(left=0.1, right=0.9, bottom=0.1, top=0.93 if title else 0.97)
    return figure_to_image(fig)


def looks_like_images(shape) -> bool:
    """Whether a batch of this shape is pictures: `(N, H, W)` or `(N, H, W, 1|3|4)`,
    H and W at least 8 (so short sequences of features are not taken for images)."""
    dims = list(shape)
    if len(dims) == 4 and dims[-1] in (1, 3, 4):
        dims = dims[:3]
    return len(dims) == 3 and all(d is None or d >= 8 for d in dims[1:])


def example_errors_image(
    images, labels, predictions, class_names: Sequence[str] | None = None, count: int = 9
) -> np.ndarray:
    """A 3x3 grid of the first misclassified images titled `True: t, Pred: p`.

    Args:
      images: `(N, H, W)` or `(N, H, W, 1)` array (uint8 or float).
      labels, predictions: `(N,)` integer classes.
      class_names: names used in the titles (default the class numbers).
      count: how many errors to show (default 9).

    Returns:
      uint8 RGB image (a "no errors" panel when every prediction is right).
    """
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
    wrong = np.flatnonzero(labels != predictions)[:count]
    name = (
        (lambda c: str(class_names[c]) if c < len(class_names) else str(c)) if class_names else str
    )
    rows, cols = _grid_shape(max(count, 1))
    # One figure without axes: each image is upscaled (nearest neighbour, as imshow shows
    # it) and pasted at pixel offsets, its title drawn above it. Nine Axes objects with
    # their ticks cost ~100 ms to build; this costs ~10.
    cell_w, cell_h, dpi = 112, 120, 80
    fig = Figure(figsize=(cols * cell_w / dpi, rows * cell_h / dpi), dpi=dpi)
    fig.patch.set_facecolor("white")
    for i, k in enumerate(wrong):
        r, c = divmod(i, cols)
        picture = images[k].astype(np.float64)
        low, high = float(picture.min()), float(picture.max())
        picture = (picture - low) / (high - low) if high > low else np.zeros_like(picture)
        scale = max(1, min((cell_w - 16) // picture.shape[1], (cell_h - 30) // picture.shape[0]))
        picture = np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)
        left = c * cell_w + (cell_w - picture.shape[1]) // 2
        bottom = (rows - 1 - r) * cell_h + 6
        fig.figimage(picture, xo=left, yo=bottom, cmap="binary", vmin=0, vmax=1, origin="upper")
        fig.text((c + 0.5) / cols, ((rows - 1 - r) * cell_h + 6 + picture.shape[0] + 4) / (rows * cell_h),
                 f"True: {name(int(labels[k]))}, Pred: {name(int(predictions[k]))}",
                 ha="center", va="bottom", fontsize=8)  # fmt: skip
    if not len(wrong):
        fig.text(0.5, 0.5, "no misclassified examples", ha="center", va="center")
    return figure_to_image(fig)


def _will_record() -> bool:
    return bool(tf.summary.should_record_summaries())


def image_summary(
    name: str,
    image: np.ndarray,
    step=None,
    description: str | None = None,
    palette=None,
    compact: bool = False,
):
    """Writes one uint8 `(H, W, 3)` image in the format of `tf.summary.image`.

    The PNG uses zlib level 6 (TensorFlow's default: on the confusion matrix
    13% smaller than level 1 and no slower). With `palette` (a
    `(<=256, 3)` uint8 array), `image` is `(H, W)` indices into it, written as
    a palette PNG (TensorBoard and browsers decode it to the same RGB). With
    `compact`, the smaller of the RGB PNG and a 256-colour palette PNG of it
    (see `_compact_png`).
    """
    from tensorboard.plugins.image import metadata

    image = np.asarray(image, dtype=np.uint8)
    if image.ndim != (2 if palette is not None else 3):
        raise ValueError(
            f"image must be (H, W, C), or (H, W) with a palette. Received shape: {image.shape}"
        )
    summary_metadata = metadata.create_summary_metadata(display_name=None, description=description)

    def tensor():
        if palette is not None:
            png = tf.constant(_palette_png(image, palette))
        elif compact:
            png = tf.constant(_compact_png(image))
        else:
            png = tf.image.encode_png(image, compression=6)
        return tf.stack([tf.as_string(image.shape[1]), tf.as_string(image.shape[0]), png])

    with tf.summary.experimental.summary_scope(name, "image_summary") as (tag, _):
        return tf.summary.write(tag=tag, tensor=tensor, step=step, metadata=summary_metadata)


def encoded(image: np.ndarray) -> tuple[bytes, int, int]:
    """`(PNG, width, height)` of a uint8 `(H, W, 3)` picture, compact (`_compact_png`):
    what `png_summary` writes. Pure numpy and PIL: safe in a worker thread."""
    image = np.asarray(image, dtype=np.uint8)
    return _compact_png(image), image.shape[1], image.shape[0]


def png_summary(name: str, picture: tuple[bytes, int, int], step=None):
    """Writes an `encoded` picture as image `name`, in the format of `tf.summary.image`."""
    from tensorboard.plugins.image import metadata

    png, width, height = picture
    summary_metadata = metadata.create_summary_metadata(display_name=None, description=None)
    with tf.summary.experimental.summary_scope(name, "image_summary") as (tag, _):
        tensor = tf.constant([str(width).encode(), str(height).encode(), png])
        return tf.summary.write(tag=tag, tensor=tensor, step=step, metadata=summary_metadata)


def _palette_png(index: np.ndarray, palette) -> bytes:
    import io

    from PIL import Image

    picture = Image.fromarray(index, mode="P")
    picture.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def _compact_png(image: np.ndarray) -> bytes:
    """The smaller of `image`'s RGB PNG and its 256-colour palette PNG.

    A matplotlib figure (the confusion matrix: ~1,700 colours, nearly all of them
    the anti-aliased edges of its text) keeps every flat colour exactly in 256; the
    edge pixels move by at most a few levels (24 of 255 at most, 0.05 on average on
    the confusion matrix), and the PNG is 2.3x smaller. A picture of at most 256
    colours is the same pixels either way.
    """
    import io

    from PIL import Image

    rgb = io.BytesIO()
    Image.fromarray(image).save(rgb, format="PNG", compress_level=6)
    quantized = Image.fromarray(image).quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    indexed = io.BytesIO()
    quantized.save(indexed, format="PNG", compress_level=6)
    return min(rgb.getvalue(), indexed.getvalue(), key=len)


def filters_summary(name: str, kernel, step=None, scale: int | None = None):
    """Writes `filter_grid(kernel)` as image `name` if a summary will be recorded
    (a palette PNG: a third of the RGB one's size, the same pixels)."""
    if not _will_record():
        return False
    index, palette = filter_grid_indexed(kernel, scale=scale)
    return image_summary(name, index, step, palette=palette)


def confusion_matrix_summary(
    name: str, labels, predictions, num_classes: int, step=None, class_names=None, normalize=False
):
    """Writes the confusion-matrix image if a summary will be recorded."""
    if not _will_record():
        return False
    cm = confusion_matrix(labels, predictions, num_classes)
    picture = confusion_matrix_image(cm, class_names, normalize)
    return image_summary(name, picture, step, compact=True)


def example_errors_summary(name: str, images, labels, predictions, step=None, class_names=None):
    """Writes the 3x3 example-errors image if a summary will be recorded."""
    if not _will_record():
        return False
    picture = example_errors_image(images, labels, predictions, class_names)
    return image_summary(name, picture, step, compact=True)


def figure_summary(name: str, fig, step=None):
    """Writes a matplotlib figure as an image (rendered only if it will be recorded)."""
    if not _will_record():
        import matplotlib.pyplot as plt

        plt.close(fig)
        return False
    return image_summary(name, figure_to_image(fig), step, compact=True)
