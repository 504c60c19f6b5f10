"""The weights' own guarantee: no checkpoint ever holds a NaN or an Inf.

A non-finite weight does not always reach the loss: a layer may mask it
(`tf.where(tf.math.is_nan(x), 0., x)`), and some CPU kernels do so on their own
(oneDNN's fused MatMul+ReLU turns NaN into 0 on AVX-512 machines). A guard on
the loss alone then lets training go on and saves the NaN. `FiniteCheck`
looks at the values themselves: every floating-point variable of the model
and its optimizer, in one compiled call (one reduction per variable, one host
read), run before each checkpoint and never on the train step's path.
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
            self._variables = variables
            self._fn = tf.function(
                lambda: tf.stack(
                    [tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))) for v in variables]
                ),
                autograph=False,
            )
        if not self._variables:
            return None
        finite = self._fn().numpy()
        if finite.all():
            return None
        return self.name_of(self._variables[int((~finite).argmax())])
