"""Exports the graph of a `tf.function` so TensorBoard's Graphs tab shows it."""

from __future__ import annotations

import tensorflow as tf


def write_graph(fn, *args, **kwargs):
    """Traces `fn` for `args` (without running it) and writes its graph.

    Writes to the default writer, like `tf.summary.graph`. Layers called under
    their name scopes (all Keras and tbkit layers) appear as collapsible nodes.

    Args:
      fn: a `tf.function`.
      *args, **kwargs: example arguments (tensors or `tf.TensorSpec`s).

    Returns:
      True if the graph was written (False when no default writer is set).
    """
    if not hasattr(fn, "get_concrete_function"):
        raise TypeError(f"write_graph needs a tf.function. Received: {type(fn).__name__}")
    concrete = fn.get_concrete_function(*args, **kwargs)
    return bool(tf.summary.graph(concrete.graph))
