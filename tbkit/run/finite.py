"""The weights' own guarantee: no checkpoint ever holds a NaN or an Inf.

A non-finite weight does not always reach the loss: a layer may mask it
(`tf.where(tf.math.is_nan(x), 0., x)`), and some CPU kernels do so on their own
(oneDNN's fused MatMul+ReLU turns NaN into 0 on AVX-512 machines). A guard on
the loss alone then lets training go on and saves the NaN. `FiniteCheck`
looks at the values themselves: every floating-point variable of the model
and its optimizer, in one call (one reduction per variable, one host read;
compiled from the third call on), run before each checkpoint and never on the
train step's path.
"""

from __future__ import annotations

import tensorflow as tf


def _floating(v) -> bool:
    return tf.as_dtype(getattr(v, "dtype", "int32")).is_floating


def _unique(variables) -> list:
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen and _floating(v):
            seen.add(id(v))
            out.append(v)
    return out


EAGER_CALLS = 2
"""Checks run eagerly before the check is traced (see `FiniteCheck.first_nonfinite`)."""


class FiniteCheck:
    """Finds the first variable holding a non-finite value, in a stable order.

    Args:
      model: the model whose variables are checked (all of them, trainable or not).
      optimizer: its optimizer, whose slots (moments, ...) are checked too (optional).
      names: `{id(variable): name}` giving the order and the names to report
        (tbkit passes the layer recorder's tags, i.e. layer order); variables
        not named come after, by their path.
    """

    def __init__(self, model, optimizer=None, names: dict[int, str] | None = None):
        self._model, self._optimizer = model, optimizer
        self._names = dict(names or {})
        self._variables: list | None = None
        self._fn = None
        self._calls = 0

    def _collect(self) -> list:
        # Collected on first use: an optimizer builds its slots lazily.
        found = list(getattr(self._model, "variables", []))
        if self._optimizer is not None:
            found += list(getattr(self._optimizer, "variables", []))
        found = _unique(found)
        order = {vid: i for i, vid in enumerate(self._names)}
        named = sorted((v for v in found if id(v) in order), key=lambda v: order[id(v)])
        others = [v for v in found if id(v) not in order]
        return named + others

    def name_of(self, v) -> str:
        name = self._names.get(id(v))
        if name is not None:
            return name
        path = getattr(v, "path", None) or getattr(v, "name", "variable")
        prefix = "optimizer/" if self._optimizer is not None and not self._in_model(v) else ""
        return prefix + str(path).split(":")[0]

    def _in_model(self, v) -> bool:
        return any(v is m for m in getattr(self._model, "variables", []))

    def first_nonfinite(self) -> str | None:
        """The name of the first variable holding a NaN or an Inf, or None when all are finite."""
        variables = self._collect()
        if self._variables is None or len(variables) != len(self._variables):
            self._variables, self._calls = variables, 0

            def check():
                return tf.stack(
                    [tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))) for v in variables]
                )

            self._eager, self._fn = check, tf.function(check, autograph=False)
        if not self._variables:
            return None
        # The first calls run eagerly (two small ops per variable: a few ms for a CNN,
        # ~0.1 s for ResNet-50's 960 variables and slots); tracing the check costs
        # 0.1-1 s, which a fit that checks once or twice (an epoch-cadence callback)
        # would pay for nothing. From the third call on, one compiled call.
        self._calls += 1
        check = self._fn if self._calls > EAGER_CALLS else self._eager
        finite = check().numpy()
        if finite.all():
            return None
        return self.name_of(self._variables[int((~finite).argmax())])
