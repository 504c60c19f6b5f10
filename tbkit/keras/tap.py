"""`fit`'s own gradients for the callback: copied inside its compiled step when armed.

A callback runs between `fit`'s batches and never sees the gradients of its
compiled train step. Keras' `train_step` hands them to `optimizer.apply` (through
`apply_gradients`, or directly from a custom `train_step`), so the tap wraps
that method of the model's optimizer (the inner one of a `LossScaleOptimizer`,
which receives the unscaled gradients): when the tap's flag variable is on, the
traced step also copies each gradient (made dense) into a variable of its own.
When it is off, the step pays one `tf.cond` on a boolean. The callback arms the
tap at the start of a recorded batch and takes the gradients at its end.

A traced train function keeps the tap it was traced with, so one optimizer has
one tap for its lifetime (`GradientTap.of` finds it again for a later `fit` or
another callback). Where the copies cannot be trusted, `of` returns None and the
callback measures the gradients on its probe batch instead: under a
`tf.distribute` strategy (each replica's `apply` sees its local gradients), and
without an optimizer. `take` returns None when no copy happened since `arm`:
`fit`'s train function was traced before the optimizer had a tap, or a custom
`train_step` calls `optimizer.apply(grads)` without its variables.
"""

from __future__ import annotations

import tensorflow as tf

from tbkit.model.measure import dense


class GradientTap:
    """The copies of one optimizer's gradients, in `model.trainable_variables` order."""

    def __init__(self, optimizer, variables):
        # The optimizer holds its tap through its wrapped `apply` (no reference back).
        self._scale = getattr(optimizer, "loss_scale_factor", None)
        self._index = {id(v): i for i, v in enumerate(variables)}
        self._ids = tuple(self._index)
        with tf.init_scope():
            self._flag = tf.Variable(False, trainable=False, name="tbkit_tap_armed")
            self._copies = tf.Variable(0, dtype=tf.int64, trainable=False, name="tbkit_tap_copies")
            self._grads = [
                tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="tbkit_tap_gradient")
                for v in variables
            ]
        self._seen = 0
        self.missing: frozenset[int] = frozenset()  # set when the step is traced
        previous = _tap_of(optimizer)
        self._apply = previous._apply if previous is not None else optimizer.apply
        optimizer.apply = self._tapped_apply

    @classmethod
    def of(cls, model) -> GradientTap | None:
        """The tap of `model`'s optimizer (made on first use), or None where it cannot work."""
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None or not callable(getattr(optimizer, "apply", None)):
            return None
        with model.distribute_strategy.scope():
            if tf.distribute.has_strategy():  # a non-default strategy: per-replica gradients
                return None
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        variables = list(model.trainable_variables)
        if not variables:
            return None
        tap = _tap_of(optimizer)
        if tap is None or tap._ids != tuple(id(v) for v in variables):
            tap = cls(optimizer, variables)
        return tap

    def _tapped_apply(self, grads, trainable_variables=None, *args, **kwargs):
        if trainable_variables is not None:
            grads = list(grads)
            trainable_variables = list(trainable_variables)
            self._copy(grads, trainable_variables)
        return self._apply(grads, trainable_variables, *args, **kwargs)

    def _copy(self, grads, variables) -> None:
        """Runs inside the traced step (or eagerly with `run_eagerly`)."""
        scale = self._scale
        pairs = []
        for g, v in zip(grads, variables, strict=False):
            i = self._index.get(id(v))
            if i is not None and g is not None:
                pairs.append((i, g))
        self.missing = frozenset(range(len(self._grads))) - {i for i, _ in pairs}

        def write():
            for i, g in pairs:
                target = self._grads[i]
                g = tf.cast(dense(g), target.dtype)
                target.assign(g / scale if scale is not None else g)
            self._copies.assign_add(1)
            return tf.constant(True)

        tf.cond(self._flag, write, lambda: tf.constant(False))

    def arm(self) -> None:
        """Copy the gradients of the steps from here until `take`."""
        self._flag.assign(True)

    def disarm(self) -> None:
        self._flag.assign(False)

    def take(self) -> tuple[list, frozenset[int]] | None:
        """`(gradients, indices without one)` of the last step since `arm`, or None when
        no step copied them (its traced function holds no tap)."""
        self._flag.assign(False)
        copies = int(self._copies.numpy())
        if copies == self._seen:
            return None
        self._seen = copies
        return [g.value() for g in self._grads], self.missing


def _tap_of(optimizer) -> GradientTap | None:
    tap = getattr(getattr(optimizer, "apply", None), "__self__", None)
    return tap if isinstance(tap, GradientTap) else None
