"""variable_summaries: values read back from real event files equal numpy's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tensorflow as tf

import tbkit
from conftest import load_events, scalars

TAGS = {f"w/{s}" for s in ("mean", "stddev", "min", "max", "histogram")}


def write(tmp_path, fn):
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        result = fn()
    writer.close()
    return result, load_events(str(tmp_path))


@pytest.mark.parametrize("compiled", [False, True])
def test_statistics_match_numpy(tmp_path, compiled):
    values = np.random.default_rng(0).normal(0.3, 2.0, size=(5, 7, 3)).astype(np.float32)
    var = tf.Variable(values)
    fn = lambda: tbkit.variable_summaries(var, name="w", step=7)  # noqa: E731
    recorded, acc = write(tmp_path, tf.function(fn) if compiled else fn)
    assert bool(recorded)
    assert set(acc.Tags()["tensors"]) == TAGS
    expected = {
        "mean": values.mean(),
        "stddev": values.std(),
        "min": values.min(),
        "max": values.max(),
    }
    for stat, value in expected.items():
        got = scalars(acc, f"w/{stat}")
        assert list(got) == [7]
        assert got[7] == pytest.approx(float(value), abs=1e-6)
    # Population stddev, not the sum of squares of the reference snippet.
    assert scalars(acc, "w/stddev")[7] == pytest.approx(
        float(np.sqrt(np.mean((values - values.mean()) ** 2))), abs=1e-6
    )
    hist = tf.make_ndarray(
        acc.Tensors("w/histogram")[0].tensor_proto
    )  # (buckets, [left, right, count])
    assert hist[:, 2].sum() == values.size
    assert hist[0, 0] == pytest.approx(values.min()) and hist[-1, 1] == pytest.approx(values.max())


def test_keras_variable_and_default_name(tmp_path):
    layer = tbkit.layers.Dense(4, name="layer_fc9")
    layer.build((None, 3))
    _, acc = write(tmp_path, lambda: tbkit.variable_summaries(layer.kernel, step=1))
    tags = set(acc.Tags()["tensors"])
    assert "layer_fc9/weights/mean" in tags and "layer_fc9/weights/histogram" in tags


def test_non_finite_values_are_reported(tmp_path):
    tbkit.summary.summaries._warned.clear()
    data = tf.constant([1.0, np.nan, 3.0, np.inf])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, acc = write(tmp_path, lambda: tbkit.variable_summaries(data, name="w", step=2))
    assert scalars(acc, "w/nonfinite") == {2: 2.0}
    assert scalars(acc, "w/mean")[2] == pytest.approx(2.0)
    assert any("2 non-finite" in str(w.message) for w in caught)
    hist = tf.make_ndarray(acc.Tensors("w/histogram")[0].tensor_proto)
    assert hist[:, 2].sum() == 2  # the finite values


def test_finite_values_write_no_nonfinite_tag(tmp_path):
    _, acc = write(tmp_path, lambda: tbkit.variable_summaries(tf.ones(3), name="w", step=0))
    assert "w/nonfinite" not in acc.Tags()["tensors"]


def test_nothing_recorded_without_writer_or_when_off(tmp_path):
    assert not bool(tbkit.variable_summaries(tf.ones(3), name="w", step=0))
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default(), tf.summary.record_if(False):
        assert not bool(tbkit.variable_summaries(tf.ones(3), name="w", step=0))
    writer.close()
    assert load_events(str(tmp_path)).Tags()["tensors"] == []


def test_histogram_switch(tmp_path):
    _, acc = write(
        tmp_path, lambda: tbkit.variable_summaries(tf.ones(3), name="w", step=0, histogram=False)
    )
    assert set(acc.Tags()["tensors"]) == TAGS - {"w/histogram"}


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(1).normal(size=(40, 50)),
        np.array([3.0, 3.0, 3.0]),
        np.array([-1.0, 0.0, 2.5, 2.5, 7.0]),
        np.zeros((0,)),
        np.random.default_rng(3).normal(size=(64, 14, 14, 16)),
    ],
    ids=["normal", "single-value", "small", "empty", "activations-200k"],
)
def test_fast_histogram_equals_tensorboards(tmp_path, data):
    """tbkit's linear-time histogram writes exactly what tf.summary.histogram writes."""
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default(step=1):
        tf.summary.histogram("theirs", data)
        tbkit.summary.summaries.histogram("ours", data)
        tf.function(lambda: tbkit.summary.summaries.histogram("ours_compiled", data))()
    writer.close()
    acc = load_events(str(tmp_path))
    theirs = tf.make_ndarray(acc.Tensors("theirs")[0].tensor_proto)
    for tag in ("ours", "ours_compiled"):
        event = acc.Tensors(tag)[0]
        np.testing.assert_array_equal(tf.make_ndarray(event.tensor_proto), theirs)
    meta = acc.SummaryMetadata("ours")
    assert meta.plugin_data.plugin_name == "histograms"


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(2).normal(size=(30, 20)),
        np.full((4, 4), 0.25),
        np.array([1.0, np.nan, -2.0, np.inf, 0.5]),
        np.array([np.nan, np.nan]),
    ],
    ids=["normal", "constant", "some-nonfinite", "all-nonfinite"],
)
def test_eager_and_compiled_write_the_same(tmp_path, values):
    """Eagerly the statistics are computed in numpy; the event files must not tell."""
    tbkit.summary.summaries._warned.clear()
    var = tf.Variable(values.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _, eager = write(tmp_path / "eager", lambda: tbkit.variable_summaries(var, "w", step=3))
        compiled_fn = tf.function(lambda: tbkit.variable_summaries(var, "w", step=3))
        _, compiled = write(tmp_path / "compiled", compiled_fn)
    assert set(eager.Tags()["tensors"]) == set(compiled.Tags()["tensors"])
    for tag in eager.Tags()["tensors"]:
        a = tf.make_ndarray(eager.Tensors(tag)[0].tensor_proto)
        b = tf.make_ndarray(compiled.Tensors(tag)[0].tensor_proto)
        if tag == "w/histogram":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _large(kind: str) -> np.ndarray:
    """Arrays past `LARGE`, where summaries take the chunked host path."""
    rng = np.random.default_rng(5)
    n = tbkit.summary.summaries.LARGE + 12345  # several chunks and a ragged last one
    if kind == "normal":
        return rng.normal(0.5, 3.0, size=n).astype(np.float32)
    if kind == "constant":
        return np.full(n, -1.25, np.float32)
    if kind == "nonfinite":  # NaN and Inf in two different chunks
        data = rng.normal(size=n).astype(np.float32)
        data[7] = np.nan
        data[tbkit.summary.summaries.CHUNK * 2 + 3] = -np.inf
        return data
    return (rng.integers(0, 9, size=n) * 0.5).astype(np.float32)  # many exact edge values


@pytest.mark.parametrize("kind", ["normal", "constant", "edges"])
def test_large_histogram_equals_tensorboards(tmp_path, kind):
    """The chunked path writes TensorBoard's exact buckets, eagerly and compiled."""
    data = _large(kind)
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default(step=1):
        tf.summary.histogram("theirs", data)
        tbkit.summary.summaries.histogram("ours", data)
        tf.function(lambda: tbkit.summary.summaries.histogram("ours_compiled", tf.constant(data)))()
        # Unknown static size: decided at run time.
        spec = tf.TensorSpec([None], tf.float32)
        dynamic = tf.function(
            lambda x: tbkit.summary.summaries.histogram("ours_dynamic", x), [spec]
        )
        dynamic(tf.constant(data))
    writer.close()
    acc = load_events(str(tmp_path))
    theirs = tf.make_ndarray(acc.Tensors("theirs")[0].tensor_proto)
    for tag in ("ours", "ours_compiled", "ours_dynamic"):
        np.testing.assert_array_equal(tf.make_ndarray(acc.Tensors(tag)[0].tensor_proto), theirs)


@pytest.mark.parametrize("kind", ["normal", "nonfinite"])
def test_large_variable_statistics(tmp_path, kind):
    """Large variables: numpy's statistics of the finite values, eager = compiled."""
    data = _large(kind)
    finite = data[np.isfinite(data)].astype(np.float64)
    var = tf.Variable(data)
    tbkit.summary.summaries._warned.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _, eager = write(tmp_path / "e", lambda: tbkit.variable_summaries(var, "w", step=3))
        fn = tf.function(lambda: tbkit.variable_summaries(var, "w", step=3))
        _, compiled = write(tmp_path / "c", fn)
    for acc in (eager, compiled):
        assert scalars(acc, "w/mean")[3] == pytest.approx(finite.mean(), rel=1e-6, abs=1e-6)
        assert scalars(acc, "w/stddev")[3] == pytest.approx(finite.std(), rel=1e-6)
        assert scalars(acc, "w/min")[3] == pytest.approx(finite.min())
        assert scalars(acc, "w/max")[3] == pytest.approx(finite.max())
        hist = tf.make_ndarray(acc.Tensors("w/histogram")[0].tensor_proto)
        np.testing.assert_array_equal(hist, tbkit.summary.summaries._buckets(finite, 30).numpy())
        if kind == "nonfinite":
            assert scalars(acc, "w/nonfinite") == {3: 2.0}
        else:
            assert "w/nonfinite" not in acc.Tags()["tensors"]


def test_large_statistics_memory_is_bounded():
    """The host statistics allocate at most a fixed pair of chunk buffers,
    far below half of the tensor (numpy reports its allocations to tracemalloc)."""
    import tracemalloc

    data = np.random.default_rng(0).normal(size=4_000_000).astype(np.float32)  # 16 MB
    data[1_000_001] = np.nan
    tracemalloc.start()
    try:
        tbkit.summary.summaries._host_statistics(data, 30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * data.nbytes, peak


def test_recorder_histograms_are_tensorboards_in_float32(tmp_path):
    """The layer recorder's compact histograms: TensorBoard's counts exactly, its edges to
    float32's precision, half the bytes; a count float32 cannot hold keeps float64."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(40, name="d")])
    writer = tf.summary.create_file_writer(str(tmp_path))
    big = np.array([[0.0, 1.0, float(1 << 24) + 1], [1.0, 2.0, 3.0]])
    with writer.as_default(step=1):
        tf.summary.histogram("theirs", model.get_layer("d").kernel)
        tbkit.LayerRecorder(model, images=False).record(1)
        tbkit.summary.summaries.write_eagerly([("big", "histogram", big)], compact=True)
    writer.close()
    acc = load_events(str(tmp_path))
    theirs = tf.make_ndarray(acc.Tensors("theirs")[0].tensor_proto)
    ours = tf.make_ndarray(acc.Tensors("d/kernel/histogram")[0].tensor_proto)
    assert ours.dtype == np.float32 and theirs.dtype == np.float64
    np.testing.assert_array_equal(ours[:, 2], theirs[:, 2])
    np.testing.assert_allclose(ours[:, :2], theirs[:, :2], rtol=1e-7)
    kept = tf.make_ndarray(acc.Tensors("big")[0].tensor_proto)
    assert kept.dtype == np.float64 and kept[0, 2] == (1 << 24) + 1
