"""A small sequential `Model` base with summaries at a cadence, and the MNIST CNN.

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

from tbkit import layers as tl
from tbkit.errors import CheckpointError

_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def summarized_layers(model) -> list[tl.SummarizedLayer]:
    """The tbkit layers inside a Keras model (nested models included), in order."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, tl.SummarizedLayer):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(summarized_layers(layer))
    return found


def summarize_layers(model, step=None, inputs=None, histograms: bool = True):
    """Writes the summaries of every tbkit layer of a built Keras model.

    Works for `keras.Sequential`, functional models and `tbkit.Model`. With
    `inputs`, also writes each layer's activations on that batch (one extra
    forward pass, only when this function is called).

    Args:
      model: a built Keras model containing tbkit layers.
      step: defaults to `tf.summary.experimental.get_step()`.
      inputs: a batch to compute `<layer>/activations` on (optional).
      histograms: write histograms as well as scalars.

    Returns:
      A boolean tensor, True if the summaries were recorded.
    """
    if isinstance(model, Model):
        return model.summarize(step=step, x=inputs)
    layers = summarized_layers(model)
    if not layers:
        raise ValueError(f"{model.name} has no tbkit layers to summarize")
    activations = {}
    if inputs is not None and histograms:
        probe = _PROBES.get(model)
        if probe is None:
            ins = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            probe = keras.Model(ins, [layer.output for layer in layers])
            # Kept outside the model so Keras does not track it as a sub-layer.
            _PROBES[model] = probe
        outputs = probe(inputs, training=False)
        activations = dict(zip([la.name for la in layers], outputs, strict=True))
    results = [
        layer.summarize(step, activations.get(layer.name), histograms=histograms)
        for layer in layers
    ]
    return tf.reduce_all(tf.stack(results))


class Model(keras.Model):
    """A sequential stack of layers with summaries and checkpoint helpers.

    Subclasses pass their layers to `__init__`. Layers are stored as attributes
    named after themselves, so checkpoint keys read `model/layer_fc1/kernel`.

    Args:
      layers: the layers, in order.
      name: default: the class name in lowercase.
      logging: when False, `summarize` writes scalars only (no histograms).
    """

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
        self._summary_fn = None

    @property
    def layers(self):
        return [getattr(self, n) for n in self._order]

    @property
    def activations(self) -> dict[str, tf.Tensor]:
        """Outputs of each summarised layer in the last eager call (or `summarize`)."""
        return dict(self._activations)

    @property
    def vars(self) -> dict[str, tf.Variable]:
        """`{"layer_conv1/weights": variable, ...}` for every summarised layer."""
        return {
            f"{layer.name}/{k}": v
            for layer in summarized_layers(self)
            for k, v in layer.summary_variables.items()
        }

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
          A boolean tensor, True if the summaries were recorded.
        """
        if step is None:
            step = tf.summary.experimental.get_step()
        if step is None:
            raise ValueError("summarize needs a step (or tf.summary.experimental.set_step)")
        if self._summary_fn is None:
            self._summary_fn = {
                True: tf.function(
                    self._summaries_with_batch, reduce_retracing=True, autograph=False
                ),
                False: tf.function(self._summaries, reduce_retracing=True, autograph=False),
            }
        step = tf.convert_to_tensor(step, tf.int64)
        # `logging` is a Python bool: each value gets its own trace, no tf.cond
        # (whose "cond/" scope would leak into the tags).
        if x is None:
            return self._summary_fn[False](step, histograms=bool(self.logging))
        return self._summary_fn[True](step, x, histograms=bool(self.logging))

    def _summaries(self, step, histograms, acts=None):
        acts = acts or {}
        out = [
            layer.summarize(step, acts.get(layer.name), histograms=histograms)
            for layer in summarized_layers(self)
        ]
        return tf.reduce_all(tf.stack(out))

    def _summaries_with_batch(self, step, x, histograms):
        _, acts = self.forward(x)
        return self._summaries(step, histograms, acts)

    def checkpoint_shapes(self) -> dict[str, tuple]:
        """`{checkpoint key: shape}` of this model's variables under the prefix `model/`."""
        shapes = {}
        for layer in summarized_layers(self):
            for attr in ("kernel", "bias"):
                var = getattr(layer, attr, None)
                if var is not None:
                    key = f"model/{layer.name}/{attr}/.ATTRIBUTES/VARIABLE_VALUE"
                    shapes[key] = tuple(var.shape)
        return shapes

    def check_checkpoint(self, path: str) -> None:
        """Raises `CheckpointError` unless `path` holds this architecture's variables."""
        try:
            stored = dict(tf.train.list_variables(path))
        except (tf.errors.OpError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable checkpoint ({_first_line(e)})") from None
        for key, shape in self.checkpoint_shapes().items():
            short = key.split("/.ATTRIBUTES")[0][len("model/") :]
            short = short.replace("/kernel", "/weights").replace("/bias", "/biases")
            if key not in stored:
                raise CheckpointError(
                    f"{path}: checkpoint belongs to a different architecture: it has no "
                    f"variable {short} (the model's has shape {list(shape)})"
                )
            if tuple(stored[key]) != shape:
                raise CheckpointError(
                    f"{path}: checkpoint belongs to a different architecture: {short} has "
                    f"shape {list(stored[key])} in the checkpoint, {list(shape)} in the model"
                )

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


def _first_line(e: Exception) -> str:
    text = getattr(e, "message", None) or str(e)
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


class MnistCNN(Model):
    """The tutorial's CNN: conv 5x5x16 -> pool -> conv 5x5x36 -> pool -> fc 128 -> fc 10.

    Outputs logits. Layers are named `layer_conv1`, `layer_conv2`, `layer_fc1`, `layer_fc2`.
    """

    def __init__(self, num_classes: int = 10, name: str | None = None, logging: bool = True):
        super().__init__(
            [
                tl.Conv2D(16, 5, activation="relu", name="layer_conv1"),
                tl.MaxPool2D(2, name="pool1"),
                tl.Conv2D(36, 5, activation="relu", name="layer_conv2"),
                tl.MaxPool2D(2, name="pool2"),
                tl.Flatten(name="flatten"),
                tl.Dense(128, activation="relu", name="layer_fc1"),
                tl.Dense(num_classes, name="layer_fc2"),
            ],
            name=name,
            logging=logging,
        )
