"""The tutorial's CNN, as a `tbkit.Model` (part of the MNIST application)."""

from __future__ import annotations

from tbkit.model import layers as tl
from tbkit.model.model import Model


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
