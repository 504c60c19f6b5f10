"""Training dynamics (#14): values read back with TensorBoard's loader, checked against numpy.

Every expected value is computed here, independently of tbkit: the gradients
with a `GradientTape` of the test's own, the norms and fractions with numpy.
"""

from __future__ import annotations

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2

import tbkit
import tbkit.keras
from conftest import FIXTURE, load_events, scalars
from tbkit.datasets import mnist

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def digits():
    data = mnist.load(FIXTURE, validation_size=200, download=False, log=lambda _: None)
    x = data.train_images[:256, ..., None].astype("float32") / 255.0
    return x, data.train_labels[:256].astype("int32")


def cnn(seed=0, hidden="relu"):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(6, 5, activation="relu", name="conv")(inp)
    # Average pooling: XLA has no deterministic max-pool gradient, and other tests of the
    # same process may have switched op determinism on (train_mnist.py --deterministic).
    h = keras.layers.AveragePooling2D(4)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation=hidden, name="hidden")(h)
    return keras.Model(inp, keras.layers.Dense(10, name="head")(h))


def text(acc, tag):
    return {e.step: tf.make_ndarray(e.tensor_proto).item().decode() for e in acc.Tensors(tag)}


def histogram_counts(acc, tag):
    return {e.step: tf.make_ndarray(e.tensor_proto) for e in acc.Tensors(tag)}


def l2(a) -> float:
    return float(np.sqrt(np.sum(np.square(np.asarray(a, np.float64)))))


def test_trainer_dynamics_match_numpy(tmp_path, digits):
    x, y = digits
    model = cnn()
    schedule = keras.optimizers.schedules.ExponentialDecay(3e-3, 10, 0.5)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    batch = (x[:32], y[:32])
    # The gradient of the step's loss, by the test's own tape, on the step's weights.
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(SCCE(batch[1], model(batch[0], training=True)))
    grads = dict(zip(before, tape.gradient(loss, model.trainable_variables), strict=True))
    # The layers' outputs in the step's own forward pass (training mode, weights before it).
    outputs = {
        name: keras.Model(model.inputs, model.get_layer(name).output)(batch[0], training=True)
        for name in ("conv", "hidden")
    }
    trainer = tbkit.Trainer(model, keras.optimizers.Adam(schedule), SCCE, tmp_path / "run",
                            eval_every=1, summary_every=1, progress=False, log=lambda _: None)  # fmt: skip
    train = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(32)
    trainer.fit(train, tf.data.Dataset.from_tensor_slices((x, y)).batch(64), steps=1)
    acc = load_events(str(tmp_path / "run" / "train"))
    tags = {tag: v for tag, v in tbkit.variable_tags(model).items() if v.trainable}
    assert set(tags) == {
        f"{la}/{v}" for la in ("conv", "hidden", "head") for v in ("kernel", "bias")
    }
    for tag, v in tags.items():
        g, w0, w1 = grads[v.path].numpy(), before[v.path], v.numpy()
        assert scalars(acc, f"{tag}/gradient_norm")[1] == pytest.approx(l2(g), rel=1e-4)
        ratio = l2(w1 - w0) / l2(w0) if l2(w0) else 0.0
        assert scalars(acc, f"{tag}/update_ratio")[1] == pytest.approx(ratio, rel=1e-3, abs=1e-9)
        hist = histogram_counts(acc, f"{tag}/gradient")[1]
        assert hist[:, 2].sum() == g.size
        assert (hist[0, 0], hist[-1, 1]) == pytest.approx((g.min(), g.max()), rel=1e-5)
    all_grads = np.concatenate([grads[v.path].numpy().ravel() for v in tags.values()])
    assert scalars(acc, "gradient_global_norm")[1] == pytest.approx(l2(all_grads), rel=1e-4)
    assert scalars(acc, "learning_rate")[1] == pytest.approx(float(schedule(0)), rel=1e-6)
    # Fractions of zero outputs and of dead units, on the logged batch in its own step.
    for name, out in outputs.items():
        zero = out.numpy() == 0
        assert scalars(acc, f"{name}/activations/zero_fraction")[1] == pytest.approx(zero.mean())
        dead = zero.reshape(-1, out.shape[-1]).all(axis=0).mean()
        assert scalars(acc, f"{name}/activations/dead_fraction")[1] == pytest.approx(dead)
    assert "no findings" in text(acc, "health")[1]


def test_layout_puts_each_scale_on_its_own_chart(tmp_path, digits):
    x, y = digits
    trainer = tbkit.Trainer(cnn(), keras.optimizers.Adam(1e-3), SCCE, tmp_path / "run",
                            eval_every=2, summary_every=2, progress=False, log=lambda _: None)  # fmt: skip
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    trainer.fit(ds, ds, steps=2)
    acc = load_events(str(tmp_path / "run" / "train"))
    (event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(tf.make_ndarray(event.tensor_proto).item())
    charts = {c.title: c.multiline.tag[0] for c in layout.category[0].chart}
    assert list(charts) == ["gradient norms", "update ratios", "dead fractions",
                            "zero fractions", "gradient global norm", "learning rate"]  # fmt: skip
    tags = acc.Tags()["tensors"]
    matched = {title: sorted(t for t in tags if re.match(p, t)) for title, p in charts.items()}
    layers = ("conv", "hidden", "head")
    assert matched["gradient norms"] == sorted(
        f"{la}/{v}/gradient_norm" for la in layers for v in ("kernel", "bias")
    )
    assert matched["update ratios"] == sorted(
        f"{la}/{v}/update_ratio" for la in layers for v in ("kernel", "bias")
    )
    assert matched["dead fractions"] == ["conv/activations/dead_fraction",
                                         "head/activations/dead_fraction",
                                         "hidden/activations/dead_fraction"]  # fmt: skip
    assert matched["gradient global norm"] == ["gradient_global_norm"]
    assert matched["learning rate"] == ["learning_rate"]
    # No chart mixes two quantities.
    charted = [t for ts in matched.values() for t in ts]
    assert len(charted) == len(set(charted))


@pytest.mark.parametrize("jit", [False, True], ids=["plain", "xla"])
def test_nan_injected_into_one_variable_is_named(tmp_path, digits, jit):
    x, y = digits
    # No ReLU after the NaN kernel: a fused MatMul+ReLU maps NaN to 0 on some CPUs, and
    # this test is about the loss guard (tests/test_guarantees.py covers masked NaNs).
    model = cnn(hidden=None)
    target = model.get_layer("hidden").kernel

    def inject(v):
        if v.step == 4:  # after the validation of step 4: step 5 trains on a NaN weight
            target.assign(np.full(target.shape, np.nan, "float32"))

    trainer = tbkit.Trainer(model, keras.optimizers.Adam(1e-3), SCCE, tmp_path / "run",
                            eval_every=4, summary_every=4, checkpoint_every=8, jit_compile=jit,
                            on_validation=inject, progress=False, log=lambda _: None)  # fmt: skip
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with pytest.raises(tbkit.TrainingError) as err:
        trainer.fit(ds, ds, steps=20)
    message = str(err.value)
    assert "\n" not in message
    assert "at step 5 (first non-finite value: hidden/kernel)" in message
    assert "Best checkpoint kept: step 4" in message
    acc = load_events(str(tmp_path / "run" / "train"))
    assert "hidden/kernel: non-finite values" in text(acc, "health")[8]
    assert scalars(acc, "hidden/kernel/nonfinite")[8] == target.shape[0] * target.shape[1]
    # Nothing diverged was saved: no latest checkpoint (the first was due at step 8),
    # the best one of step 4.
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints" / "latest")) is None
    best = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints" / "best"))
    assert best.endswith("-4")


def test_dynamics_switches(tmp_path, digits):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    tags = {}
    for name, kw in {"off": {"dynamics": False}, "no_hist": {"gradient_histograms": False},
                     "on": {}}.items():  # fmt: skip
        trainer = tbkit.Trainer(cnn(), keras.optimizers.Adam(1e-3), SCCE, tmp_path / name,
                                eval_every=2, summary_every=2, progress=False,
                                log=lambda _: None, **kw)  # fmt: skip
        trainer.fit(ds, ds, steps=2)
        tags[name] = set(load_events(str(tmp_path / name / "train")).Tags()["tensors"])
    dyn = {"head/kernel/gradient_norm", "head/kernel/update_ratio", "gradient_global_norm",
           "learning_rate", "health", "hidden/activations/dead_fraction"}  # fmt: skip
    assert dyn <= tags["on"] and dyn <= tags["no_hist"]
    assert not dyn & tags["off"] and "head/kernel/mean" in tags["off"]
    assert "head/kernel/gradient" in tags["on"] and "head/kernel/gradient" not in tags["no_hist"]


def _bn_model(seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(10, name="head")(h))
    model.compile(keras.optimizers.SGD(0.05), SCCE)
    return model


def test_callback_dynamics_are_fits_own_step(tmp_path, digits):
    """The gradients recorded are those of fit's recorded batch itself (plain SGD: the
    update is the learning rate times the gradient, variable by variable), and
    measuring them (the tap in fit's step, the probe's forward pass for the activation
    fractions) changes nothing: the same fit without the callback ends on the same
    weights and BatchNorm statistics."""
    x, y = digits
    model = _bn_model(2)
    snapshots = {}

    class Snapshot(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 3:  # the epoch's last batch: the recorded one
                snapshots["before"] = [v.numpy().copy() for v in model.trainable_variables]

    probe = (x[:64], y[:64])
    cb = tbkit.keras.TensorBoardRun(str(tmp_path / "run"), probe=probe,
                                    restore_best_weights=False, monitor="loss")  # fmt: skip
    fit = dict(batch_size=32, epochs=1, shuffle=False, verbose=0)
    model.fit(x[:128], y[:128], callbacks=[Snapshot(), cb], **fit)
    acc = load_events(str(tmp_path / "run" / "train"))
    step = 4
    tags = {id(v): t for t, v in tbkit.variable_tags(model).items()}
    for v, w0 in zip(model.trainable_variables, snapshots["before"], strict=True):
        tag = tags[id(v)]
        update = l2(v.numpy() - w0)
        assert scalars(acc, f"{tag}/gradient_norm")[step] == pytest.approx(update / 0.05, rel=1e-4)
        ratio = update / l2(w0) if l2(w0) else 0.0
        assert scalars(acc, f"{tag}/update_ratio")[step] == pytest.approx(ratio, rel=1e-3)
    assert scalars(acc, "learning_rate")[step] == pytest.approx(0.05)
    assert {"bn/activations/zero_fraction", "health"} <= set(acc.Tags()["tensors"])
    alone = _bn_model(2)
    alone.fit(x[:128], y[:128], **fit)
    for a, b in zip(model.variables, alone.variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)


def test_callback_probes_the_gradients_when_fits_step_has_no_tap(tmp_path, digits):
    """A train function traced before the optimizer had a tap (a fit without the
    callback first): the gradients are measured on the probe batch, said once."""
    x, y = digits
    model = _bn_model(3)
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    probe = (x[:64], y[:64])
    cb = tbkit.keras.TensorBoardRun(str(tmp_path / "run"), probe=probe,
                                    restore_best_weights=False, monitor="loss")  # fmt: skip
    with pytest.warns(RuntimeWarning, match="measured on the probe batch"):
        model.fit(x[:128], y[:128], batch_size=32, epochs=1, callbacks=[cb], verbose=0)
    moving = model.get_layer("bn").moving_mean.numpy().copy()
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=probe[0], y=probe[1], y_pred=model(probe[0], training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    model.get_layer("bn").moving_mean.assign(moving)
    acc = load_events(str(tmp_path / "run" / "train"))
    tags = {id(v): t for t, v in tbkit.variable_tags(model).items()}
    for v, g in zip(model.trainable_variables, grads, strict=True):
        assert scalars(acc, f"{tags[id(v)]}/gradient_norm")[6] == pytest.approx(l2(g), rel=1e-4)
    cb._probe.measure()  # one more probe: gradients in training mode change no statistic
    np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), moving)


def test_callback_stops_on_a_nonfinite_loss(tmp_path, digits):
    x, y = digits
    model = cnn()
    model.compile(keras.optimizers.Adam(1e-3), SCCE, jit_compile=True)

    class Inject(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                model.get_layer("head").bias.assign(np.full(10, np.nan, "float32"))

    cb = tbkit.keras.TensorBoardRun(str(tmp_path / "run"), validation_data=(x[:64], y[:64]))
    with pytest.raises(tbkit.TrainingError, match=r"loss became nan at step 3 \("):
        model.fit(x, y, batch_size=32, epochs=2, callbacks=[Inject(), cb], verbose=0)
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / "latest" / "checkpoint")
    acc = load_events(str(tmp_path / "run" / "train"))
    assert "non-finite" in text(acc, "health")[3]


@pytest.mark.slow  # CLI runs end to end on the fixture
def test_broken_runs_are_flagged_by_health_and_report(tmp_path, capsys):
    """Too high and too low a learning rate, through the CLI flags alone, on the fixture."""
    from tbkit.app import cli
    from tbkit.tools import report

    logdir = str(tmp_path / "logs")
    common = ["--logdir", logdir, "--data-dir", FIXTURE, "--validation-size", "100",
              "--num-iterations", "60", "--eval-every", "30", "--summary-every", "30",
              "--seed", "1", "--no-images", "--no-histograms"]  # fmt: skip
    for name, lr in (("high", "1.0"), ("low", "1e-7"), ("default", None)):
        flags = ["--learning-rate", lr] if lr else []
        assert cli.main(common + ["--run-name", name] + flags) == 0
    health = {
        name: text(load_events(os.path.join(logdir, name, "train")), "health")
        for name in ("high", "low", "default")
    }
    # Flagged from the first validation on, naming the layers and the signal.
    for step in (30, 60):
        high = health["high"][step]
        assert "layer_conv1: dead units" in high and "layer_fc1: dead units" in high
        assert (
            "barely moves the weights: every layer's update ratio is below 1e-05"
            in health["low"][step]
        )
        assert health["default"][step].endswith("no findings")
    capsys.readouterr()
    assert report.main([logdir]) == 0
    out = capsys.readouterr().out.split("Health")[1]
    blocks = re.split(r"\n  (?=\S)", out)  # one block per run: its first line, then its findings
    lines = {
        name: next(b for b in blocks if b.startswith(f"{name}: "))
        for name in ("high", "low", "default")
    }
    assert "layer_conv2: dead units" in lines["high"]
    assert "learning rate 9.6e-08 barely moves" in lines["low"]  # 1e-7 decayed by 0.5 ** 0.06
    assert lines["default"].startswith("default: step 60 (dynamics of step 60): no findings")


def test_callback_switches_and_probe_size(tmp_path, digits):
    x, y = digits
    for name, kw in {"off": {"dynamics": False},
                     "small": {"probe_size": 10, "gradient_histograms": False}}.items():  # fmt: skip
        model = cnn()
        model.compile(keras.optimizers.SGD(0.01), SCCE)
        cb = tbkit.keras.TensorBoardRun(str(tmp_path / name), validation_data=(x[:100], y[:100]),
                                        restore_best_weights=False, monitor="val_loss", **kw)  # fmt: skip
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, validation_data=(x[:100], y[:100]),
                  callbacks=[cb], verbose=0)  # fmt: skip
        acc = load_events(str(tmp_path / name / "train"))
        tags = set(acc.Tags()["tensors"])
        if name == "off":
            assert not {t for t in tags if "gradient" in t or "health" in t or "fraction" in t}
            continue
        assert "head/kernel/gradient_norm" in tags and "head/kernel/gradient" not in tags
        # The probe (for the activation fractions) is the first probe_size examples of
        # validation_data.
        hidden = keras.Model(model.input, model.get_layer("hidden").output)
        zero = {n: float(np.mean(hidden(x[:n], training=True).numpy() == 0)) for n in (10, 100)}
        assert zero[10] != zero[100]
        assert scalars(acc, "hidden/activations/zero_fraction")[2] == pytest.approx(zero[10])


def test_the_step_takes_activations_only_from_a_call_that_is_the_graph():
    """The recording step computes the activations in its own forward pass only when the
    model's call is its layers' graph; a functional subclass with its own `call` keeps
    its call, and its activations come from a probe pass of the recorded batch."""

    class Doubled(keras.Model):
        def call(self, x, training=False):
            return super().call(x, training=training) * 2.0

    inp = keras.Input((4,))
    out = keras.layers.Dense(3, activation="relu", name="d")(inp)
    plain, doubled = keras.Model(inp, out), Doubled(inp, out)
    assert tbkit.LayerRecorder(plain, activation_fractions=True).training_forward is not None
    recorder = tbkit.LayerRecorder(doubled, activation_fractions=True)
    assert recorder.training_forward is None
    x = tf.ones((2, 4))
    y, acts = tbkit.LayerRecorder(plain).training_forward(x)
    np.testing.assert_allclose(y.numpy(), plain(x).numpy())
    np.testing.assert_allclose(acts["d"].numpy(), plain(x).numpy())
