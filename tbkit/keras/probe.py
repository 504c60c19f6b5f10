"""The callback's view of the training dynamics of `fit`'s recorded batches.

The gradients are `fit`'s own, copied inside its compiled step by the optimizer's
`tbkit.keras.tap.GradientTap`, armed for the recorded batch. The probe batch `(x, y)`
gives the activation fractions (one training-mode forward pass: the layer
recorder's, which returns the activations it records), and the gradients too
where the tap has none (under a `tf.distribute` strategy, or a train function
traced before the optimizer had a tap): a forward and backward pass on it. Every
non-trainable variable (BatchNorm statistics, dropout seeds) and metric is put
back afterwards, so probing changes nothing. The update ratio comes from the
weights copied at the recorded batch's start and read at its end. What it
measures is a `tbkit.model.measure.StepDynamics`, built by the same `measure` as
the Trainer's recording step.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tbkit.model.measure import StepDynamics, dense_gradients, measure


def probe_batch(probe, data, size: int):
    """The probe: `probe=(x, y)` as given, else the first `size` examples of the
    validation data (a `tbkit.hooks.ValidationData`), as tensors; None when neither."""
    if probe is None and data is not None:
        probe = data.first(size)
    if probe is None:
        return None
    x, y = probe
    to_tensor = lambda a: tf.nest.map_structure(tf.convert_to_tensor, a)  # noqa: E731
    return to_tensor(x), to_tensor(y)


class Probe:
    """Measures the dynamics of `fit`'s recorded batches.

    Args:
      model: the compiled Keras model `fit` trains.
      batch: the probe `(x, y)`, or None (then no activation fractions, and no
        gradients where the tap has none).
      compiled: trace the probe's functions (a batch cadence: many calls) or run
        them eagerly (once an epoch: tracing would cost more than it saves).
      recorder: the `LayerRecorder` whose activations the forward pass returns.
      tap: the optimizer's `GradientTap` (None: the gradients come from the probe).
    """

    def __init__(self, model, batch, compiled: bool, recorder=None, tap=None):
        self.model, self.batch, self.compiled = model, batch, compiled
        self.tap = tap
        # The recorder's forward pass also returns the activations it records: the
        # probe's one training-mode pass gives the activations (and, without the
        # tap's copies, the gradients).
        self.recorder = recorder
        self._fns = None
        self._before = None
        self._armed = False
        self.missed = False  # the last recorded batch was armed but its step copied nothing

    def _make(self):
        model = self.model
        variables = list(model.trainable_variables)
        restore = [v for v in model.non_trainable_variables + model.metrics_variables]
        compile_ = (
            (lambda f: tf.function(f, reduce_retracing=True)) if self.compiled else (lambda f: f)
        )

        recorder = self.recorder
        forward = getattr(recorder, "training_forward", None)

        def putting_back(fn):
            # A training-mode pass moves BatchNorm statistics, seeds and metrics: undo it.
            def run(*args):
                saved = [tf.identity(v.value) for v in restore]
                out = fn(*args)
                for v, value in zip(restore, saved, strict=True):
                    v.assign(value)
                return out

            return run

        @compile_
        @putting_back
        def gradients(x, y):
            with tf.GradientTape() as tape:
                if forward is not None:
                    y_pred, acts = forward(x)
                else:
                    y_pred, acts = model(x, training=True), None
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            grads = tape.gradient(loss, variables)
            reduced = recorder.reduce_activations(acts) if acts is not None else {}
            return dense_gradients(grads, variables), reduced

        @compile_
        @putting_back
        def activations(x):
            # The tap has the gradients: a forward pass alone, for what it probes.
            return recorder.reduce_activations(forward(x)[1])

        @compile_
        def snapshot():
            return [tf.identity(v.value) for v in variables]

        @compile_
        def measured(grads, before, rate, seen):
            return measure(grads, before, variables, rate, seen_update=seen)

        return gradients, activations if forward is not None else None, snapshot, measured

    def _fns_(self):
        if self._fns is None:
            self._fns = self._make()
        return self._fns

    def _rate(self) -> float:
        optimizer = self.model.optimizer
        return float(np.asarray(optimizer.learning_rate)) if optimizer is not None else 0.0

    def before_batch(self) -> None:
        """Copies the weights (and the learning rate) at the start of a recorded batch
        and arms the tap for its gradients."""
        self._before = (self._fns_()[2](), self._rate())
        if self.tap is not None:
            self.tap.arm()
            self._armed = True

    def measure(self) -> StepDynamics | None:
        """The dynamics of the batch just trained: its own gradients (the tap's, else
        the probe's) and update ratio; None when neither has gradients."""
        gradients, activations, snapshot, measured = self._fns_()
        seen = self._before is not None  # else no snapshot of this batch: no update ratio
        before, rate = self._before if seen else (snapshot(), self._rate())
        self._before = None
        taken = self.tap.take() if self.tap is not None else None
        self.missed, self._armed = self._armed and taken is None, False
        if taken is not None:
            grads, missing = taken
            acts = activations(self.batch[0]) if self.batch is not None and activations else {}
        elif self.batch is not None:
            (grads, missing), acts = gradients(*self.batch)
            missing = frozenset(int(i) for i in np.asarray(missing).reshape(-1))
        else:
            return None
        dyn = measured(grads, before, tf.constant(rate, tf.float32), seen)
        return dyn._replace(no_gradient=frozenset(missing), activations=acts or None)
