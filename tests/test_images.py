"""Image builders on arrays, and image summaries decoded from event files."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorflow as tf

import tbkit
from conftest import decode_image_events, load_events


def test_filter_grid_single_channel_symmetric_scale():
    k = np.zeros((2, 2, 1, 4), np.float32)
    k[0, 0, 0, 0] = 1.0  # strongest positive -> dark red
    k[0, 0, 0, 1] = -0.5  # negative -> blue
    img = tbkit.filter_grid(k, scale=1)
    # 4 tiles on a 2x2 grid of 2x2 tiles with 3-pixel gaps between filters.
    assert img.shape == (7, 7, 3) and img.dtype == np.uint8
    red, blue, zero = img[0, 0], img[0, 5], img[1, 1]
    assert red[0] > red[2] and blue[2] > blue[0]
    assert np.all(zero > 240)  # seismic's centre (zero) is white
    assert tuple(img[2, 0]) == (128, 128, 128)  # gap
    # The scale is shared: flipping the sign swaps the colours exactly.
    flipped = tbkit.filter_grid(-k, scale=1)
    assert tuple(flipped[0, 5]) != tuple(blue)
    assert flipped[0, 0][2] > flipped[0, 0][0]  # the strongest weight is now dark blue


def test_filter_grid_multichannel_tiles_every_input_channel():
    rng = np.random.default_rng(0)
    k = rng.normal(size=(5, 5, 16, 36)).astype(np.float32)
    img = tbkit.filter_grid(k, scale=1)
    tile = 4 * 6 - 1  # 4x4 sub-grid of 5x5 channel slices with 1-px gaps
    assert img.shape == (6 * (tile + 3) - 3, 6 * (tile + 3) - 3, 3)
    # Every weight is drawn: the top-left pixel of filter 0 is input channel 0's (0, 0) weight,
    # the pixel 6 to the right is input channel 1's.
    unscaled = tbkit.filter_grid(k, scale=1)

    def cmap_of(v):
        return tuple(
            (
                matplotlib.colormaps["seismic"].resampled(255)((v / np.abs(k).max() + 1) / 2)[:3]
                * np.array([255, 255, 255])
            ).astype(np.uint8)
        )  # noqa: E731

    assert tuple(unscaled[0, 0]) == cmap_of(k[0, 0, 0, 0])
    assert tuple(unscaled[0, 6]) == cmap_of(k[0, 0, 1, 0])
    with pytest.raises(ValueError, match="4-D"):
        tbkit.filter_grid(np.zeros((5, 5, 16)))


def test_confusion_matrix_counts():
    cm = tbkit.confusion_matrix([0, 1, 2, 2, 1], [0, 2, 2, 2, 1], 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 1], [0, 0, 2]])
    text = tbkit.confusion_matrix_text(cm)
    assert text.splitlines()[1].split()[:3] == ["0", "1", "1"]


def test_confusion_matrix_image_differs_for_an_error():
    identity = tbkit.confusion_matrix_image(np.diag([5, 5, 5]))
    one_off = tbkit.confusion_matrix_image(np.array([[5, 0, 0], [0, 4, 1], [0, 0, 5]]))
    assert identity.shape == one_off.shape and identity.ndim == 3
    assert not np.array_equal(identity, one_off)
    normalised = tbkit.confusion_matrix_image(
        np.array([[5, 0, 0], [0, 4, 1], [0, 0, 5]]), normalize=True
    )
    assert not np.array_equal(normalised, one_off)


def test_example_errors_and_figure_closed():
    images = np.zeros((20, 28, 28), np.uint8)
    labels = np.arange(20) % 10
    preds = labels.copy()
    preds[[3, 7]] = 0
    before = len(plt.get_fignums())
    img = tbkit.example_errors_image(images, labels, preds)
    none = tbkit.example_errors_image(images, labels, labels)
    assert img.ndim == 3 and not np.array_equal(img, none)
    fig = plt.figure()
    plt.plot([0, 1])
    assert tbkit.figure_to_image(fig).ndim == 3
    assert len(plt.get_fignums()) == before


def test_image_summaries_decode_to_png(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    cm_image = tbkit.confusion_matrix_image(tbkit.confusion_matrix([0, 1, 1], [0, 1, 0], 10))
    kernel = np.random.default_rng(4).normal(size=(5, 5, 3, 16)).astype(np.float32)
    with writer.as_default(step=3):
        tbkit.filters_summary("layer_conv1/filters", kernel)
        tbkit.confusion_matrix_summary("confusion_matrix", [0, 1, 1], [0, 1, 0], 10)
        tbkit.example_errors_summary("example_errors", np.zeros((3, 28, 28)), [0, 1, 1], [0, 1, 0])
    writer.close()
    acc = load_events(str(tmp_path))
    assert set(acc.Tags()["tensors"]) == {
        "layer_conv1/filters",
        "confusion_matrix",
        "example_errors",
    }
    [(step, png)] = decode_image_events(acc, "confusion_matrix")
    assert step == 3 and png.shape[:2] == cm_image.shape[:2]
    # The smaller of the RGB and a 256-colour palette PNG: every flat colour exact,
    # anti-aliased text edges within a few levels.
    diff = np.abs(png[..., :3].astype(int) - cm_image.astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 40
    flat = (cm_image == cm_image[0, 0]).all(axis=-1)  # the background
    np.testing.assert_array_equal(png[..., :3][flat], cm_image[flat])
    [(_, filters)] = decode_image_events(acc, "layer_conv1/filters")
    # Written as a palette PNG, decoded to exactly the RGB grid.
    np.testing.assert_array_equal(filters, tbkit.filter_grid(kernel))


def test_compact_png_is_smaller_and_exact_for_few_colours():
    from tbkit.summary.images import _compact_png

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)
    predictions = np.where(rng.random(2000) < 0.95, labels, rng.integers(0, 10, 2000))
    picture = tbkit.confusion_matrix_image(tbkit.confusion_matrix(labels, predictions, 10))
    rgb = tf.image.encode_png(picture, compression=6).numpy()
    compact = _compact_png(picture)
    assert len(compact) < 0.6 * len(rgb)
    # A picture of at most 256 colours comes back the very same pixels.
    few = rng.integers(0, 4, (60, 80, 1)).astype(np.uint8) * np.array([60, 20, 5], np.uint8)
    np.testing.assert_array_equal(tf.io.decode_png(_compact_png(few)).numpy(), few)


def test_writers_skip_rendering_without_a_writer(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("rendered although nothing would be recorded")

    monkeypatch.setattr(tbkit.summary.images, "confusion_matrix_image", boom)
    assert tbkit.confusion_matrix_summary("cm", [0], [0], 2, step=0) is False


def test_huge_kernels_get_no_filter_grid():
    """A 3x3x128x64 kernel (73,728 weights) would be a 1,000 x 1,000 px grid per recording."""
    from tbkit.model.recorder import MAX_FILTER_WEIGHTS, filter_kernels

    small = tf.Variable(tf.zeros((3, 3, 8, 8)))
    big = tf.Variable(tf.zeros((3, 3, 128, 64)))
    assert big.shape.num_elements() > MAX_FILTER_WEIGHTS >= small.shape.num_elements()
    assert set(filter_kernels({"a/kernel": small, "b/kernel": big})) == {"a/filters"}


def test_tiling_places_every_patch():
    """The vectorised grid equals placing each patch by hand."""
    from tbkit.summary.images import _tile

    patches = np.arange(7 * 2 * 3, dtype=np.float32).reshape(7, 2, 3)
    grid = _tile(patches, -1.0, gap=2)
    assert grid.shape == (3 * 4 - 2, 3 * 5 - 2)
    for i in range(7):
        r, c = divmod(i, 3)
        np.testing.assert_array_equal(grid[r * 4 : r * 4 + 2, c * 5 : c * 5 + 3], patches[i])
    assert (grid[2:4, :] == -1).all() and (grid[8:, 3:] == -1).all()  # gaps and the blank tiles
