"""FiniteCheck: the same answer eagerly (its first calls) and compiled (after)."""

from __future__ import annotations

import keras
import numpy as np

from tbkit.run.finite import EAGER_CALLS, FiniteCheck


def test_eager_and_compiled_checks_find_the_same_variable():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")]
    )
    check = FiniteCheck(model, names={id(model.get_layer("b").kernel): "b/kernel"})
    kernel = model.get_layer("b").kernel
    good = kernel.numpy()
    for call in range(1, EAGER_CALLS + 3):  # eager calls, then compiled ones
        assert check.first_nonfinite() is None
        bad = good.copy()
        bad[1, 0] = np.nan if call % 2 else np.inf
        kernel.assign(bad)
        assert check.first_nonfinite() == "b/kernel", call
        kernel.assign(good)
    assert check._calls > EAGER_CALLS + 1  # the compiled check was used too
