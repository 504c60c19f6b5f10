"""`tbkit.keras.TensorBoardRun`: the train_mnist.py picture for any `model.fit`.

One callback gives, for *any* Keras model (stock layers included):

- per-layer variable summaries (`<layer>/<variable>/mean|stddev|min|max|histogram`)
  at a batch cadence or once per epoch, recorded between batches, never inside
  the compiled train step;
- the epoch's `loss`/`accuracy`/... in `LOGDIR/train` and the `val_*` values,
  stripped of their prefix, in `LOGDIR/validation`, so each pair shares a chart;
- a filter grid for every conv layer (multi-channel kernels included);
- a confusion matrix and example errors on `validation_data` at each epoch end;
- best checkpoints (`tf.train.CheckpointManager`) in `LOGDIR/checkpoints/best`
  on each improvement of `monitor`, early stopping whose state is saved with
  the checkpoints in `LOGDIR/checkpoints/latest`, resume of an interrupted
  `fit` (like Keras' `BackupAndRestore`), and restore-best at the end.

Under `tf.distribute`, only the chief writes summaries and keeps checkpoints;
the other workers write to a temporary directory that is removed.

The x axis of every summary is the global training step (`optimizer.iterations`).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tbkit import images as tbi
from tbkit.checkpoints import BestCheckpoint, EarlyStopping
from tbkit.distribute import is_chief
from tbkit.summaries import variable_summaries
from tbkit.writers import RunWriters


def leaf_layers(model) -> list:
    """Layers that own variables directly (nested models are walked), in order."""
    out = []
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None):
            out.extend(leaf_layers(layer))
        else:
            out.append(layer)
    return out


def variable_tags(model) -> dict[str, tf.Variable]:
    """`{"<layer>/<variable>": variable}` for every weight of `model`, collision-free.

    A variable's name inside its layer (`kernel`, `bias`, `gamma`, ...) follows
    the layer's name; two layers of nested models with the same name get their
    model's name in front.
    """
    tags: dict[str, tf.Variable] = {}
    seen_names: dict[str, int] = {}
    for layer in leaf_layers(model):
        seen_names[layer.name] = seen_names.get(layer.name, 0) + 1
    for layer in leaf_layers(model):
        for var in layer.weights:
            base = var.name.split(":")[0].split("/")[-1]
            path = getattr(var, "path", "") or f"{layer.name}/{base}"
            tag = f"{layer.name}/{base}"
            if seen_names[layer.name] > 1 or tag in tags:
                tag = path.split(":")[0]
            while tag in tags:
                tag += "_"
            tags[tag] = var
    return tags


def conv_kernels(model) -> dict[str, tf.Variable]:
    """`{layer name: kernel}` of the 2-D convolutions (4-D kernels) in `model`."""
    found = {}
    for layer in leaf_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) == 4:
            found[layer.name] = kernel
    return found


class TensorBoardRun(keras.callbacks.Callback):
    """Instruments `model.fit` like train_mnist.py: summaries, images, best checkpoints.

    Args:
      logdir: the run directory (`train/`, `validation/`, `checkpoints/` go inside).
      validation_data: `(x, y)` arrays with integer labels for the confusion
        matrix and example errors (optional; scalars come from `fit`'s own validation).
      summary_freq: `"epoch"` (default) or a number of batches between variable
        summaries and filter images.
      histograms: record histograms (default True).
      images: record filter grids, confusion matrices and example errors (default True).
      monitor: the `logs` key deciding what "best" means (default `"val_accuracy"`).
      mode: `"max"`, `"min"` or `"auto"` (min for names containing "loss").
      min_delta: margin an improvement must exceed.
      patience: stop after this many epochs without improvement (None: never).
      restore_best_weights: restore the best checkpoint when training ends (default True).
      class_names: names for the confusion-matrix axes.

    Resuming: when `LOGDIR/checkpoints/latest` exists, `fit` continues after its
    epoch with the saved model, optimizer and patience. A run that stopped early
    is finished, and a later `fit` trains nothing (the best weights are restored).
    """

    def __init__(
        self,
        logdir: str,
        validation_data=None,
        summary_freq: int | str = "epoch",
        histograms: bool = True,
        images: bool = True,
        monitor: str = "val_accuracy",
        mode: str = "auto",
        min_delta: float = 0.0,
        patience: int | None = None,
        restore_best_weights: bool = True,
        class_names=None,
    ):
        super().__init__()
        if summary_freq != "epoch" and (not isinstance(summary_freq, int) or summary_freq <= 0):
            raise ValueError(
                f"summary_freq must be 'epoch' or a positive integer. Received: summary_freq={summary_freq!r}"
            )
        if patience is not None and (not isinstance(patience, int) or patience <= 0):
            raise ValueError(
                f"patience must be a positive integer or None. Received: patience={patience!r}"
            )
        if mode == "auto":
            mode = "min" if "loss" in monitor else "max"
        self.logdir, self.validation_data = logdir, validation_data
        self.summary_freq, self.histograms, self.images = summary_freq, histograms, images
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.class_names = class_names
        self.best: BestCheckpoint | None = None
        self._scratch = None

    # --- set-up -------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        chief = is_chief(self.model.distribute_strategy)
        root = self.logdir
        if not chief:  # every worker must save (collectives); only the chief keeps it
            self._scratch = root = tempfile.mkdtemp(prefix="tbkit-worker-")
        self.writers = RunWriters(self.logdir, enabled=chief)
        with self.model.distribute_strategy.scope():
            self.stopper = EarlyStopping(self.patience or 2**62, self.mode, self.min_delta)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.finished = tf.Variable(False, trainable=False)
        self.best = BestCheckpoint(
            os.path.join(root, "checkpoints", "best"), self.mode, self.min_delta, model=self.model
        )
        objects = dict(
            model=self.model, epoch=self.epoch, finished=self.finished, early_stopping=self.stopper
        )
        if self.model.optimizer is not None and self.model.optimizer.built:
            objects["optimizer"] = self.model.optimizer
        self.state = tf.train.Checkpoint(**objects)
        self.latest = tf.train.CheckpointManager(
            self.state,
            os.path.join(root, "checkpoints", "latest"),
            max_to_keep=2,
            checkpoint_name="latest",
        )
        if self.latest.latest_checkpoint:
            self.state.restore(self.latest.latest_checkpoint).expect_partial()
            # As keras.callbacks.BackupAndRestore does: fit continues after the saved epoch.
            self.model._initial_epoch = int(self.epoch.numpy())
            if bool(self.finished.numpy()):  # nothing left to train: skip every epoch
                self.model._initial_epoch = max(
                    int(self.epoch.numpy()), self.params.get("epochs", 0)
                )
        self._saved_epoch = None  # the epoch the newest latest checkpoint holds
        self._var_tags = variable_tags(self.model)
        self._kernels = conv_kernels(self.model)
        # Compiled, one recording of the bench's CNN costs ~6 ms after ~2 s of
        # tracing; eagerly (statistics in numpy) ~28 ms with no tracing. So a
        # batch cadence compiles and epoch-end recordings run eagerly.
        self._summary_fn = (
            self._summaries if self.summary_freq == "epoch" else tf.function(self._summaries)
        )
        self._train_scope = self.writers.scope("train")
        self._train_scope.__enter__()

    def _step(self) -> int:
        return (
            int(self.model.optimizer.iterations.numpy()) if self.model.optimizer is not None else 0
        )

    def _summaries(self, step):
        return [
            variable_summaries(v, name=tag, step=step, histogram=self.histograms)
            for tag, v in self._var_tags.items()
        ]

    def _record_variables(self, step: int) -> None:
        self._summary_fn(tf.constant(step, tf.int64))
        if self.images:
            for name, kernel in self._kernels.items():
                tbi.filters_summary(f"{name}/filters", kernel.numpy(), step=step)

    # --- during training ----------------------------------------------------------------

    def on_train_batch_end(self, batch, logs=None):
        if self.summary_freq != "epoch":
            step = self._step()
            if step % self.summary_freq == 0:
                self._record_variables(step)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = self._step()
        for key, value in logs.items():
            if not key.startswith("val_") and np.isscalar(value):
                tf.summary.scalar(key, float(value), step=step)
        if self.summary_freq == "epoch":
            self._record_variables(step)
        value = logs.get(self.monitor)
        improved = False
        if value is not None:
            improved = self.stopper.update(float(value), epoch + 1)
            self.best.update(float(value), epoch + 1)
        with self.writers.scope("validation", step=step):
            for key, v in logs.items():
                if key.startswith("val_") and np.isscalar(v):
                    tf.summary.scalar(key[4:], float(v))
            if self.stopper.best is not None:
                tf.summary.scalar(f"best_{self.monitor.removeprefix('val_')}", self.stopper.best)
            if self.images and self.validation_data is not None and (improved or value is None):
                x, y = self.validation_data
                y = np.asarray(y).reshape(-1)
                pred = np.argmax(self.model.predict(x, verbose=0, batch_size=1000), axis=-1)
                classes = int(max(y.max(), pred.max()) + 1)
                tbi.confusion_matrix_summary(
                    "confusion_matrix", y, pred, classes, class_names=self.class_names
                )
                tbi.example_errors_summary(
                    "example_errors", x, y, pred, class_names=self.class_names
                )
        self.epoch.assign(epoch + 1)
        if self.patience is not None and self.stopper.should_stop(epoch + 1):
            self.model.stop_training = True
            self.finished.assign(True)  # early-stopped: a later fit trains nothing
        self.latest.save(checkpoint_number=epoch + 1)
        self._saved_epoch = epoch + 1

    # --- the end --------------------------------------------------------------------------

    def on_train_end(self, logs=None):
        try:
            self._train_scope.__exit__(None, None, None)
            # A fit that ran out of epochs is not finished: a later fit with more
            # epochs continues from the saved epoch, like `initial_epoch`. The
            # last epoch's save already holds that state, unless fit ended early.
            if self._saved_epoch != int(self.epoch.numpy()):
                self.latest.save(checkpoint_number=int(self.epoch.numpy()))
            if self.restore_best_weights and self.best.best_path:
                tf.train.Checkpoint(model=self.model).restore(self.best.best_path).expect_partial()
        finally:
            self.writers.close()
            if self._scratch:
                shutil.rmtree(self._scratch, ignore_errors=True)
