"""Keras callbacks that record layer summaries (every variable, by the recorder's tag rule) during `model.fit`."""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from tbkit.model.model import summarize_layers


class LayerSummaries(keras.callbacks.Callback):
    """Writes the summaries of every variable of the model every `every_n_batches` batches.

    Summaries are recorded between batches, outside the compiled train step,
    so batches that do not log pay nothing.

    Args:
      logdir: the run directory; summaries go to `logdir/train`.
      every_n_batches: cadence in training batches (counted across epochs).
      inputs: an optional batch of inputs for the `<layer>/activations` histograms.
      histograms: record histograms as well as scalars (default True).
    """

    def __init__(
        self, logdir: str, every_n_batches: int = 100, inputs=None, histograms: bool = True
    ):
        super().__init__()
        if not isinstance(every_n_batches, int) or every_n_batches <= 0:
            raise ValueError(
                f"every_n_batches must be a positive integer. Received: every_n_batches={every_n_batches}"
            )
        self.logdir, self.every_n_batches = logdir, every_n_batches
        self.inputs, self.histograms = inputs, histograms
        self._writer = None
        self._step = 0

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(os.path.join(self.logdir, "train"))

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every_n_batches == 0:
            with self._writer.as_default(step=self._step):
                summarize_layers(self.model, self._step, self.inputs, self.histograms)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
