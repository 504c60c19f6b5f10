"""Name-scoped Keras layers whose variables are `weights` and `biases`.

They compute exactly what `keras.layers.Conv2D` / `Dense` compute and write no
summaries while training: `summarize()` records `<layer name>/weights/...`,
`<layer name>/biases/...` and `<layer name>/activations` when the caller
decides (see `tbkit.Model.summarize` and `tbkit.summarize_layers`), so a train
step that does not log pays nothing.

Example:

  model = keras.Sequential([
      keras.Input((28, 28, 1)),
      tbkit.layers.Conv2D(16, 5, activation="relu", name="layer_conv1"),
      tbkit.layers.MaxPool2D(2),
      tbkit.layers.Flatten(),
      tbkit.layers.Dense(10, name="layer_fc2"),
  ])
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tbkit.summary.summaries import histogram, variable_summaries

# Variable-free pieces need no summaries; they are Keras' own.
MaxPool2D = keras.layers.MaxPool2D
Flatten = keras.layers.Flatten


class SummarizedLayer(keras.layers.Layer):
    """Base of tbkit layers: owns `weights`/`biases` variables and `summarize()`."""

    def _add_params(self, kernel_shape, units, kernel_initializer, bias_initializer):
        self.kernel = self.add_weight(
            name="weights", shape=kernel_shape, initializer=kernel_initializer
        )
        self.bias = (
            self.add_weight(name="biases", shape=(units,), initializer=bias_initializer)
            if self.use_bias
            else None
        )

    @property
    def summary_variables(self) -> dict[str, tf.Variable]:
        """`{"weights": ..., "biases": ...}` (biases absent when `use_bias=False`)."""
        out = {"weights": self.kernel}
        if self.bias is not None:
            out["biases"] = self.bias
        return out

    def summarize(self, step=None, activations=None, histograms: bool = True):
        """Writes this layer's summaries to the default writer.

        Args:
          step: defaults to `tf.summary.experimental.get_step()`.
          activations: the layer's output on the logged batch; written as the
            histogram `<name>/activations` when given and `histograms` is True.
          histograms: write histograms (variable and activation) as well as scalars.

        Returns:
          A boolean tensor, True if the summaries were recorded.
        """
        recorded = []
        for var_name, var in self.summary_variables.items():
            recorded.append(
                variable_summaries(
                    var, name=f"{self.name}/{var_name}", step=step, histogram=histograms
                )
            )
        if activations is not None and histograms:
            # Absolute scope: in a graph the forward pass already used this
            # name, and a relative scope would be renamed `<name>_1`.
            outer = tf.get_current_name_scope()
            with tf.name_scope(f"{outer}/{self.name}/" if outer else f"{self.name}/"):
                recorded.append(histogram("activations", activations, step=step))
        return tf.reduce_all(tf.stack(recorded))


class Conv2D(SummarizedLayer):
    """2-D convolution with `weights` `(kh, kw, in, filters)` and `biases` `(filters,)`.

    Args:
      filters: number of output channels.
      kernel_size: int or pair.
      strides: int or pair (default 1).
      padding: `"same"` (default, as in the tutorial) or `"valid"`.
      activation: a Keras activation name or callable (default none).
      use_bias: default True.
      kernel_initializer, bias_initializer: Keras initializers
        (defaults `"glorot_uniform"`, `"zeros"`).
      name: the layer's name, which becomes its summary scope.
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=1,
        padding: str = "same",
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(filters) <= 0:
            raise ValueError(f"filters must be a positive integer. Received: filters={filters}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid'. Received: padding={padding!r}")
        self.filters = int(filters)
        pair = lambda v: (int(v), int(v)) if isinstance(v, int) else tuple(int(i) for i in v)  # noqa: E731
        self.kernel_size = pair(kernel_size)
        self.strides = pair(strides)
        self.padding = padding
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        self._add_params(
            self.kernel_size + (in_channels, self.filters),
            self.filters,
            self.kernel_initializer,
            self.bias_initializer,
        )

    def call(self, inputs):
        y = tf.nn.conv2d(inputs, self.kernel, strides=self.strides, padding=self.padding.upper())
        if self.bias is not None:
            y = tf.nn.bias_add(y, self.bias)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        out = []
        for size, k, s in zip((h, w), self.kernel_size, self.strides, strict=True):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append(-(-size // s))
            else:
                out.append(-(-(size - k + 1) // s))
        return (input_shape[0], out[0], out[1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
        )
        return config


class Dense(SummarizedLayer):
    """Fully connected layer with `weights` `(in, units)` and `biases` `(units,)`.

    Args:
      units: number of outputs.
      activation: a Keras activation name or callable (default none).
      use_bias: default True.
      kernel_initializer, bias_initializer: defaults `"glorot_uniform"`, `"zeros"`.
      name: the layer's name, which becomes its summary scope.
    """

    def __init__(
        self,
        units: int,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(units) <= 0:
            raise ValueError(f"units must be a positive integer. Received: units={units}")
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self._add_params(
            (int(input_shape[-1]), self.units),
            self.units,
            self.kernel_initializer,
            self.bias_initializer,
        )

    def call(self, inputs):
        y = tf.matmul(inputs, self.kernel)
        if self.bias is not None:
            y = tf.nn.bias_add(y, self.bias)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
        )
        return config
