"""tf.data input pipelines over uint8 image arrays.

Images stay uint8 in memory and become float32 in [0, 1] inside the pipeline.
The training order is a pure function of `(seed, epoch)`, so the batch fed at
iteration `i` is the same in an uninterrupted run and in one resumed at `i`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _to_float(images: tf.Tensor) -> tf.Tensor:
    return tf.cast(images, tf.float32)[..., tf.newaxis] / 255.0


def train_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    start_step: int = 0,
) -> tf.data.Dataset:
    """An endless, reshuffled-each-epoch stream of `(images, labels)` batches.

    Epoch `e` is the permutation `stateless_shuffle(range(N), seed=(seed, e))`
    cut into `N // batch_size` full batches (the remainder is dropped), so the
    stream can be restarted at any step without replaying it.

    Args:
      images: uint8 array `(N, H, W)`.
      labels: integer array `(N,)`.
      batch_size: images per batch; must not exceed N.
      seed: shuffling seed.
      start_step: index of the first batch to yield (for resuming).

    Returns:
      A prefetching `tf.data.Dataset` of `(float32 (B, H, W, 1), int32 (B,))`.
    """
    n = len(images)
    if not 0 < batch_size <= n:
        raise ValueError(
            f"batch_size must be between 1 and the {n} training images. Received: batch_size={batch_size}"
        )
    steps_per_epoch = n // batch_size
    start_epoch, skip = divmod(int(start_step), steps_per_epoch)
    images_t = tf.constant(images)
    labels_t = tf.constant(labels, dtype=tf.int32)

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n), seed=tf.stack([tf.cast(seed, tf.int64), epoch])
        )
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)

    ds = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch_batches)
    ds = ds.skip(skip)
    ds = ds.map(
        lambda idx: (_to_float(tf.gather(images_t, idx)), tf.gather(labels_t, idx)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> tf.data.Dataset:
    """Batches of `(float32 images, int32 labels)` in order, for evaluation."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    ds = ds.batch(batch_size).map(lambda x, y: (_to_float(x), y))
    return ds.cache().prefetch(tf.data.AUTOTUNE)
