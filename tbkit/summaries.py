"""`variable_summaries`: the statistics of a variable as TensorBoard summaries.

Under the scope `name/` it writes the scalars `mean`, `stddev` (population
standard deviation), `min`, `max` and the histogram `histogram` of the finite
values. Non-finite values (NaN, +-Inf) are not silently dropped: their count is
written as the scalar `nonfinite` whenever it is non-zero and a warning is
issued once per name.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import tensorflow as tf

_warned: set[str] = set()


def clean_name(var) -> str:
    """A summary-safe name for a variable: its path without `:0`, or its name."""
    name = getattr(var, "path", None) or getattr(var, "name", None) or "tensor"
    name = name.split(":")[0]
    return re.sub(r"[^A-Za-z0-9_./-]", "_", name)


def _warn_nonfinite(name: bytes, count) -> int:
    name = np.asarray(name).item()
    key = name.decode() if isinstance(name, bytes) else str(name)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"variable_summaries: {key} holds {int(count)} non-finite value(s); "
            f"statistics use the finite ones and '{key}/nonfinite' records the count",
            RuntimeWarning,
            stacklevel=2,
        )
    return np.int64(0)


def _stats(values: tf.Tensor):
    x = tf.reshape(tf.cast(values, tf.float32), [-1])
    finite_mask = tf.math.is_finite(x)
    finite = tf.boolean_mask(x, finite_mask)
    nonfinite = tf.size(x) - tf.reduce_sum(tf.cast(finite_mask, tf.int32))
    mean = tf.reduce_mean(finite)
    # Population standard deviation: the mean of squared deviations, then the root.
    stddev = tf.sqrt(tf.reduce_mean(tf.square(finite - mean)))
    return finite, nonfinite, mean, stddev, tf.reduce_min(finite), tf.reduce_max(finite)


def variable_summaries(
    var,
    name: str | None = None,
    step=None,
    histogram: bool = True,
    buckets: int | None = None,
):
    """Writes mean, stddev, min, max and a histogram of `var` to the default writer.

    Works eagerly and inside `tf.function`, for a `tf.Variable`, a Keras
    variable or any numeric tensor. Nothing is computed when no summary will be
    recorded (no default writer, or recording switched off).

    Args:
      var: the variable or tensor to summarise.
      name: scope of the tags; defaults to the variable's path (e.g.
        `layer_conv1/weights`). Tags become `name/mean`, `name/stddev`, ...
      step: the step to record at; defaults to `tf.summary.experimental.get_step()`.
      histogram: also write `name/histogram` (default True).
      buckets: histogram bucket count (TensorBoard's default when None).

    Returns:
      A boolean tensor, True if the summaries were recorded.

    Example:

      with tf.summary.create_file_writer("logs/run/train").as_default(step=0):
          tbkit.variable_summaries(dense.kernel, name="dense/weights")
    """
    name = name or clean_name(var)
    # tf.cond opens a "cond/" name scope in graphs; re-entering the caller's
    # scope as an absolute one keeps the tags identical eagerly and compiled.
    outer = tf.get_current_name_scope()
    scope = f"{outer}/{name}/" if outer else f"{name}/"

    def record():
        values = tf.convert_to_tensor(var)
        finite, nonfinite, mean, stddev, vmin, vmax = _stats(values)
        with tf.name_scope(scope):
            ok = tf.summary.scalar("mean", mean, step=step)
            tf.summary.scalar("stddev", stddev, step=step)
            tf.summary.scalar("min", vmin, step=step)
            tf.summary.scalar("max", vmax, step=step)
            if histogram:
                tf.summary.histogram("histogram", finite, step=step, buckets=buckets)

        def flag():
            with tf.name_scope(scope):
                tf.summary.scalar("nonfinite", tf.cast(nonfinite, tf.float32), step=step)
            tf.numpy_function(_warn_nonfinite, [tf.constant(scope[:-1]), nonfinite], tf.int64)
            return tf.constant(True)

        tf.cond(nonfinite > 0, flag, lambda: tf.constant(False))
        return ok

    return tf.cond(tf.summary.should_record_summaries(), record, lambda: tf.constant(False))
