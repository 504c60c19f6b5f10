"""FiniteCheck: the same answer with numpy on the host and with TensorFlow on a device
(eagerly for its first calls, compiled after)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tbkit.run.finite import EAGER_CALLS, FiniteCheck, on_host


def model_and_check(host):
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")]
    )
    check = FiniteCheck(model, names={id(model.get_layer("b").kernel): "b/kernel"}, host=host)
    return model, check


@pytest.mark.parametrize("host", [True, False], ids=["numpy", "tensorflow"])
def test_both_ways_find_the_same_variable(host):
    model, check = model_and_check(host)
    kernel = model.get_layer("b").kernel
    good = kernel.numpy()
    for call in range(1, EAGER_CALLS + 3):  # on a device: eager calls, then compiled ones
        assert check.first_nonfinite() is None
        bad = good.copy()
        bad[1, 0] = np.nan if call % 2 else np.inf
        kernel.assign(bad)
        assert check.first_nonfinite() == "b/kernel", call
        kernel.assign(good)
    # On the host nothing is traced; on a device the compiled check was used too.
    assert (check._calls > EAGER_CALLS + 1) != host


def test_huge_finite_weights_are_not_taken_for_an_overflow():
    """The host check sums each variable first: a sum that overflows to Inf is looked at
    element by element, not reported."""
    model, check = model_and_check(True)
    kernel = model.get_layer("a").kernel
    kernel.assign(np.full(kernel.shape, 3e38, "float32"))  # finite; the sum overflows
    assert check.first_nonfinite() is None
    huge = kernel.numpy()
    huge[0, 0] = -np.inf
    kernel.assign(huge)
    assert check.first_nonfinite().endswith("a/kernel")  # by its path: not named


def test_a_cpu_only_machine_checks_on_the_host():
    model, check = model_and_check(None)
    assert on_host(model.variables)
    model.get_layer("b").bias.assign([np.nan, 0.0])
    assert check.first_nonfinite().endswith("b/bias") and check._host


def test_each_checkpoint_is_checked_on_what_it_holds(tmp_path):
    """A best holds the model's variables: an Inf in an optimizer slot does not stop it
    (and it is finite on disk); the latest, which holds the slots, is refused, naming it."""
    import tensorflow as tf

    import tbkit
    from tbkit.run.runstate import RunState

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    slot = next(v for v in optimizer.variables if "kernel" in v.path)
    slot.assign(np.full(slot.shape, np.inf, "float32"))
    with RunState(tmp_path / "run", model=model, optimizer=optimizer, mode="max") as state:
        assert state.record(0.5, 1)
        reader = tf.train.load_checkpoint(state.best_path)
        for key in reader.get_variable_to_shape_map():
            value = reader.get_tensor(key)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                assert np.isfinite(value).all(), key
        with pytest.raises(tbkit.TrainingError, match=r"in optimizer/\S*kernel\S* at step 2"):
            state.save_latest(2)
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints" / "latest")) is None
