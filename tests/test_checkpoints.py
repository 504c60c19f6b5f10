"""The best-or-not decision, early stopping on made-up sequences, best keeping on disk."""

from __future__ import annotations

import math

import pytest
import tensorflow as tf

import tbkit


@pytest.mark.parametrize(
    "value, best, mode, delta, expected",
    [
        (0.9, None, "max", 0.0, True),
        (0.9, 0.8, "max", 0.0, True),
        (0.8, 0.8, "max", 0.0, False),
        (0.85, 0.8, "max", 0.1, False),
        (0.1, 0.2, "min", 0.0, True),
        (0.3, 0.2, "min", 0.0, False),
        (math.nan, 0.2, "max", 0.0, False),
        (math.inf, None, "max", 0.0, False),
    ],
)
def test_is_improvement(value, best, mode, delta, expected):
    assert tbkit.is_improvement(value, best, mode, delta) is expected


def test_is_improvement_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode must be"):
        tbkit.is_improvement(1, 0, mode="up")
    with pytest.raises(ValueError, match="Received: min_delta=-1"):
        tbkit.is_improvement(1, 0, min_delta=-1)


def test_early_stopping_on_a_made_up_sequence():
    stopper = tbkit.EarlyStopping(patience=300)
    sequence = {
        100: 0.90,
        200: 0.95,
        300: 0.94,
        400: 0.95,
        500: 0.96,
        600: 0.95,
        700: 0.95,
        800: 0.959,
    }
    stars, stop = [], None
    for step, value in sequence.items():
        if stopper.update(value, step):
            stars.append(step)
        if stopper.should_stop(step):
            stop = step
            break
    assert stars == [100, 200, 500]
    assert stop == 800 and stopper.best == 0.96 and int(stopper.best_step.numpy()) == 500


def test_early_stopping_state_survives_a_checkpoint(tmp_path):
    a = tbkit.EarlyStopping(patience=10)
    a.update(0.5, 40)
    path = tf.train.Checkpoint(es=a).save(str(tmp_path / "s"))
    b = tbkit.EarlyStopping(patience=10)
    tf.train.Checkpoint(es=b).restore(path).assert_consumed()
    assert b.best == 0.5 and not b.should_stop(49) and b.should_stop(50)
    with pytest.raises(ValueError, match="Received: patience=0"):
        tbkit.EarlyStopping(patience=0)


def test_best_checkpoint_saves_only_improvements_and_never_regresses(tmp_path):
    var = tf.Variable(0.0)
    keeper = tbkit.BestCheckpoint(str(tmp_path / "best"), v=var)
    saved = []
    for step, (value, weight) in enumerate(
        [(0.5, 1.0), (0.4, 2.0), (0.7, 3.0), (0.7, 4.0)], start=1
    ):
        var.assign(weight)
        if keeper.update(value, step):
            saved.append(step)
    assert saved == [1, 3]
    assert keeper.best == 0.7 and keeper.best_path.endswith("best-3")
    # A fresh keeper (a restarted process) knows the best and refuses a worse one.
    var.assign(9.0)
    again = tbkit.BestCheckpoint(str(tmp_path / "best"), v=var)
    assert again.best == 0.7 and not again.update(0.6, 10)
    again.restore()
    assert float(var.numpy()) == 3.0
    # An ordinary tf.train.Checkpoint restores the saved object as well.
    other = tf.Variable(0.0)
    tf.train.Checkpoint(v=other).restore(again.best_path).expect_partial()
    assert float(other.numpy()) == 3.0


def test_a_best_of_a_compiled_model_holds_its_weights_and_an_older_one_with_the_optimizer_restores(
    tmp_path,
):
    """`compile` attaches the optimizer to the model; a best checkpoint leaves it out, so
    restoring the best rewinds neither its step nor its moments. A best written by an
    earlier tbkit (with the optimizer inside) still restores the weights, alone too."""
    import keras
    import numpy as np

    from tbkit.run.checkpoints import BestCheckpoint

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
    model.compile(keras.optimizers.Adam(0.1), "mse")
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 2 steps: the optimizer is built
    best_weights = model.get_weights()
    new, old = tmp_path / "new", tmp_path / "old"
    with tbkit.RunState(str(new), model=model, optimizer=model.optimizer, log=lambda _: None) as s:
        assert s.record(0.5, 2)
        keys = [k for k, _ in tf.train.list_variables(s.best_path)]
    assert not any("optimizer" in k for k in keys) and any(k.startswith("model/") for k in keys)
    # As tbkit wrote it before: the model as tf.train.Checkpoint(model=...) sees it.
    BestCheckpoint(str(old / "checkpoints" / "best"), model=model).update(0.5, 2)
    assert any(
        "optimizer" in k for k, _ in tf.train.list_variables(str(old / "checkpoints" / "best"))
    )

    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 2 more steps
    moments = [v.numpy() for v in model.optimizer.variables]
    for run in (new, old):
        with tbkit.RunState(str(run), model=model, optimizer=model.optimizer,
                            log=lambda _: None) as state:  # fmt: skip
            assert state.best_step == 2
            state.restore_best()
        for got, want in zip(model.get_weights(), best_weights, strict=True):
            np.testing.assert_array_equal(got, want)
        assert int(model.optimizer.iterations.numpy()) == 4  # not rewound to 2
        for got, want in zip(model.optimizer.variables, moments, strict=True):
            np.testing.assert_array_equal(got.numpy(), want)
