"""The run's guarantees at both doors (Trainer, Keras callback), on models nobody wrote for tbkit.

- no checkpoint on disk ever holds a non-finite value, also when the NaN never
  reaches the loss (a layer that maps NaN to 0 on purpose: the same on every CPU);
- sparse (`tf.IndexedSlices`) gradients in norms, histograms and update ratios;
- a fit shorter than the cadences ends measured, and a second `fit` continues;
- fewer class names than classes is one line before training.
"""

from __future__ import annotations

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tbkit
import tbkit.keras as tbk
from conftest import FIXTURE, load_events, scalars
from tbkit.datasets import mnist

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
QUIET = dict(progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def digits():
    data = mnist.load(FIXTURE, validation_size=200, download=False, log=lambda _: None)
    x = data.train_images[:256].reshape(256, -1).astype("float32") / 255.0
    return x, data.train_labels[:256].astype("int32")


class NanToZero(keras.layers.Layer):
    """Maps NaN to 0, as oneDNN's fused MatMul+ReLU does on some CPUs."""

    def call(self, x):
        return tf.where(tf.math.is_nan(x), tf.zeros_like(x), x)


def masked_mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((784,))
    h = keras.layers.Dense(16, name="hidden")(inp)
    h = NanToZero(name="mask")(h)
    return keras.Model(inp, keras.layers.Dense(10, name="head")(h))


def checkpoint_values(run_dir) -> dict[str, dict[str, np.ndarray]]:
    """Every float tensor of every checkpoint under `run_dir/checkpoints`, by checkpoint."""
    out = {}
    for index in glob.glob(os.path.join(str(run_dir), "checkpoints", "*", "*.index")):
        prefix = index[: -len(".index")]
        reader = tf.train.load_checkpoint(prefix)
        values = {}
        for key, dtype in reader.get_variable_to_dtype_map().items():
            if dtype.is_floating:
                values[key] = reader.get_tensor(key)
        out[prefix] = values
    return out


def assert_all_finite(run_dir) -> None:
    found = checkpoint_values(run_dir)
    assert found, "no checkpoint written"
    for prefix, values in found.items():
        for key, value in values.items():
            assert np.all(np.isfinite(value)), f"{prefix}: {key} holds a non-finite value"


# --- a NaN the loss never sees ----------------------------------------------------------


def test_trainer_stops_on_a_nan_weight_that_never_reaches_the_loss(tmp_path, digits):
    x, y = digits
    model = masked_mlp()
    kernel = model.get_layer("hidden").kernel

    def inject(v):
        if v.step == 4:
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    trainer = tbkit.Trainer(model, keras.optimizers.Adam(1e-3), SCCE, tmp_path / "run",
                            eval_every=4, summary_every=4, checkpoint_every=8,
                            on_validation=inject, **QUIET)  # fmt: skip
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with pytest.raises(tbkit.TrainingError) as err:
        trainer.fit(ds, ds, steps=40)
    message = str(err.value)
    assert "\n" not in message
    assert "non-finite values (NaN or Inf) in hidden/kernel at step 8" in message
    assert "Best checkpoint kept: step 4" in message  # the loss guard saw nothing: finite
    assert_all_finite(tmp_path / "run")
    # What TensorBoard shows of it: the finding in the health text.
    health = load_events(str(tmp_path / "run" / "train")).Tensors("health")
    assert "hidden/kernel" in tf.make_ndarray(health[-1].tensor_proto).item().decode()


@pytest.mark.parametrize("restore", [True, False], ids=["restore_best", "keep_last"])
def test_callback_stops_on_a_nan_weight_that_never_reaches_the_loss(tmp_path, digits, restore):
    x, y = digits
    model = masked_mlp()
    model.compile(keras.optimizers.Adam(1e-3), SCCE, metrics=["accuracy"])
    kernel = model.get_layer("hidden").kernel

    class Inject(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # after epoch 1's checkpoints: epoch 2 trains on a NaN kernel
                kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    cb = tbk.TensorBoardRun(str(tmp_path / "run"), validation_data=(x, y), log=lambda _: None,
                            restore_best_weights=restore)  # fmt: skip
    with pytest.raises(tbkit.TrainingError) as err:
        model.fit(x, y, batch_size=64, epochs=6, validation_data=(x, y), verbose=0,
                  callbacks=[cb, Inject()])  # fmt: skip
    message = str(err.value)
    assert "\n" not in message
    assert "non-finite values (NaN or Inf) in hidden/kernel at epoch 3" in message
    assert_all_finite(tmp_path / "run")
    latest = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints" / "latest"))
    assert latest.endswith("-2")
    # The model is left at its best checkpoint, as after a non-finite loss; or as it was.
    best = masked_mlp()
    tf.train.Checkpoint(model=best).restore(cb.best.best_path).expect_partial()
    if restore:
        for got, want in zip(model.get_weights(), best.get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)
    else:
        assert not np.isfinite(kernel.numpy()).any()


def test_optimizer_slots_are_checked_too(tmp_path, digits):
    x, y = digits
    model = masked_mlp()
    optimizer = keras.optimizers.Adam(1e-3)

    def inject(v):
        if v.step == 4:  # a NaN in an Adam moment only
            slot = next(s for s in optimizer.variables if "head" in s.path and "kernel" in s.path)
            slot.assign(np.full(slot.shape, np.inf, "float32"))

    trainer = tbkit.Trainer(model, optimizer, SCCE, tmp_path / "run", eval_every=4,
                            summary_every=4, checkpoint_every=4, dynamics=False,
                            on_validation=inject, **QUIET)  # fmt: skip
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with pytest.raises(tbkit.TrainingError, match=r"in optimizer/\S*head_kernel\S* at step 4"):
        trainer.fit(ds, ds, steps=12)
    assert_all_finite(tmp_path / "run")


# --- sparse gradients -------------------------------------------------------------------


def embedding_model(seed=0):
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    dense_in = keras.Input((4,), name="features")
    e = keras.layers.Embedding(50, 8, name="embed")(tokens)
    e = keras.layers.GlobalAveragePooling1D()(e)
    h = keras.layers.Concatenate()([e, dense_in])
    h = keras.layers.Dense(12, activation="relu", name="hidden")(h)
    return keras.Model([tokens, dense_in], keras.layers.Dense(3, name="head")(h))


@pytest.fixture(scope="module")
def token_data():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=(192, 6)).astype("int32")
    features = rng.normal(size=(192, 4)).astype("float32")
    labels = (tokens[:, 0] % 3).astype("int32")
    return tokens, features, labels


def dense_gradient_norm(model, x, y, variable) -> float:
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(SCCE(y, model(x, training=True)))
    g = tape.gradient(loss, variable)
    assert isinstance(g, tf.IndexedSlices)  # the case under test
    return float(tf.norm(tf.convert_to_tensor(g)))


def test_trainer_records_sparse_gradients(tmp_path, token_data):
    tokens, features, labels = token_data
    model = embedding_model()
    x = (tokens[:32], features[:32])
    expected = dense_gradient_norm(model, x, labels[:32], model.get_layer("embed").embeddings)
    ds = tf.data.Dataset.from_tensor_slices(((tokens, features), labels)).batch(32)
    trainer = tbkit.Trainer(model, keras.optimizers.SGD(0.1), SCCE, tmp_path / "run",
                            eval_every=1, summary_every=1, **QUIET)  # fmt: skip
    result = trainer.fit(ds, ds, steps=3)
    acc = load_events(str(tmp_path / "run" / "train"))
    assert scalars(acc, "embed/embeddings/gradient_norm")[1] == pytest.approx(expected, rel=1e-4)
    assert all(np.isfinite(list(scalars(acc, "embed/embeddings/update_ratio").values())))
    assert "embed/embeddings/gradient" in acc.Tags()["tensors"]
    assert result.best_checkpoint is not None


def test_callback_records_sparse_gradients_with_validation_data(tmp_path, token_data):
    tokens, features, labels = token_data
    model = embedding_model()
    model.compile(keras.optimizers.SGD(0.1), SCCE, metrics=["accuracy"])
    x = (tokens, features)
    probe = ((tokens[:32], features[:32]), labels[:32])
    expected = dense_gradient_norm(model, *probe, model.get_layer("embed").embeddings)
    for summary_freq in ("epoch", 3):  # eager at epoch ends, compiled at a batch cadence
        run = tmp_path / str(summary_freq)
        cb = tbk.TensorBoardRun(str(run), validation_data=(x, labels), summary_every=summary_freq,
                                log=lambda _: None)  # fmt: skip
        model.fit(x, labels, batch_size=32, epochs=1, validation_data=(x, labels), verbose=0,
                  callbacks=[cb])  # fmt: skip
        acc = load_events(str(run / "train"))
        norms = scalars(acc, "embed/embeddings/gradient_norm")
        assert norms and all(np.isfinite(list(norms.values())))
        assert "embed/embeddings/gradient" in acc.Tags()["tensors"]
        assert_all_finite(run)
    # The first recording of a fresh model: the probe's gradient equals the dense one.
    fresh = embedding_model()
    fresh.compile(keras.optimizers.SGD(0.0), SCCE)
    cb = tbk.TensorBoardRun(str(tmp_path / "fresh"), validation_data=(x, labels),
                            summary_every=1, log=lambda _: None)  # fmt: skip
    fresh.fit(probe[0], probe[1], batch_size=32, epochs=1, verbose=0, callbacks=[cb])
    acc = load_events(str(tmp_path / "fresh" / "train"))
    assert scalars(acc, "embed/embeddings/gradient_norm")[1] == pytest.approx(expected, rel=1e-4)


# --- short fits and fits that chain ------------------------------------------------------


def small_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(16, activation="relu", name="hidden"),
         keras.layers.Dense(10, name="head")]
    )  # fmt: skip


def test_a_fit_shorter_than_the_cadences_ends_measured(tmp_path, digits):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    # The default cadences (100 steps) are longer than the fit.
    trainer = tbkit.Trainer(small_cnn(), keras.optimizers.Adam(1e-3), SCCE, tmp_path / "run",
                            **QUIET)  # fmt: skip
    result = trainer.fit(ds, ds, steps=60)
    assert result.best_step == 60 and result.best_checkpoint is not None
    assert os.path.exists(result.best_checkpoint + ".index")
    train = load_events(str(tmp_path / "run" / "train"))
    assert list(scalars(train, "hidden/kernel/mean")) == [60]
    assert list(scalars(train, "head/kernel/gradient_norm")) == [60]
    val = load_events(str(tmp_path / "run" / "validation"))
    assert list(scalars(val, "accuracy")) == [60]


def test_a_second_fit_on_the_same_trainer_continues(tmp_path, digits):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    seen = []
    trainer = tbkit.Trainer(small_cnn(), keras.optimizers.Adam(1e-3), SCCE, tmp_path / "run",
                            eval_every=20, summary_every=20,
                            on_validation=lambda v: seen.append(v.step), **QUIET)  # fmt: skip
    first = trainer.fit(ds, ds, steps=40)
    second = trainer.fit(ds, ds, steps=80)
    assert (first.steps, second.steps, second.resumed_from) == (40, 80, 40)
    assert seen == [20, 40, 60, 80]
    train = load_events(str(tmp_path / "run" / "train"))
    assert list(scalars(train, "hidden/kernel/mean")) == [20, 40, 60, 80]


def test_a_second_fit_with_the_same_callback_continues(tmp_path, digits):
    x, y = digits
    model = small_cnn()
    model.compile(keras.optimizers.Adam(1e-3), SCCE, metrics=["accuracy"])
    cb = tbk.TensorBoardRun(str(tmp_path / "run"), validation_data=(x, y), log=lambda _: None)
    model.fit(x, y, batch_size=64, epochs=2, validation_data=(x, y), verbose=0, callbacks=[cb])
    model.fit(x, y, batch_size=64, epochs=4, validation_data=(x, y), verbose=0, callbacks=[cb])
    val = load_events(str(tmp_path / "run" / "validation"))
    assert list(scalars(val, "accuracy")) == [4, 8, 12, 16]  # 4 batches an epoch


# --- class names --------------------------------------------------------------------------


def test_fewer_class_names_than_classes_fail_before_training(tmp_path, digits):
    x, y = digits
    names = ["zero", "one", "two"]
    with pytest.raises(ValueError, match=r"3 names for a model of 10 classes") as err:
        tbkit.Trainer(small_cnn(), keras.optimizers.Adam(), SCCE, tmp_path / "a",
                      class_names=names, **QUIET)  # fmt: skip
    assert "\n" not in str(err.value)
    model = small_cnn()
    model.compile(keras.optimizers.Adam(), SCCE, metrics=["accuracy"])
    before = [v.numpy().copy() for v in model.trainable_variables]
    cb = tbk.TensorBoardRun(str(tmp_path / "b"), validation_data=(x, y), class_names=names,
                            log=lambda _: None)  # fmt: skip
    with pytest.raises(ValueError, match=r"3 names for a model of 10 classes"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    for b, v in zip(before, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(b, v.numpy())  # not one batch trained


def test_more_class_names_than_outputs_are_fine(tmp_path, digits):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    names = [f"c{i}" for i in range(12)]
    trainer = tbkit.Trainer(small_cnn(), keras.optimizers.Adam(), SCCE, tmp_path / "run",
                            eval_every=2, class_names=names, **QUIET)  # fmt: skip
    trainer.fit(ds, ds, steps=2)
    val = load_events(str(tmp_path / "run" / "validation"))
    assert "per_class/precision/c11" in val.Tags()["tensors"]


def test_the_callbacks_old_argument_names_still_work_and_warn_once(tmp_path):
    import warnings

    import tbkit.keras.callback as module

    module._WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cb = tbk.TensorBoardRun(logdir=str(tmp_path / "a"), summary_freq=5)
        again = tbk.TensorBoardRun(logdir=str(tmp_path / "b"), summary_freq=7)
    deprecations = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert len(deprecations) == 2  # one per old name, not one per use
    assert any("logdir" in m and "run_dir" in m for m in deprecations)
    assert any("summary_freq" in m and "summary_every" in m for m in deprecations)
    assert (cb.run_dir, cb.summary_every) == (str(tmp_path / "a"), 5)
    assert (again.logdir, again.summary_freq) == (str(tmp_path / "b"), 7)


def test_fit_on_a_finished_run_writes_nothing_new(tmp_path, digits):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    make = lambda: tbkit.Trainer(small_cnn(), keras.optimizers.Adam(1e-3), SCCE,  # noqa: E731
                                 tmp_path / "run", eval_every=2, **QUIET)  # fmt: skip
    first = make().fit(ds, ds, steps=4)
    before = sorted(p.name for p in (tmp_path / "run" / "train").iterdir())
    again = make().fit(ds, ds, steps=4)  # already there: trains nothing
    assert (again.steps, again.resumed_from, again.best_step) == (4, None, first.best_step)
    assert sorted(p.name for p in (tmp_path / "run" / "train").iterdir()) == before


class Subclassed(keras.Model):
    """No symbolic outputs: its classes are found by tracing it on the data's inputs."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu", name="hidden")
        self.head = keras.layers.Dense(10, name="head")

    def call(self, x, training=False):
        return self.head(self.hidden(x))


def test_fewer_class_names_for_a_subclassed_model_fail_before_training(tmp_path, digits):
    x, y = digits
    names = ["zero", "one"]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    model = Subclassed()
    model(x[:1])
    before = [v.numpy().copy() for v in model.trainable_variables]
    trainer = tbkit.Trainer(model, keras.optimizers.Adam(), SCCE, tmp_path / "a",
                            class_names=names, **QUIET)  # fmt: skip
    with pytest.raises(ValueError, match=r"2 names for a model of 10 classes"):
        trainer.fit(ds, ds, steps=5)
    assert not (tmp_path / "a").exists()
    model.compile(keras.optimizers.Adam(), SCCE)
    cb = tbk.TensorBoardRun(str(tmp_path / "b"), validation_data=(x, y), class_names=names,
                            log=lambda _: None)  # fmt: skip
    with pytest.raises(ValueError, match=r"2 names for a model of 10 classes"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    for b, v in zip(before, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(b, v.numpy())


def test_class_metrics_switch_at_the_trainer_door(tmp_path, digits):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    tags = {}
    for name, on in (("on", True), ("off", False)):
        trainer = tbkit.Trainer(small_cnn(), keras.optimizers.Adam(), SCCE, tmp_path / name,
                                eval_every=2, class_metrics=on, **QUIET)  # fmt: skip
        trainer.fit(ds, ds, steps=2)
        tags[name] = set(load_events(str(tmp_path / name / "validation")).Tags()["tensors"])
    assert {"per_class/precision/3", "pr_curves/3"} <= tags["on"]
    assert not any(t.startswith(("per_class/", "pr_curves/")) for t in tags["off"])
    assert "accuracy" in tags["off"]


def test_the_callback_writes_config_and_hparams(tmp_path, digits):
    import json

    x, y = digits
    runs = {}
    for name, kw in (("with", {"config": {"note": "mine"}, "hparams": {"units": 16}}),
                     ("without", {})):  # fmt: skip
        model = small_cnn()
        model.compile(keras.optimizers.Adam(), SCCE, metrics=["accuracy"])
        cb = tbk.TensorBoardRun(str(tmp_path / name), log=lambda _: None, **kw)
        model.fit(x, y, batch_size=64, epochs=1, validation_data=(x, y), verbose=0,
                  callbacks=[cb])  # fmt: skip
        runs[name] = tmp_path / name
    assert json.loads((runs["with"] / "config.json").read_text()) == {"note": "mine"}
    top = load_events(str(runs["with"]))
    assert "_hparams_/session_start_info" in top.Tags()["tensors"]
    assert not (runs["without"] / "config.json").exists()
    assert not list(runs["without"].glob("events.out.tfevents.*"))
