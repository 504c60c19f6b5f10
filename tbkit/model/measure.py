"""`StepDynamics`: what one recorded optimizer step measured, as one typed value.

Both doors produce it through `measure`: the Trainer's recording variant of
the train step (the step's own gradients, the weights before and after its
update), and the Keras callback's probe (gradients on a probe batch, the
weights before and after `fit`'s batch). The layer recorder consumes it.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


class StepDynamics(NamedTuple):
    """The training dynamics of one step (tensors, in `model.trainable_variables` order).

    Attributes:
      gradients: each variable's gradient, dense (a sparse gradient made whole).
      gradient_norm: `(n,)` L2 norms of the gradients.
      weight_norm: `(n,)` L2 norms of the variables before the update.
      update_norm: `(n,)` L2 norms of the updates (NaN when the update was not seen).
      global_norm: the norm of all gradients together.
      learning_rate: the learning rate of the step.
      no_gradient: indices of the variables the loss does not reach (host values;
        None inside compiled code).
      activations: what the layer recorder probes, taken from the step's own
        forward pass (`LayerRecorder.training_forward`): `{layer tag: {"values"?,
        "zero", "dead"}}`, or None when the step did not probe them.
    """

    gradients: list
    gradient_norm: tf.Tensor
    weight_norm: tf.Tensor
    update_norm: tf.Tensor
    global_norm: tf.Tensor
    learning_rate: tf.Tensor
    no_gradient: frozenset | None = None
    activations: dict | None = None

    def tensors(self) -> StepDynamics:
        """The value without its host part, to pass into a compiled function."""
        return self._replace(no_gradient=None)


def dense(t) -> tf.Tensor:
    """`t` as a dense tensor: a `tf.IndexedSlices` gradient (Embedding, `tf.gather`)
    becomes the full gradient, rows of repeated indices summed, so that norms,
    histograms and update ratios mean the same as for any other variable."""
    if isinstance(t, tf.IndexedSlices):
        return tf.math.unsorted_segment_sum(t.values, t.indices, t.dense_shape[0])
    return tf.convert_to_tensor(t)


def l2_norm(t) -> tf.Tensor:
    """The L2 norm of a tensor, variable or `tf.IndexedSlices`, in float32."""
    t = tf.cast(dense(t), tf.float32)
    return tf.sqrt(tf.reduce_sum(tf.square(t)))


def dense_gradients(grads, variables) -> tuple[list, list[int]]:
    """`(dense gradients, indices without a gradient)`: None becomes zeros."""
    out, missing = [], []
    for i, (g, v) in enumerate(zip(grads, variables, strict=True)):
        if g is None:
            missing.append(i)
            out.append(tf.zeros_like(v))
        else:
            out.append(dense(g))
    return out, missing


def measure(grads, before, after, learning_rate, seen_update: bool = True) -> StepDynamics:
    """The dynamics of a step from its (dense) gradients and the weights around its update.

    Args:
      grads: dense gradients, one per variable.
      before: the variables' values before the update.
      after: the variables (or their values) after the update.
      learning_rate: the step's learning rate (a scalar).
      seen_update: False when the update was not observed (its norms become NaN).
    """
    grad_norm = tf.stack([l2_norm(g) for g in grads]) if grads else tf.zeros([0])
    update = tf.stack(
        [l2_norm(tf.convert_to_tensor(a) - b) for a, b in zip(after, before, strict=True)]
    ) if before else tf.zeros([0])  # fmt: skip
    if not seen_update:
        update = tf.fill(tf.shape(update), float("nan"))
    return StepDynamics(
        gradients=list(grads),
        gradient_norm=grad_norm,
        weight_norm=tf.stack([l2_norm(b) for b in before]) if before else tf.zeros([0]),
        update_norm=update,
        global_norm=tf.sqrt(tf.reduce_sum(tf.square(grad_norm))),
        learning_rate=tf.cast(learning_rate, tf.float32),
    )
