"""A small sequential `Model` base with summaries at a cadence and checkpoint helpers.

`Model` is a `keras.Model`: it trains in a custom `tf.function` loop and under
`model.fit`. On top it offers what the tutorial's design had: a default name
(the class name in lowercase), a `logging` switch for histogram summaries, the
ordered `layers`, the `activations` of the last eager forward pass, `vars`
(name -> variable), `summarize(step, x)`, and `save`/`load` through
`tf.train.Checkpoint` with a clear error for a different architecture.
"""

from __future__ import annotations

import weakref

import keras
import tensorflow as tf

from tbkit.model import layers as tl
from tbkit.model.recorder import LayerRecorder, variable_tags
from tbkit.run.checkpoints import check_architecture

_RECORDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def summarize_layers(model, step=None, inputs=None, histograms: bool = True):
    """Writes the summaries of every variable of a built Keras model.

    Works for any model (Sequential, functional, subclassed, `tbkit.Model`);
    tags follow the recorder's rule (`<layer>/<variable>/...`). With `inputs`,
    also writes each layer's activations on that batch (one extra forward pass,
    only when this function is called; not for subclassed models).

    Args:
      model: a built Keras model.
      step: defaults to `tf.summary.experimental.get_step()`.
      inputs: a batch to compute `<layer>/activations` on (optional).
      histograms: write histograms as well as scalars.

    Returns:
      True if the summaries were recorded.
    """
    if isinstance(model, Model):
        return model.summarize(step=step, x=inputs)
    recorders = _RECORDERS.setdefault(model, {})
    recorder = recorders.get(histograms)
    if recorder is None:
        recorder = recorders[histograms] = LayerRecorder(model, histograms=histograms, images=False)
    return recorder.record(step, inputs)


class Model(keras.Model):
    """A sequential stack of layers with summaries and checkpoint helpers.

    Subclasses pass their layers to `__init__`. Layers are stored as attributes
    named after themselves, so checkpoint keys read `model/layer_fc1/kernel`.

    Args:
      layers: the layers, in order.
      name: default: the class name in lowercase.
      logging: when False, `summarize` writes scalars only (no histograms).
    """

    # Read by the recorder and the projector (which must not import this module):
    # `forward` returns every layer's activation in one pass.
    tbkit_forward = True

    def __init__(self, layers=(), name: str | None = None, logging: bool = True, **kwargs):
        super().__init__(name=name or type(self).__name__.lower(), **kwargs)
        self.logging = logging
        self._order = []
        for layer in layers:
            if hasattr(self, layer.name):
                raise ValueError(f"duplicate or reserved layer name: {layer.name!r}")
            setattr(self, layer.name, layer)
            self._order.append(layer.name)
        self._activations = {}
        self._recorder = None

    @property
    def layers(self):
        return [getattr(self, n) for n in self._order]

    @property
    def activations(self) -> dict[str, tf.Tensor]:
        """Outputs of each summarised layer in the last eager call (or `summarize`)."""
        return dict(self._activations)

    @property
    def vars(self) -> dict[str, tf.Variable]:
        """`{"layer_conv1/weights": variable, ...}`: every variable by its summary tag."""
        return variable_tags(self)

    def forward(self, x, training=False):
        """Returns `(outputs, {layer name: activation})` for the summarised layers."""
        acts = {}
        for layer in self.layers:
            x = layer(x, training=training)
            if isinstance(layer, tl.SummarizedLayer):
                acts[layer.name] = x
        return x, acts

    def call(self, x, training=False):
        y, acts = self.forward(x, training=training)
        if tf.executing_eagerly():
            self._activations = acts
        return y

    def summarize(self, step=None, x=None):
        """Writes every layer's variable summaries (and activations on batch `x`).

        Compiled once and called only when the caller wants to log, so the
        train step itself carries no summary ops. Histograms are skipped when
        `self.logging` is False.

        Returns:
          True if the summaries were recorded.
        """
        if self._recorder is None or self._recorder.histograms != bool(self.logging):
            self._recorder = LayerRecorder(self, histograms=bool(self.logging), images=False)
        return self._recorder.record(step, x)

    def check_checkpoint(self, path: str) -> None:
        """Raises `ArchitectureError` unless `path` (written by `save`) fits this model."""
        names = {id(v): tag for tag, v in variable_tags(self).items()}
        check_architecture(str(path), tf.train.Checkpoint(model=self), names)

    def save(self, path, *args, **kwargs):
        """Writes the variables to `path` with `tf.train.Checkpoint`; returns the prefix.

        Paths ending in `.keras` or `.h5` keep Keras' own `Model.save` behaviour.
        """
        if str(path).endswith((".keras", ".h5")):
            return super().save(path, *args, **kwargs)
        return tf.train.Checkpoint(model=self).write(str(path))

    def load(self, path) -> None:
        """Restores variables written by `save`, checking the architecture first.

        Raises:
          CheckpointError: unreadable, or a different architecture (naming the
            first mismatching variable and both shapes).
        """
        self.check_checkpoint(str(path))
        tf.train.Checkpoint(model=self).read(str(path)).assert_existing_objects_matched()
