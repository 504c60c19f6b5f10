"""`ValidationData`: the hooks' one view of validation data, a dataset or arrays.

The Trainer validates on a batched `tf.data.Dataset` of `(x, y)`; `model.fit`
users hand the callback `(x, y)` arrays. Hooks ask the same questions of
both: the images of some examples (for the example-errors picture), a probe
batch (for the callback's gradients), the data itself (for the projector's
seeded sample).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tbkit.summary import images as tbi


class ValidationData:
    """Validation data as the hooks see it.

    Args:
      data: a batched `tf.data.Dataset` of `(x, y)`, an `(x, y)` pair of arrays
        (x may be a tuple/dict of arrays for a multi-input model), or anything
        else (then only what needs no examples is available).
    """

    def __init__(self, data):
        self.data = data
        self.is_dataset = isinstance(data, tf.data.Dataset)
        self.pair = None
        if not self.is_dataset:
            try:
                x, y = data
                self.pair = (x, y)
            except (TypeError, ValueError):
                self.pair = None

    @property
    def usable(self) -> bool:
        """A dataset or an `(x, y)` pair (else: no per-class metrics, pictures or projector)."""
        return self.is_dataset or self.pair is not None

    def integer_labels(self) -> bool:
        if self.is_dataset:
            spec = self.data.element_spec
            labels = spec[1] if isinstance(spec, tuple) and len(spec) == 2 else None
            return isinstance(labels, tf.TensorSpec) and labels.dtype.is_integer
        if self.pair is None:
            return False
        return np.issubdtype(np.asarray(self.pair[1]).dtype, np.integer)

    def images_at(self, indices) -> np.ndarray | None:
        """The inputs of the examples at `indices`, when the inputs are one batch of
        images (`(N, H, W[, C])`); else None."""
        indices = np.asarray(indices, np.int64)
        if self.is_dataset:
            x_spec = self.data.element_spec[0]
            if not isinstance(x_spec, tf.TensorSpec) or not tbi.looks_like_images(x_spec.shape):
                return None
            if not len(indices):
                return np.zeros((0, 1, 1))
            wanted, found, offset = set(indices.tolist()), {}, 0
            for x, _ in self.data:  # read only as far as the last example wanted
                n = int(x.shape[0])
                for i in range(offset, offset + n):
                    if i in wanted:
                        found[i] = x[i - offset].numpy()
                offset += n
                if len(found) == len(wanted):
                    break
            return np.stack([found[i] for i in indices])
        if self.pair is None or isinstance(self.pair[0], list | tuple | dict):
            return None
        xs = np.asarray(self.pair[0])
        if not tbi.looks_like_images(xs.shape):
            return None
        return xs[indices] if len(indices) else np.zeros((0, 1, 1))

    def first(self, n: int):
        """The first `n` examples as `(x, y)` tensors (structures kept), or None."""
        if self.is_dataset:
            batch = next(iter(self.data.unbatch().batch(n).take(1)), None)
            return None if batch is None else tuple(batch)
        if self.pair is None:
            return None
        x, y = self.pair
        take = lambda a: tf.convert_to_tensor(a[:n])  # noqa: E731
        try:
            return tf.nest.map_structure(take, x), tf.nest.map_structure(take, y)
        except (TypeError, ValueError):
            return None
