"""`tbkit.Trainer` semantics on small synthetic data: monitor, patience, divergence, arguments."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tbkit
from conftest import load_events, scalars

rng = np.random.default_rng(1)
X = rng.random((64, 4), dtype=np.float32)
LABELS = (X.sum(1) > 2).astype("int32")
TARGETS = X.sum(1, keepdims=True).astype("float32")


def model(outputs: int = 2, seed: int = 0):
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(outputs)])  # fmt: skip
    return m


def ds(y):
    return tf.data.Dataset.from_tensor_slices((X, y)).batch(16)


def trainer(m, loss, run, **kw):
    kw = {"eval_every": 2, "summary_every": 2, "checkpoint_every": 2, "progress": False,
          "log": lambda _: None, **kw}  # fmt: skip
    return tbkit.Trainer(m, keras.optimizers.Adam(1e-2), loss, run, **kw)


def test_regression_monitors_the_validation_loss(tmp_path):
    t = trainer(model(1), keras.losses.MeanSquaredError(), tmp_path / "run", patience=None)
    result = t.fit(ds(TARGETS), ds(TARGETS), steps=8)
    assert result.monitor == "loss"
    val = load_events(str(tmp_path / "run" / "validation"))
    losses = scalars(val, "loss")
    assert result.best_value == pytest.approx(min(losses.values()), rel=1e-6)  # float32 summary
    assert result.best_step == min(losses, key=losses.get)
    assert "accuracy" not in val.Tags()["tensors"] and "best_loss" in val.Tags()["tensors"]
    ev = t.evaluate(ds(TARGETS))
    assert ev.accuracy is None and ev.step == result.best_step
    assert ev.loss == pytest.approx(result.best_value, rel=1e-5)  # the restored best, same data


def test_patience_counts_steps_since_the_last_improvement(tmp_path):
    # A margin no change can beat: only the first validation (step 2) is an improvement.
    t = trainer(model(), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                tmp_path / "run", patience=4, min_delta=10.0)  # fmt: skip
    result = t.fit(ds(LABELS), ds(LABELS), steps=100)
    assert (result.early_stopped, result.steps, result.best_step) == (True, 6, 2)
    # Finished: a new Trainer on the same run trains nothing, and says so.
    lines = []
    again = trainer(model(seed=3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    tmp_path / "run", patience=4, min_delta=10.0, log=lines.append)  # fmt: skip
    second = again.fit(ds(LABELS), ds(LABELS), steps=100)
    assert second.steps == 6 and lines == ["Run run already finished at step 6"]


def test_a_diverging_loss_names_the_steps_and_keeps_finite_checkpoints(tmp_path):
    step = tf.Variable(0)

    def poisoned(y_true, y_pred):  # finite for 4 steps, then NaN
        step.assign_add(1)
        per = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        return per * tf.where(step > 4, np.nan, 1.0)

    m = model()
    t = trainer(m, poisoned, tmp_path / "run", eval_every=4, checkpoint_every=2, patience=None)
    with pytest.raises(tbkit.TrainingError) as info:
        t.fit(ds(LABELS), None, steps=20)
    # The first layer in order (Keras numbers the name by how many Dense layers came before).
    assert re.match(
        r"the training loss became nan at step 5 \(first non-finite gradient: dense(_\d+)?/kernel;",
        str(info.value),
    )
    assert str(info.value).endswith("Best checkpoint kept: step 4")
    latest = sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "latest").glob("*.index"))
    assert latest == ["latest-2.index", "latest-4.index"]
    fresh = model(seed=5)
    path = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints" / "best"))
    tf.train.Checkpoint(model=fresh).restore(path).expect_partial()
    assert all(np.isfinite(v.numpy()).all() for v in fresh.weights)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eval_every": 0}, "eval_every must be a positive integer. Received: eval_every=0"),
        ({"patience": -1}, "patience must be a positive integer. Received: patience=-1"),
        ({"monitor": "f1"}, "monitor must be one of auto, accuracy, loss. Received: monitor='f1'"),
    ],
)
def test_bad_arguments_fail_fast(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as info:
        trainer(model(), keras.losses.MeanSquaredError(), tmp_path / "run", **kwargs)
    assert str(info.value) == message


def test_accuracy_needs_class_labels(tmp_path):
    t = trainer(model(1), keras.losses.MeanSquaredError(), tmp_path / "run", monitor="accuracy")
    with pytest.raises(ValueError, match="monitor='accuracy' needs integer class labels"):
        t.fit(ds(TARGETS), ds(TARGETS), steps=2)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_class_names_size_and_label_the_confusion_matrix(tmp_path):
    from conftest import decode_image_events

    def run(name, **kw):
        t = trainer(model(), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    tmp_path / name, patience=None, image_every=1, **kw)  # fmt: skip
        t.fit(ds(LABELS), ds(LABELS), steps=2)
        [(_, image)] = decode_image_events(load_events(str(tmp_path / name / "validation")),
                                           "confusion_matrix")  # fmt: skip
        return t.evaluate(ds(LABELS)), image

    plain, plain_image = run("plain")
    named, named_image = run("named", class_names=["low", "high", "never"])
    assert plain.confusion_matrix.shape == (2, 2)  # the model's two outputs
    assert named.confusion_matrix.shape == (3, 3)  # as many classes as names
    assert plain_image.shape != named_image.shape or (plain_image != named_image).any()


def test_the_recording_step_is_traced_before_the_first_recorded_step(tmp_path):
    """Start-up off the critical path: the recording variant is traced in a thread while
    the first plain steps run, once, and the recorded steps use that trace."""
    import time

    counts = {}

    class Watch(tbkit.Hook):
        def on_step_end(self, run, step):
            if step == 4:  # the last plain step before the first recording (step 5)
                recording = t._train_step._recording
                deadline = time.monotonic() + 60
                while recording.experimental_get_tracing_count() == 0:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                counts[step] = recording.experimental_get_tracing_count()

    t = trainer(model(), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                tmp_path / "run", summary_every=5, eval_every=5, hooks=[Watch()])  # fmt: skip
    t.fit(ds(LABELS), ds(LABELS), steps=10)
    assert counts == {4: 1}  # traced with no recorded step yet
    assert t._train_step._recording.experimental_get_tracing_count() == 1  # and only then
    train = load_events(str(tmp_path / "run" / "train"))
    assert sorted(scalars(train, "gradient_global_norm")) == [5, 10]
