"""The run protocol: both doors emit the same events to the same hooks, user hooks included."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tbkit
import tbkit.keras as tbk
from conftest import FIXTURE, load_events, scalars
from tbkit.datasets import mnist
from tbkit.hooks import Hook, Hooks, Validated, ValidationData

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def digits():
    data = mnist.load(FIXTURE, validation_size=200, download=False, log=lambda _: None)
    x = data.train_images[:256, ..., None].astype("float32") / 255.0
    return x, data.train_labels[:256].astype("int32")


def model(seed=0):
    keras.utils.set_random_seed(seed)
    m = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, activation="relu", name="conv"),
         keras.layers.AveragePooling2D(4), keras.layers.Flatten(),
         keras.layers.Dense(10, name="head")]
    )  # fmt: skip
    return m


class Journal(Hook):
    """Writes down every event it sees (what a user's reporting hook would forward)."""

    def __init__(self):
        self.events = []

    def on_begin(self, run):
        self.events.append(("begin", run.unit, run.classifier))

    def on_record(self, run, event):
        self.events.append(("record", event.step, event.dynamics is not None))

    def on_validation(self, run, event):
        c = event.classified
        self.events.append(("validation", event.count, event.improved, c is not None))

    def on_end(self, run, event):
        self.events.append(("end", event.count, event.best_step, event.failed))


class GiveUp(Hook):
    """Stops a run at its first validation (a user's own early stopping)."""

    def on_validation(self, run, event: Validated):
        run.request_stop("giving up")


def test_both_doors_emit_the_same_events_to_a_users_hook(tmp_path, digits):
    x, y = digits
    journal = Journal()
    trainer = tbkit.Trainer(model(), keras.optimizers.Adam(1e-3), SCCE, tmp_path / "t",
                            eval_every=4, summary_every=4, hooks=[journal], progress=False,
                            log=lambda _: None)  # fmt: skip
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    trainer.fit(ds, ds, steps=8)
    assert journal.events == [
        ("begin", "step", True),
        ("record", 4, True), ("validation", 4, True, True),
        ("record", 8, True), ("validation", 8, journal.events[4][2], True),
        ("end", 8, trainer.state.best_step, False),
    ]  # fmt: skip

    journal = Journal()
    m = model()
    m.compile(keras.optimizers.Adam(1e-3), SCCE, metrics=["accuracy"])
    cb = tbk.TensorBoardRun(str(tmp_path / "k"), validation_data=(x, y), hooks=[journal],
                            log=lambda _: None)  # fmt: skip
    m.fit(x, y, batch_size=64, epochs=2, validation_data=(x, y), verbose=0, callbacks=[cb])
    assert journal.events[0] == ("begin", "epoch", True)
    assert [e[0] for e in journal.events] == ["begin", "record", "validation", "record",
                                              "validation", "end"]  # fmt: skip
    assert journal.events[1] == ("record", 4, True) and journal.events[2][:2] == ("validation", 1)
    assert journal.events[-1][:2] == ("end", 2) and journal.events[-1][3] is False


class Steps(Hook):
    """Listens to the per-step events only (a user's step timer)."""

    def __init__(self):
        self.begun, self.ended = [], []

    def on_step_begin(self, run, step):
        self.begun.append(step)

    def on_step_end(self, run, step):
        self.ended.append(step)


def test_a_users_step_hook_sees_every_step_at_both_doors(tmp_path, digits):
    x, y = digits
    steps = Steps()
    trainer = tbkit.Trainer(model(), keras.optimizers.Adam(1e-3), SCCE, tmp_path / "t",
                            eval_every=4, hooks=[steps], progress=False, log=lambda _: None)  # fmt: skip
    trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(64), steps=8)
    assert steps.begun == steps.ended == list(range(1, 9))

    class Iterations(keras.callbacks.Callback):
        """optimizer.iterations at each batch end, as fit has it."""

        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(int(self.model.optimizer.iterations.numpy()))

    def fit(run: str, epochs: int, batch_size: int = 64, **compiled) -> tuple[Steps, list]:
        steps, real = Steps(), Iterations()
        m = model()
        m.compile(keras.optimizers.Adam(1e-3), SCCE, **compiled)
        cb = tbk.TensorBoardRun(str(tmp_path / run), hooks=[steps], log=lambda _: None)
        m.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[cb, real])
        return steps, real.seen

    # Under fit the steps are optimizer.iterations: 4 batches an epoch, counted on across
    # epochs and across a resumed fit.
    steps, seen = fit("k", epochs=2)
    assert steps.begun == steps.ended == seen == list(range(1, 9))
    steps, seen = fit("k", epochs=3)
    assert steps.begun == steps.ended == seen == list(range(9, 13))

    # steps_per_execution=3 over 8 batches an epoch: fit calls the hooks once an execution,
    # the last one of each epoch two steps long.
    steps, seen = fit("spe", epochs=2, batch_size=32, steps_per_execution=3)
    assert steps.ended == seen == [3, 6, 8, 11, 14, 16]
    assert steps.begun == [1, 4, 7, 9, 12, 15]


def test_a_users_hook_stops_the_run_at_both_doors(tmp_path, digits):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    lines = []
    trainer = tbkit.Trainer(model(), keras.optimizers.Adam(1e-3), SCCE, tmp_path / "t",
                            eval_every=2, hooks=[GiveUp()], progress=False, log=lines.append)  # fmt: skip
    result = trainer.fit(ds, ds, steps=20)
    assert result.steps == 2 and "Stopping at step 2: giving up" in lines
    assert list(scalars(load_events(str(tmp_path / "t" / "validation")), "accuracy")) == [2]

    m = model()
    m.compile(keras.optimizers.Adam(1e-3), SCCE, metrics=["accuracy"])
    cb = tbk.TensorBoardRun(str(tmp_path / "k"), hooks=[GiveUp()], log=lambda _: None)
    history = m.fit(x, y, batch_size=64, epochs=5, validation_data=(x, y), verbose=0,
                    callbacks=[cb])  # fmt: skip
    assert len(history.history["loss"]) == 1


def test_hooks_must_be_hooks(tmp_path):
    with pytest.raises(TypeError, match="tbkit.Hook instances. Received: function"):
        Hooks([lambda run: None])
    m = model()
    with pytest.raises(TypeError, match="tbkit.Hook"):
        tbkit.Trainer(m, keras.optimizers.Adam(), SCCE, tmp_path, hooks=[print])


def test_validation_data_adapter_gives_the_same_examples_for_arrays_and_datasets(digits):
    x, y = digits
    arrays = ValidationData((x, y))
    batches = ValidationData(tf.data.Dataset.from_tensor_slices((x, y)).batch(50))
    wanted = [3, 77, 130, 255]
    np.testing.assert_array_equal(arrays.images_at(wanted), batches.images_at(wanted))
    assert arrays.integer_labels() and batches.integer_labels()
    (ax, ay), (bx, by) = arrays.first(5), batches.first(5)
    np.testing.assert_array_equal(ax.numpy(), bx.numpy())
    np.testing.assert_array_equal(ay.numpy(), by.numpy())
    flat = ValidationData((x.reshape(len(x), -1)[:, :7], y))  # not images
    assert flat.images_at([0]) is None
    assert not ValidationData("nonsense").usable
