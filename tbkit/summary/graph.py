"""Exports the graph of a `tf.function` so TensorBoard's Graphs tab shows it."""

from __future__ import annotations

import re

import tensorflow as tf

_SUFFIX = re.compile(r"(.+)_1")


def tidy_names(graph_def):
    """Renames scopes `X_1` to `X` where no node uses `X`; returns a new `GraphDef`.

    Keras 3 enters each layer's name scope twice per call (once to build, once
    to call), so in a traced graph every layer shows as `name_1` although the
    first, empty scope holds nothing. Only the display names change.
    """
    names = [node.name for node in graph_def.node]
    used = {tuple(n.split("/")[: i + 1]) for n in names for i in range(n.count("/") + 1)}
    renamed = {}
    for name in names:
        original = name.split("/")
        parts = list(original)
        for i, part in enumerate(original[:-1]):  # scopes only, never an op's own name
            m = _SUFFIX.fullmatch(part)
            if m and tuple(original[:i]) + (m[1],) not in used:
                parts[i] = m[1]
        renamed[name] = "/".join(parts)
    if len(set(renamed.values())) != len(renamed):  # a collision: keep TF's names
        return graph_def
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    for node in out.node:
        node.name = renamed[node.name]
        for k, ref in enumerate(node.input):
            control = ref.startswith("^")
            base, sep, port = ref.lstrip("^").partition(":")
            node.input[k] = ("^" if control else "") + renamed.get(base, base) + sep + port
    return out


def write_graph(fn, *args, **kwargs):
    """Traces `fn` for `args` (without running it) and writes its graph.

    Writes to the default writer, like `tf.summary.graph`. Layers called under
    their name scopes (all Keras and tbkit layers) appear as collapsible nodes,
    under their own names (see `tidy_names`).

    Args:
      fn: a `tf.function`.
      *args, **kwargs: example arguments (tensors or `tf.TensorSpec`s).

    Returns:
      True if the graph was written (False when no default writer is set).
    """
    if not hasattr(fn, "get_concrete_function"):
        raise TypeError(f"write_graph needs a tf.function. Received: {type(fn).__name__}")
    concrete = fn.get_concrete_function(*args, **kwargs)
    return bool(tf.summary.graph(tidy_names(concrete.graph.as_graph_def())))
