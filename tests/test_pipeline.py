"""The tf.data pipeline: uint8 in, float batches out, an order that can be resumed."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import tbkit
from conftest import FIXTURE


def fixture():
    return tbkit.datasets.mnist.load(FIXTURE, validation_size=500, log=lambda _: None)


def take(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_batches_are_float_in_unit_range_and_cover_each_epoch_once():
    d = fixture()
    batches = take(tbkit.datasets.train_dataset(d.train_images, d.train_labels, 100, seed=1), 15)
    x, y = batches[0]
    assert x.shape == (100, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    assert x.min() >= 0.0 and x.max() <= 1.0
    # One epoch = 15 batches of 100 out of 1500 images: every image exactly once.
    seen = np.concatenate([b[0].reshape(100, -1) for b in batches])
    assert len({row.tobytes() for row in seen}) == len(
        {img.tobytes() for img in d.train_images.reshape(1500, -1)}
    )
    assert (
        np.bincount(np.concatenate([b[1] for b in batches]), minlength=10).tolist()
        == np.bincount(d.train_labels, minlength=10).tolist()
    )


def test_resuming_at_a_step_gives_the_same_batches():
    d = fixture()
    for shift in (0, 2):
        full = take(
            tbkit.datasets.train_dataset(
                d.train_images, d.train_labels, 64, seed=3, max_shift=shift
            ),
            30,
        )
        resumed = take(
            tbkit.datasets.train_dataset(
                d.train_images, d.train_labels, 64, seed=3, start_step=21, max_shift=shift
            ),
            9,
        )
        for (xa, ya), (xb, yb) in zip(full[21:], resumed, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    other = take(tbkit.datasets.train_dataset(d.train_images, d.train_labels, 64, seed=4), 1)
    assert not np.array_equal(other[0][1], full[0][1])


def test_random_shift_moves_whole_pixels():
    image = np.zeros((5, 12, 12, 1), np.float32)
    image[:, 5:7, 5:7, 0] = 1.0  # a 2x2 blob in the middle: any shift of <= 2 keeps it inside
    out = tbkit.datasets.pipeline.random_shift(
        tf.constant(image), 2, tf.constant([7, 9], tf.int64)
    ).numpy()
    moved = 0
    for k in range(5):
        ys, xs = np.nonzero(out[k, ..., 0])
        assert out[k].sum() == 4.0 and set(np.unique(out[k])) <= {0.0, 1.0}
        assert abs(ys.min() - 5) <= 2 and abs(xs.min() - 5) <= 2
        moved += (ys.min(), xs.min()) != (5, 5)
    assert moved >= 1


def test_eval_dataset_keeps_order():
    d = fixture()
    labels = np.concatenate(
        [y.numpy() for _, y in tbkit.datasets.eval_dataset(d.test_images, d.test_labels, 128)]
    )
    np.testing.assert_array_equal(labels, d.test_labels)
