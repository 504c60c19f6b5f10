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


def _buckets(data: tf.Tensor, bucket_count: int) -> tf.Tensor:
    """`[bucket_count, 3]` rows of (left edge, right edge, count), as TensorBoard's.

    The edges and the empty / single-value cases follow TensorBoard's own
    `histogram` summary exactly; the counting is a `bincount` (linear in the
    data) instead of a one-hot matrix of size `len(data) x bucket_count`. The
    special cases are selected with `tf.where`, not `tf.cond`: a few dozen ops
    per histogram instead of a few hundred, which is what tracing a model's
    summaries costs (seconds, once per process).
    """
    data = tf.cast(tf.reshape(data, [-1]), tf.float64)
    # Non-finite values have no bucket (TensorBoard's op turns them into garbage
    # edges); they get weight 0 here (cheaper than compacting the finite ones
    # out: 7.1 instead of 9.8 ms for two conv activations), and
    # variable_summaries counts them.
    finite = tf.math.is_finite(data)
    size = tf.reduce_sum(tf.cast(finite, tf.int32))
    empty = tf.equal(size, 0)
    # min/max of nothing are +-inf; zeros stand in so nothing below is NaN.
    zero, inf = tf.constant(0.0, tf.float64), tf.constant(np.inf, tf.float64)
    lo = tf.where(empty, zero, tf.reduce_min(tf.where(finite, data, inf)))
    hi = tf.where(empty, zero, tf.reduce_max(tf.where(finite, data, -inf)))
    width = hi - lo
    single = tf.equal(width, 0.0)
    step = tf.where(single, tf.constant(1.0, tf.float64), width / bucket_count)
    index = tf.clip_by_value(tf.cast(tf.floor((data - lo) / step), tf.int32), 0, bucket_count - 1)
    spread_counts = tf.math.bincount(
        index, weights=tf.cast(finite, tf.float64), minlength=bucket_count, maxlength=bucket_count
    )
    # One value repeated: TensorBoard puts all of it in the last bucket, with
    # every edge at that value. An empty input is all zeros (lo = hi = 0 here).
    last = tf.one_hot(bucket_count - 1, bucket_count, dtype=tf.float64)
    counts = tf.where(single, last * tf.cast(size, tf.float64), spread_counts)
    # tf.linspace(lo, hi, n + 1) with its last edge pinned to hi, computed as
    # linspace does (lo + delta * i) without its few dozen shape ops.
    inner = lo + (width / bucket_count) * tf.constant(np.arange(1, bucket_count, dtype=np.float64))
    edges = tf.concat([[lo], inner, [hi]], 0)
    edges = tf.where(single, tf.fill([bucket_count + 1], hi), edges)
    return tf.stack([edges[:-1], edges[1:], counts], axis=1)


CHUNK = 1 << 16
"""Values per chunk of the host statistics: a float64 buffer of 512 KB and an
int32 one of 256 KB, reused for every chunk (they stay in the CPU's cache)."""

LARGE = 1 << 18
"""From this many values on, compiled summaries take the chunked host path
(`tf.numpy_function`): TensorFlow's ops would hold several full-size
temporaries (casts, masks, indices) at once, 7-9x the tensor's size."""


def _floating_chunks(x: np.ndarray):
    """`x` (flat) in views of `CHUNK` values, as float32 or float64."""
    for start in range(0, x.size, CHUNK):
        chunk = x[start : start + CHUNK]
        if chunk.dtype not in (np.float32, np.float64):
            chunk = chunk.astype(np.float64 if chunk.dtype.kind in "iub" else np.float32)
        yield chunk


def _host_statistics(data, bucket_count: int | None):
    """Finite count, non-finite count, mean, population stddev, min, max and the
    `[bucket_count, 3]` histogram (or None) of `data`, in two passes over chunks.

    Peak extra memory is two reused chunk buffers (768 KB) whatever the size;
    about 4 ns per value on one core. The histogram is TensorBoard's exactly:
    the same float64 arithmetic, `floor((x - min) / ((max - min) / k))` clamped
    to the last bucket, edges `min + width/k * i` with the last pinned to max.
    The variance is the float64 mean of squared offsets from the minimum minus
    the squared mean offset (the minimum lies within a few deviations of the
    mean, so nothing cancels at float64 precision).
    """
    x = np.asarray(data).reshape(-1)
    count, lo, hi, total = 0, np.inf, -np.inf, 0.0
    for chunk in _floating_chunks(x):  # pass 1: count, sum, min, max
        cmin, cmax = chunk.min(initial=np.inf), chunk.max(initial=-np.inf)
        if not (np.isfinite(cmin) and np.isfinite(cmax)):
            chunk = chunk[np.isfinite(chunk)]
            if not chunk.size:
                continue
            cmin, cmax = chunk.min(), chunk.max()
        count += chunk.size
        total += float(chunk.sum(dtype=np.float64))
        lo, hi = min(lo, float(cmin)), max(hi, float(cmax))
    nonfinite = x.size - count
    if count == 0:
        stats = (count, nonfinite, np.nan, np.nan, np.inf, -np.inf)
        return stats, (None if bucket_count is None else np.zeros((bucket_count, 3)))
    width = hi - lo
    k = bucket_count or 1
    step = width / k if width else 1.0
    offsets = np.empty(min(CHUNK, x.size), np.float64)
    index = np.empty(offsets.size, np.int32)
    squares, counts = 0.0, np.zeros(k + 1, np.int64)
    for chunk in _floating_chunks(x):  # pass 2: squared offsets, bucket counts
        if nonfinite:
            chunk = chunk[np.isfinite(chunk)]
        off, idx = offsets[: chunk.size], index[: chunk.size]
        np.subtract(chunk, lo, out=off)
        # Not np.dot: BLAS's threads spin after a call, taking cores from the
        # train steps that follow (~50 ms of them per recording on 2 cores).
        squares += float(np.einsum("i,i->", off, off))
        if bucket_count is not None and width:
            # offsets are >= 0, so the cast truncates as floor would; the max
            # lands in bucket k (or k - 1) and is folded into the last one.
            np.divide(off, step, out=off)
            np.copyto(idx, off, casting="unsafe")
            counts += np.bincount(idx, minlength=k + 1)[: k + 1]
    mean_offset = total / count - lo
    variance = max(squares / count - mean_offset * mean_offset, 0.0)
    stats = (count, nonfinite, lo + mean_offset, np.sqrt(variance), lo, hi)
    if bucket_count is None:
        return stats, None
    if width == 0:  # one value repeated: all of it in the last bucket, every edge at it
        buckets = np.zeros((k, 3))
        buckets[:, :2] = hi
        buckets[-1, 2] = count
        return stats, buckets
    counts[k - 1] += counts[k]
    inner = lo + (width / k) * np.arange(1, k, dtype=np.float64)
    edges = np.concatenate([[lo], inner, [hi]])
    return stats, np.stack([edges[:-1], edges[1:], counts[:k].astype(np.float64)], axis=1)


def _buckets_numpy(data, bucket_count: int) -> np.ndarray:
    """TensorBoard's `[bucket_count, 3]` histogram of the finite values of `data`."""
    return _host_statistics(data, bucket_count)[1]


def _host_statistics_op(values: tf.Tensor, bucket_count: int | None):
    """`_host_statistics` inside a graph: (nonfinite, mean, stddev, min, max, buckets)."""

    def run(x):
        (_, nonfinite, *stats), buckets = _host_statistics(x, bucket_count)
        if buckets is None:
            buckets = np.zeros((0, 3))
        return (np.int32(nonfinite), *np.asarray(stats, np.float32), buckets)

    out = tf.numpy_function(
        run,
        [values],
        [tf.int32, tf.float32, tf.float32, tf.float32, tf.float32, tf.float64],
        stateful=False,
    )
    for tensor in out[:5]:
        tensor.set_shape([])
    out[5].set_shape([bucket_count or 0, 3])
    return out


def _is_large(values: tf.Tensor) -> bool:
    size = values.shape.num_elements()
    return size is not None and size >= LARGE


def histogram(
    name: str, data, step=None, buckets: int | None = None, description: str | None = None
):
    """`tf.summary.histogram` with the same output, computed in linear time.

    TensorBoard's histogram summary counts with a one-hot matrix of
    `len(data) x buckets` float64 values, which dominates the cost of logging
    large weights and activations. This writes the identical `[k, 3]` tensor
    (same plugin, same edges) from a `bincount`, and only when it will be recorded.

    Args:
      name: tag name (prefixed by the enclosing name scopes).
      data: tensor of any shape, castable to float64.
      step: defaults to `tf.summary.experimental.get_step()`.
      buckets: bucket count (default 30, as TensorBoard's).
      description: optional Markdown description.

    Returns:
      A boolean tensor: True if the summary was written.
    """
    from tensorboard.plugins.histogram import metadata

    bucket_count = 30 if buckets is None else int(buckets)
    if bucket_count <= 0:
        raise ValueError(f"buckets must be a positive integer. Received: buckets={buckets}")
    data = tf.stop_gradient(data)
    summary_metadata = metadata.create_summary_metadata(display_name=None, description=description)
    with tf.summary.experimental.summary_scope(name, "histogram_summary", values=[data, step]) as (
        tag,
        _,
    ):
        # tf.summary.write calls `tensor` only when the summary will be recorded.
        if tf.executing_eagerly():
            tensor = lambda: tf.constant(_buckets_numpy(data, bucket_count))  # noqa: E731
        else:
            tensor = lambda: _buckets_graph(data, bucket_count)  # noqa: E731
        return tf.summary.write(tag=tag, tensor=tensor, step=step, metadata=summary_metadata)


def _buckets_graph(data: tf.Tensor, bucket_count: int) -> tf.Tensor:
    """The histogram in a graph: TensorFlow ops for small tensors, the chunked
    host path for large ones (decided when traced if the size is static)."""
    data = tf.convert_to_tensor(data)
    host = lambda: _host_statistics_op(data, bucket_count)[5]  # noqa: E731
    small = lambda: _buckets(data, bucket_count)  # noqa: E731
    size = data.shape.num_elements()
    if size is not None:
        return host() if size >= LARGE else small()
    return tf.cond(tf.size(data) >= LARGE, host, small)


_write_histogram = histogram  # `variable_summaries` has a flag of the same name


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

    if tf.executing_eagerly():
        return _record_eagerly(var, scope, step, histogram, buckets)

    def record():
        values = tf.convert_to_tensor(var)
        if _is_large(values):
            count = None if not histogram else (30 if buckets is None else int(buckets))
            nonfinite, *stats, table = _host_statistics_op(values, count)
            ok = _write_stats(scope, step, stats, None, histogram, buckets, table)
        else:
            finite, nonfinite, *stats = _stats(values)
            ok = _write_stats(scope, step, stats, finite, histogram, buckets)

        def flag():
            with tf.name_scope(scope):
                tf.summary.scalar("nonfinite", tf.cast(nonfinite, tf.float32), step=step)
            tf.numpy_function(_warn_nonfinite, [tf.constant(scope[:-1]), nonfinite], tf.int64)
            return tf.constant(True)

        tf.cond(nonfinite > 0, flag, lambda: tf.constant(False))
        return ok

    return tf.cond(tf.summary.should_record_summaries(), record, lambda: tf.constant(False))


_SCALAR_METADATA = None
_HISTOGRAM_METADATA = None


def _metadata():
    global _SCALAR_METADATA, _HISTOGRAM_METADATA
    if _SCALAR_METADATA is None:
        from tensorboard.plugins.histogram import metadata as histogram_metadata
        from tensorboard.plugins.scalar import metadata as scalar_metadata

        _SCALAR_METADATA = scalar_metadata.create_summary_metadata(None, None)
        _HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata(None, None)
    return _SCALAR_METADATA, _HISTOGRAM_METADATA


EXACT_IN_FLOAT32 = 1 << 24
"""Counts up to this are exact in float32 (its 24-bit significand)."""


def _histogram_dtype(table: np.ndarray, compact: bool):
    """float64 (`tf.summary.histogram`'s), or with `compact` float32 when that holds
    every count exactly and every edge within range (half the bytes)."""
    if compact and table.size:
        counts_exact = table[:, 2].max() < EXACT_IN_FLOAT32
        edges_in_range = np.abs(table[:, :2]).max() < np.finfo(np.float32).max
        if counts_exact and edges_in_range:
            return "<f4"
    return "<f8"


def summary_proto(values, compact: bool = False):
    """One `Summary` proto of `[(tag, kind, value)]` (see `write_eagerly`), built
    field by field: about 2 us per value, against ~20 us through `make_tensor_proto`.
    With `compact`, histograms are float32 where that is exact for their counts."""
    from tensorboard.compat.proto import summary_pb2, types_pb2

    scalar_md, histogram_md = _metadata()
    summary = summary_pb2.Summary()
    for tag, kind, value in values:
        if kind == "scalar":
            entry = summary.value.add(tag=tag, metadata=scalar_md)
            entry.tensor.dtype = types_pb2.DT_FLOAT
            entry.tensor.tensor_shape.SetInParent()
            entry.tensor.float_val.append(float(value))
        elif kind == "histogram":
            table = np.asarray(value, dtype=np.float64)
            table = np.ascontiguousarray(table, dtype=_histogram_dtype(table, compact))
            entry = summary.value.add(tag=tag, metadata=histogram_md)
            single = table.dtype == np.float32
            entry.tensor.dtype = types_pb2.DT_FLOAT if single else types_pb2.DT_DOUBLE
            for size in table.shape:
                entry.tensor.tensor_shape.dim.add(size=size)
            entry.tensor.tensor_content = table.tobytes()
        else:
            raise ValueError(f"unknown summary kind {kind!r} for {tag!r}")
    return summary


def write_eagerly(values, step=None, compact: bool = False) -> tf.Tensor:
    """Writes eager summaries as one raw `Summary` proto: `[(tag, kind, value)]`.

    `kind` is `"scalar"` (a number) or `"histogram"` (a `[k, 3]` bucket array as
    `histogram` computes it). The events hold what `tf.summary.scalar` and
    `histogram` write (same plugins, dtypes, shapes and tags) for one write op
    whatever their number, instead of ~0.8 ms per eager summary op. With
    `compact`, a histogram whose counts float32 holds exactly (below 2**24 per
    bucket) is written as float32: the same counts, edges to float32's 7 digits,
    half the bytes (TensorBoard reads either).
    """
    return tf.summary.experimental.write_raw_pb(
        summary_proto(values, compact).SerializeToString(), step=step
    )


def statistics_entries(var, scope: str, histogram: bool, buckets=None) -> tuple[list, int]:
    """`variable_summaries`' values of `var` in numpy: `([(tag, kind, value)], nonfinite)`,
    the tags under `scope` (which ends with `/`)."""
    count = None if not histogram else (30 if buckets is None else int(buckets))
    (_, nonfinite, *stats), table = _host_statistics(var, count)
    values = [
        (scope + tag, "scalar", value)
        for tag, value in zip(("mean", "stddev", "min", "max"), stats, strict=True)
    ]
    if histogram:
        values.append((scope + "histogram", "histogram", table))
    if nonfinite:
        values.append((scope + "nonfinite", "scalar", float(nonfinite)))
    return values, int(nonfinite)


def warn_nonfinite(scope: str, count: int) -> None:
    """The once-per-name warning of `variable_summaries` about non-finite values."""
    _warn_nonfinite(scope.encode(), count)


def _record_eagerly(var, scope: str, step, histogram: bool, buckets) -> tf.Tensor:
    """`variable_summaries` outside `tf.function`: the statistics in numpy.

    About 1 ms per variable instead of ~7 ms of small eager ops (and no
    first-call kernel set-up), which is what an epoch-end callback pays.
    """
    if not bool(tf.summary.should_record_summaries()):
        return tf.constant(False)
    values, nonfinite = statistics_entries(tf.convert_to_tensor(var), scope, histogram, buckets)
    ok = write_eagerly(values, step=step)
    if nonfinite:
        warn_nonfinite(scope[:-1], nonfinite)
    return ok


def _write_stats(scope: str, step, stats, finite, histogram: bool, buckets, table=None):
    """The `mean`, `stddev`, `min`, `max` scalars and the histogram under `scope`
    (of the `finite` values, or the ready bucket `table` of the host path)."""
    from tensorboard.plugins.histogram import metadata

    with tf.name_scope(scope):
        results = [
            tf.summary.scalar(tag, value, step=step)
            for tag, value in zip(("mean", "stddev", "min", "max"), stats, strict=True)
        ]
        if histogram and table is None:
            _write_histogram("histogram", finite, step=step, buckets=buckets)
        elif histogram:
            with tf.summary.experimental.summary_scope("histogram") as (tag, _):
                tf.summary.write(
                    tag=tag,
                    tensor=table,
                    step=step,
                    metadata=metadata.create_summary_metadata(display_name=None, description=None),
                )
    return results[0]
