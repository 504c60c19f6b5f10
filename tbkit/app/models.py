"""The MNIST application's networks, chosen by name (`--model`).

A new network joins with one entry in `MODELS`: a `tbkit.Model` subclass whose
layers carry the summaries (`tbkit.model.layers`) and whose input is MNIST's
28x28x1 batch, outputting 10 logits.

- `cnn`: the tutorial's CNN (`tbkit.app.cnn.MnistCNN`), the default.
- `lenet`: LeNet-5 as the source notes train it: the input padded to 32x32, two 5x5
  valid convolutions (6 and 16 filters) each followed by 2x2 average pooling, then
  dense 120 -> 84 -> 10.
- `mlp`: TensorFlow's "mechanics 101" network: two hidden ReLU layers of 128 and
  32 units (`hidden1`, `hidden2`) and a linear output (`softmax_linear`).
"""

from __future__ import annotations

import keras

from tbkit.app.cnn import MnistCNN
from tbkit.model import layers as tl
from tbkit.model.model import Model


class LeNet(Model):
    """LeNet-5: pad to 32x32 -> conv 5x5x6 -> avg pool -> conv 5x5x16 -> avg pool ->
    fc 120 -> fc 84 -> fc 10 (logits)."""

    def __init__(self, num_classes: int = 10, name: str | None = None, logging: bool = True):
        super().__init__(
            [
                keras.layers.ZeroPadding2D(2, name="pad"),
                tl.Conv2D(6, 5, padding="valid", activation="relu", name="layer_conv1"),
                keras.layers.AveragePooling2D(2, name="pool1"),
                tl.Conv2D(16, 5, padding="valid", activation="relu", name="layer_conv2"),
                keras.layers.AveragePooling2D(2, name="pool2"),
                tl.Flatten(name="flatten"),
                tl.Dense(120, activation="relu", name="layer_fc1"),
                tl.Dense(84, activation="relu", name="layer_fc2"),
                tl.Dense(num_classes, name="layer_fc3"),
            ],
            name=name,
            logging=logging,
        )


class MLP(Model):
    """ "Mechanics 101": flatten -> hidden1 (128, ReLU) -> hidden2 (32, ReLU) ->
    softmax_linear (10 logits)."""

    def __init__(self, num_classes: int = 10, name: str | None = None, logging: bool = True):
        super().__init__(
            [
                tl.Flatten(name="flatten"),
                tl.Dense(128, activation="relu", name="hidden1"),
                tl.Dense(32, activation="relu", name="hidden2"),
                tl.Dense(num_classes, name="softmax_linear"),
            ],
            name=name,
            logging=logging,
        )


#: name -> the class; `--model NAME` builds `MODELS[NAME](logging=...)`.
MODELS: dict[str, type[Model]] = {"cnn": MnistCNN, "lenet": LeNet, "mlp": MLP}


def make_model(name: str, logging: bool = True) -> Model:
    """The named network, built on an MNIST batch shape (so its variables exist)."""
    import tensorflow as tf

    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}. Received: model={name!r}")
    model = MODELS[name](logging=logging)
    model(tf.zeros((1, 28, 28, 1)))
    return model
