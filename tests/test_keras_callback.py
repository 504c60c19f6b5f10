"""tbkit.keras.TensorBoardRun on an ordinary Keras model that knows nothing of tbkit."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tbkit
import tbkit.keras as tbk
from conftest import FIXTURE, decode_image_events, load_events, scalars

STATS = ("mean", "stddev", "min", "max", "histogram")


@pytest.fixture(scope="module")
def data():
    d = tbkit.datasets.mnist.load(FIXTURE, validation_size=500, log=lambda _: None)
    f = lambda a: (a[..., None] / 255.0).astype("float32")  # noqa: E731
    return f(d.train_images), d.train_labels, f(d.validation_images), d.validation_labels


def stock_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv_a"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(12, 3, activation="relu", name="conv_b"),  # 8-channel kernels
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="dense_a"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_fit_gives_the_full_picture_and_a_restorable_best(tmp_path, data):
    x, y, xv, yv = data
    model = stock_model()
    cb = tbk.TensorBoardRun(str(tmp_path), validation_data=(xv, yv), summary_every=10)
    history = model.fit(
        x, y, batch_size=100, epochs=3, validation_data=(xv, yv), callbacks=[cb], verbose=0
    )

    train = load_events(str(tmp_path / "train"))
    tags = set(train.Tags()["tensors"])
    for layer in ("conv_a", "conv_b", "dense_a", "logits"):
        for var in ("kernel", "bias"):
            assert {f"{layer}/{var}/{s}" for s in STATS} <= tags, (layer, var)
    assert list(scalars(train, "conv_b/kernel/mean")) == [10, 20, 30, 40]  # 15 batches x 3 epochs
    for layer in ("conv_a", "conv_b"):
        [*_, (step, grid)] = decode_image_events(train, f"{layer}/filters")
        # Every input channel of every filter is drawn: the grid has the builder's full shape
        # (conv_b: 12 filters x 8 input channels).
        expected = tbkit.filter_grid(model.get_layer(layer).kernel.numpy()).shape
        assert step == 40 and grid.shape[:2] == expected[:2]
    # Train and validation share the tags, so TensorBoard overlays them.
    val = load_events(str(tmp_path / "validation"))
    assert list(scalars(train, "accuracy")) == list(scalars(val, "accuracy")) == [15, 30, 45]
    assert scalars(val, "accuracy")[45] == pytest.approx(history.history["val_accuracy"][-1])
    assert {"confusion_matrix", "example_errors", "best_accuracy"} <= set(val.Tags()["tensors"])

    # The best checkpoint restores into a fresh model and gives the best validation accuracy.
    best_epoch = int(np.argmax(history.history["val_accuracy"])) + 1
    assert cb.best.best_path.endswith(f"best-{best_epoch}")
    fresh = stock_model(seed=1)
    tf.train.Checkpoint(model=fresh).restore(cb.best.best_path).expect_partial()
    _, acc = fresh.evaluate(xv, yv, verbose=0, batch_size=500)
    assert acc == pytest.approx(max(history.history["val_accuracy"]), abs=1e-6)
    # restore_best_weights: the trained model now holds the best weights too.
    np.testing.assert_allclose(
        model.get_layer("logits").kernel.numpy(), fresh.get_layer("logits").kernel.numpy()
    )


def test_early_stopping_state_survives_a_restart(tmp_path, data):
    x, y, xv, yv = data
    x, y = x[:600], y[:600]
    # An absurd min_delta makes every epoch after the first "no improvement".
    make = lambda: tbk.TensorBoardRun(str(tmp_path), patience=3, min_delta=0.5, images=False)  # noqa: E731
    first = stock_model()
    h1 = first.fit(
        x, y, batch_size=100, epochs=2, validation_data=(xv, yv), callbacks=[make()], verbose=0
    )
    assert len(h1.history["loss"]) == 2
    # A new process would build a new model and callback and call fit with more epochs:
    second = stock_model(seed=5)
    cb = make()
    h2 = second.fit(
        x, y, batch_size=100, epochs=10, validation_data=(xv, yv), callbacks=[cb], verbose=0
    )
    # Resumed after epoch 2 with the saved patience: best at epoch 1, stop at epoch 4.
    assert len(h2.history["loss"]) == 2
    assert int(cb.stopper.best_step.numpy()) == 1 and int(cb.epoch.numpy()) == 4
    steps = sorted(scalars(load_events(str(tmp_path / "validation")), "accuracy"))
    assert steps == [6, 12, 18, 24]  # optimizer.iterations continued too
    # Finished: a third fit trains nothing.
    third = stock_model(seed=6)
    h3 = third.fit(
        x, y, batch_size=100, epochs=10, validation_data=(xv, yv), callbacks=[make()], verbose=0
    )
    assert h3.history == {} or len(h3.history.get("loss", [])) == 0


def test_variable_tags_are_collision_free():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="inner")
    outer_in = keras.Input((4,))
    h = inner(outer_in)
    out = keras.layers.Dense(2, name="d2")(h)
    model = keras.Model(outer_in, out)
    tags = tbk.variable_tags(model)
    assert set(tags) == {"d/kernel", "d/bias", "d2/kernel", "d2/bias"}
    assert len(set(map(id, tags.values()))) == 4
    with pytest.raises(ValueError, match="summary_every"):
        tbk.TensorBoardRun("x", summary_every=0)


@pytest.mark.parametrize("restore", [True, False])
def test_restore_best_weights_leaves_the_model_at_its_best_epoch(tmp_path, data, restore):
    x, y, xv, yv = data
    x, y = x[:600], y[:600]

    def weights_of(path):
        fresh = stock_model(seed=9)
        tf.train.Checkpoint(model=fresh).restore(path).expect_partial()
        return [v.numpy() for v in fresh.trainable_variables]

    def same(a, b):
        return all(np.array_equal(u, w) for u, w in zip(a, b, strict=True))

    # An absurd min_delta: epoch 1 is the best, epochs 2 and 3 train on without improving.
    model = stock_model()
    cb = tbk.TensorBoardRun(
        str(tmp_path / "earlier"), min_delta=0.5, images=False, restore_best_weights=restore
    )
    model.fit(x, y, batch_size=100, epochs=3, validation_data=(xv, yv), callbacks=[cb], verbose=0)
    assert cb.best.best_path.endswith("best-1")
    final = [v.numpy() for v in model.trainable_variables]
    assert same(final, weights_of(cb.best.best_path)) == restore
    assert same(final, weights_of(tf.train.latest_checkpoint(cb.state.latest_dir))) != restore
    # The best holds the weights, not the optimizer `compile` attached: restoring it, as
    # Keras' restore_best_weights does, leaves the optimizer's step and moments alone.
    keys = [k for k, _ in tf.train.list_variables(cb.best.best_path)]
    assert any(k.startswith("model/") for k in keys)
    assert not any("optimizer" in k for k in keys), keys
    assert int(model.optimizer.iterations.numpy()) == 18  # 3 epochs of 6 batches
    if not restore:
        return  # the setting's effect is shown above; below, the restore path's cases

    # The last epoch is the best: the model keeps what it holds, which is the best's.
    model = stock_model()
    cb = tbk.TensorBoardRun(str(tmp_path / "last"), images=False, restore_best_weights=restore)
    model.fit(x, y, batch_size=100, epochs=1, validation_data=(xv, yv), callbacks=[cb], verbose=0)
    assert cb.best.best_path.endswith("best-1")
    assert same([v.numpy() for v in model.trainable_variables], weights_of(cb.best.best_path))

    # A loss that turns NaN in epoch 2, after epoch 1 was the best: fit stops with an
    # error, and the model is left with the best weights (or, without restoring, NaN).
    model = stock_model()
    bias = model.get_layer("logits").bias

    class Poison(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if self.model.optimizer.iterations.numpy() == 8:  # the third batch of epoch 2
                bias.assign(np.full(bias.shape, np.nan, "float32"))

    cb = tbk.TensorBoardRun(str(tmp_path / "nan"), images=False, restore_best_weights=restore)
    with pytest.raises(tbkit.TrainingError, match="loss became nan"):
        model.fit(x, y, batch_size=100, epochs=3, validation_data=(xv, yv), verbose=0,
                  callbacks=[Poison(), cb])  # fmt: skip
    assert cb.best.best_path.endswith("best-1")
    final = [v.numpy() for v in model.trainable_variables]
    assert same(final, weights_of(cb.best.best_path)) == restore


@pytest.mark.parametrize("every", [5, "epoch"])
def test_steps_per_execution_records_the_execution_holding_each_cadence_step(tmp_path, every):
    """fit calls the hooks once an execution (3 steps here, 9 steps an epoch): the
    execution holding a multiple of `summary_every` (or the epoch's last step) records at
    its end, with the update ratio of that execution, whether or not the cadence divides
    the execution."""
    keras.utils.set_random_seed(0)
    x = np.random.rand(288, 8).astype("float32")
    y = np.random.randint(0, 3, 288)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="h"),
                              keras.layers.Dense(3, name="o")])  # fmt: skip
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=3)  # fmt: skip
    cb = tbk.TensorBoardRun(str(tmp_path), summary_every=every, probe=(x[:32], y[:32]),
                            log=lambda _: None)  # fmt: skip
    model.fit(x, y, batch_size=32, epochs=2, validation_data=(x[:64], y[:64]), callbacks=[cb],
              verbose=0)  # fmt: skip
    ends = [3, 6, 9, 12, 15, 18]  # the steps at which each execution ends
    if every == "epoch":
        want = [9, 18]
    else:  # the end of each execution that holds a multiple of 5
        want = [
            e
            for before, e in zip([0, *ends[:-1]], ends, strict=True)
            if e // every > before // every
        ]
        assert want == [6, 12, 15]
    train = load_events(str(tmp_path / "train"))
    for tag in ("h/kernel/mean", "h/kernel/gradient_norm", "h/kernel/update_ratio"):
        assert sorted(scalars(train, tag)) == want, tag
    ratios = scalars(train, "h/kernel/update_ratio").values()
    assert all(np.isfinite(r) and r > 0 for r in ratios), ratios  # NaN: the update unseen


@pytest.mark.parametrize(
    "kind", ["traced", "jit_compile", "run_eagerly", "loss_scale", "loss_scale_factor", "sparse"]
)
def test_gradients_are_those_of_fits_own_step(tmp_path, kind):
    """With plain SGD a step's update is the learning rate times its gradient: the
    recorded gradient norms are those of the batch fit trained, whether fit's step is
    traced, compiled by XLA or eager, behind a LossScaleOptimizer or with the optimizer's
    own `loss_scale_factor` (unscaled both ways), or sparse
    (an Embedding's gradient made whole); and a second fit with another callback on
    the same optimizer (its train function already traced) still records them."""
    keras.utils.set_random_seed(0)
    rate = 0.05
    if kind == "sparse":
        x = np.random.randint(0, 40, (192, 6))
        inputs = [keras.Input((6,), dtype="int32"), keras.layers.Embedding(40, 4, name="emb"),
                  keras.layers.Flatten()]  # fmt: skip
    else:
        x = np.random.rand(192, 8).astype("float32")
        inputs = [keras.Input((8,)), keras.layers.Dense(6, activation="relu", name="h")]
    y = np.random.randint(0, 3, 192)
    model = keras.Sequential([*inputs, keras.layers.Dense(3, name="o")])
    optimizer = keras.optimizers.SGD(rate, loss_scale_factor=128.0 if "factor" in kind else None)
    if kind == "loss_scale":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**10)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=kind == "jit_compile", run_eagerly=kind == "run_eagerly")  # fmt: skip
    seen = []

    class Measured(tbkit.Hook):
        def on_record(self, run, event):
            dyn = event.dynamics
            seen.append((event.step, np.asarray(dyn.update_norm), np.asarray(dyn.gradient_norm)))

    for fit in ("first", "second"):
        cb = tbk.TensorBoardRun(str(tmp_path / fit), summary_every=4, probe=(x[:32], y[:32]),
                                monitor="loss", hooks=[Measured()], log=lambda _: None)  # fmt: skip
        model.fit(x, y, batch_size=32, epochs=1, callbacks=[cb], verbose=0)
    assert [step for step, *_ in seen] == [4, 8, 12]
    for step, update, gradient in seen:
        assert np.all(gradient > 0), (step, gradient)
        np.testing.assert_allclose(update, rate * gradient, rtol=1e-4, err_msg=str(step))


def test_without_a_probe_batch_the_gradients_are_still_fits_own(tmp_path):
    """No validation_data and no probe: the gradient summaries come from fit's step, the
    activation fractions (which need a batch to probe) are left out, said once."""
    keras.utils.set_random_seed(0)
    x = np.random.rand(96, 8).astype("float32")
    y = np.random.randint(0, 3, 96)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="relu", name="h"),
                              keras.layers.Dense(3, name="o")])  # fmt: skip
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = tbk.TensorBoardRun(str(tmp_path), summary_every=3, monitor="loss", log=lambda _: None)
    with pytest.warns(RuntimeWarning, match="no probe batch .*: no activation fractions$"):
        model.fit(x, y, batch_size=32, epochs=2, callbacks=[cb], verbose=0)
    tags = set(load_events(str(tmp_path / "train")).Tags()["tensors"])
    assert {"h/kernel/gradient_norm", "o/bias/update_ratio", "gradient_global_norm"} <= tags
    assert not {t for t in tags if "/activations/" in t}
    assert sorted(scalars(load_events(str(tmp_path / "train")), "h/kernel/gradient_norm")) == [3, 6]
