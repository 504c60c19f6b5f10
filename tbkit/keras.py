"""`tbkit.keras.TensorBoardRun`: the train_mnist.py picture for any `model.fit`.

One callback gives, for *any* Keras model (stock layers included):

- every variable's summaries (`<layer>/<variable>/mean|stddev|min|max|histogram`,
  tags by `tbkit.recorder`'s rule) at a batch cadence or once per epoch,
  recorded between batches, never inside the compiled train step;
- the epoch's `loss`/`accuracy`/... in `LOGDIR/train` and the `val_*` values,
  stripped of their prefix, in `LOGDIR/validation`, so each pair shares a chart;
- a filter grid for every 4-D kernel;
- the training dynamics at the same cadence (`tbkit.dynamics`): each
  variable's `gradient_norm`, `gradient` histogram and `update_ratio`, each
  probed layer's zero / dead activation fractions, `gradient_global_norm` and
  `learning_rate`, and a `health` text with the findings at each epoch end.
  `fit`'s own step is out of a callback's reach, so the gradients are taken on
  a probe batch (`probe`, else the first examples of `validation_data`) in
  training mode, with every non-trainable and metric variable restored after,
  and the update ratio from the weights before and after the recorded batch;
- a non-finite training loss stops `fit` with a `TrainingError` naming the
  batch, after nothing diverged was saved;
- for a classifier with integer labels and `validation_data`: per-class
  `per_class/accuracy|precision/<class>` scalars and `pr_curves/<class>` PR
  curves at every epoch, a confusion matrix at improvements, example errors
  when its inputs are a single batch of images (all from one `predict` of
  `validation_data` per epoch: Keras does not hand its own validation
  predictions to callbacks), and at the end the Embedding Projector's view of
  the best weights on a sample of it (`tbkit.projector`);
- the run state of `tbkit.RunState`: best checkpoints on each improvement of
  `monitor`, early stopping whose state is saved with the latest checkpoints,
  resume of an interrupted `fit`, damaged checkpoints found and refused as in
  train_mnist.py, one process per run, restore-best at the end.

Under `tf.distribute`, only the chief writes summaries and keeps checkpoints;
another worker keeps its (required) copies in a scratch directory seeded with
the chief's checkpoints, so a restarted cluster resumes on every worker.

The x axis of every summary is the global training step (`optimizer.iterations`).
"""

from __future__ import annotations

import contextlib
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from tbkit import dynamics as tbd
from tbkit import images as tbi
from tbkit import projector as tbp
from tbkit.classes import (
    check_class_names,
    class_count,
    model_classes,
    write_per_class,
    write_pr_curves,
)
from tbkit.distribute import dense, is_chief, l2_norm
from tbkit.errors import TrainingError
from tbkit.profiling import Profiler, parse_steps
from tbkit.recorder import LayerRecorder
from tbkit.recorder import variable_tags as variable_tags
from tbkit.runstate import RunState
from tbkit.writers import RunWriters


class TensorBoardRun(keras.callbacks.Callback):
    """Instruments `model.fit` like train_mnist.py: summaries, images, best checkpoints.

    Args:
      logdir: the run directory (`train/`, `validation/`, `checkpoints/` go inside).
      validation_data: `(x, y)` with integer labels, for the confusion matrix and
        example errors (optional; scalars come from `fit`'s own validation).
        Other kinds of data skip those images with one warning.
      summary_freq: `"epoch"` (default) or a number of batches between variable
        summaries and filter images.
      histograms: record histograms (default True).
      images: record filter grids, confusion matrices and example errors (default True).
      profile_steps: `"A:B"` or `(A, B)`: trace TensorFlow's profiler over
        optimizer steps A to B (included, counted from 1 across epochs) into
        `logdir/train` for TensorBoard's Profile tab (`pip install "tbkit[profile]"`).
      dynamics: record the training dynamics and the `health` findings (default True).
      gradient_histograms: also write each gradient's histogram (default True).
      probe: an `(x, y)` batch for the gradients and activation fractions
        (default: the first `probe_size` examples of `validation_data`).
      probe_size: examples taken from `validation_data` for the probe (default 32).
      monitor: the `logs` key deciding what "best" means (default `"val_accuracy"`).
      mode: `"max"`, `"min"` or `"auto"` (min for names containing "loss").
      min_delta: margin an improvement must exceed.
      patience: stop after this many epochs without improvement (None: never).
      restore_best_weights: restore the best checkpoint when training ends (default True).
      class_metrics: for a classifier, the per-class scalars and PR curves on
        `validation_data` at every epoch (default True). They cost one `predict`
        of `validation_data` per epoch (Keras keeps its own validation predictions
        from callbacks); False predicts only at improvements, for the confusion matrix.
      projector_examples: embed this many `validation_data` examples (a seeded
        sample) for TensorBoard's Projector when training ends, with the best
        checkpoint's weights (default 1000; 0: none).
      projector_layer: the layer whose output is embedded (default: the input of
        the model's last layer with weights).
      projector_every: also embed the current weights every N epochs (default None).
      class_names: names for the confusion-matrix axes, per-class tags, PR curves
        and the projector's metadata.
      log: where one-line notices go (damaged checkpoints, fallbacks); default `print`.

    Resuming: when `LOGDIR/checkpoints/latest` holds a checkpoint, `fit`
    continues after its epoch with the saved model, optimizer and patience. A run
    that stopped early is finished, and a later `fit` trains nothing (the best
    weights are restored). Failures (a run in use, damaged or foreign
    checkpoints, a failed write) raise a `tbkit.TbkitError` with a one-line message.
    """

    def __init__(
        self,
        logdir: str,
        validation_data=None,
        summary_freq: int | str = "epoch",
        histograms: bool = True,
        images: bool = True,
        monitor: str = "val_accuracy",
        dynamics: bool = True,
        gradient_histograms: bool = True,
        probe=None,
        probe_size: int = 32,
        mode: str = "auto",
        min_delta: float = 0.0,
        patience: int | None = None,
        restore_best_weights: bool = True,
        class_names=None,
        profile_steps=None,
        class_metrics: bool = True,
        projector_examples: int = 1000,
        projector_layer: str | None = None,
        projector_every: int | None = None,
        log=print,
    ):
        super().__init__()
        if summary_freq != "epoch" and (
            isinstance(summary_freq, bool) or not isinstance(summary_freq, int) or summary_freq <= 0
        ):
            raise ValueError(
                f"summary_freq must be 'epoch' or a positive integer. Received: summary_freq={summary_freq!r}"
            )
        if patience is not None and (not isinstance(patience, int) or patience <= 0):
            raise ValueError(
                f"patience must be a positive integer or None. Received: patience={patience!r}"
            )
        tbp.check_options(projector_examples, projector_every)
        if mode == "auto":
            mode = "min" if "loss" in monitor else "max"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto'. Received: mode={mode!r}")
        self.logdir, self.validation_data = logdir, validation_data
        self.summary_freq, self.histograms, self.images = summary_freq, histograms, images
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.class_names, self.log = class_names, log
        self.dynamics, self.gradient_histograms = dynamics, gradient_histograms
        self.probe, self.probe_size = probe, probe_size
        self.profile_steps = parse_steps(profile_steps)
        self.projector_examples, self.projector_layer = projector_examples, projector_layer
        self.projector_every = projector_every
        self.class_metrics = class_metrics
        self._profiler: Profiler | None = None
        self._before = None
        self._diverged: str | None = None
        self._open = False
        self.state: RunState | None = None
        self._warned: set[str] = set()

    @property
    def best(self):
        """The run's `BestCheckpoint` (after `on_train_begin`)."""
        return self.state.best if self.state else None

    @property
    def stopper(self):
        return self.state.stopper if self.state else None

    @property
    def epoch(self) -> tf.Variable:
        """The number of finished epochs: the run state's step counter, in epochs."""
        return self.state.step

    # --- set-up -------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        strategy = self.model.distribute_strategy
        chief = is_chief(strategy)
        self._chief = chief
        # One rule at both doors, said before the first batch.
        self.class_names = check_class_names(self.class_names, model_classes(self.model))
        if self.projector_examples and self.projector_layer is not None:
            tbp.target_layer(self.model, self.projector_layer)  # a wrong name fails before training
        self.writers = RunWriters(self.logdir, enabled=chief)
        self._probe_batch = self._find_probe() if self.dynamics else None
        self.recorder = LayerRecorder(
            self.model, histograms=self.histograms, images=self.images,
            activations=False,  # the probe's activation histograms would double the cost
            gradient_histograms=self.gradient_histograms and self.dynamics,
            activation_fractions=self._probe_batch is not None,
        )  # fmt: skip
        self._dynamics_fns = None
        with strategy.scope():
            self.state = RunState(
                self.logdir,
                model=self.model,
                optimizer=self.model.optimizer,
                mode=self.mode,
                min_delta=self.min_delta,
                patience=self.patience,
                chief=chief,
                names={id(v): tag for tag, v in self.recorder.tags.items()},
                log=self.log,
                unit="epoch",
            )
            self.state.open()
        if self.state.resumed:
            # As keras.callbacks.BackupAndRestore does: fit continues after the saved epoch.
            self.model._initial_epoch = int(self.epoch.numpy())
            if self.state.is_finished:  # early-stopped: nothing left to train
                self.model._initial_epoch = max(
                    int(self.epoch.numpy()), self.params.get("epochs", 0)
                )
        self._saved_epoch = int(self.epoch.numpy()) if self.state.resumed else None
        self._train_scope = self.writers.scope("train")
        self._train_scope.__enter__()
        self._open = True
        self._profiler = Profiler(self.profile_steps if chief else None,
                                  os.path.join(self.logdir, "train"))  # fmt: skip
        if self.dynamics and not self.state.resumed:
            tbd.write_layout(self.recorder.trainable_tags.values())

    def _step(self) -> int:
        return (
            int(self.model.optimizer.iterations.numpy()) if self.model.optimizer is not None else 0
        )

    def _record_variables(self, step: int) -> None:
        # Compiled, one recording of a small CNN costs ~6 ms after ~2 s of tracing;
        # eagerly (statistics in numpy) ~28 ms with no tracing. So a batch cadence
        # compiles and epoch-end recordings run eagerly.
        compiled = self.summary_freq != "epoch"
        x, dyn = None, None
        if self.dynamics:
            dyn = self._measure()
            if self._probe_batch is not None:
                x = self._probe_batch[0]
        self.recorder.record(step, x, compiled=compiled, dynamics=dyn)
        self._before = None

    # --- training dynamics --------------------------------------------------------------

    def _find_probe(self):
        probe = self.probe
        if probe is None and self.validation_data is not None:
            try:
                x, y = self.validation_data
                take = lambda a: tf.nest.map_structure(lambda t: t[: self.probe_size], a)  # noqa: E731
                probe = (take(x), take(y))
            except (TypeError, ValueError):
                probe = None
        if probe is None:
            self._warn_once(
                "no probe batch (pass probe=(x, y) or validation_data): no gradient summaries"
            )
            return None
        x, y = probe
        to_tensor = lambda a: tf.nest.map_structure(tf.convert_to_tensor, a)  # noqa: E731
        return to_tensor(x), to_tensor(y)

    def _make_dynamics_fns(self):
        model = self.model
        variables = list(model.trainable_variables)
        # Probing in training mode must leave no trace: BatchNorm statistics,
        # dropout seeds and metric totals are put back as they were.
        restore = [v for v in model.non_trainable_variables + model.metrics_variables]

        # A batch cadence compiles (many calls); once an epoch runs eagerly: tracing
        # would cost more than the few calls it speeds up (as for the recorder).
        compile_ = (
            (lambda f: tf.function(f, reduce_retracing=True))
            if self.summary_freq != "epoch"
            else (lambda f: f)
        )

        @compile_
        def gradients(x, y):
            saved = [tf.identity(v.value) for v in restore]
            with tf.GradientTape() as tape:
                y_pred = model(x, training=True)
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            grads = tape.gradient(loss, variables)
            for v, value in zip(restore, saved, strict=True):
                v.assign(value)
            missing = [i for i, g in enumerate(grads) if g is None]
            grads = [
                tf.zeros_like(v) if g is None else dense(g) for g, v in zip(grads, variables, strict=True)
            ]
            return grads, missing

        @compile_
        def snapshot():
            return [tf.identity(v.value) for v in variables]

        @compile_
        def norms(grads, before):
            grad_norm = tf.stack([l2_norm(g) for g in grads]) if grads else tf.zeros([0])
            return {
                "gradient_norm": grad_norm,
                "weight_norm": tf.stack([l2_norm(b) for b in before]),
                "update_norm": tf.stack(
                    [l2_norm(v.value - b) for v, b in zip(variables, before, strict=True)]
                ),
                "global_norm": tf.sqrt(tf.reduce_sum(tf.square(grad_norm))),
            }

        return gradients, snapshot, norms

    def _will_record(self, batch: int) -> bool:
        """Whether the batch about to run is one whose end records the summaries."""
        if self.summary_freq == "epoch":
            steps = self.params.get("steps") if self.params else None
            return steps is not None and batch == steps - 1
        return (self._step() + 1) % self.summary_freq == 0

    def on_train_batch_begin(self, batch, logs=None):
        self._profiler.begin(self._step() + 1)
        if self.dynamics and self._will_record(batch):
            if self._dynamics_fns is None:
                self._dynamics_fns = self._make_dynamics_fns()
            optimizer = self.model.optimizer
            rate = optimizer.learning_rate if optimizer is not None else None
            self._before = (
                self._dynamics_fns[1](),
                None if rate is None else float(np.asarray(rate)),
            )

    def _measure(self):
        """The dynamics of the batch just trained (update ratio) and of the probe (gradients)."""
        if self._dynamics_fns is None:
            self._dynamics_fns = self._make_dynamics_fns()
        gradients, snapshot, norms = self._dynamics_fns
        before, rate = self._before if self._before is not None else (None, None)
        if self._probe_batch is None:
            return None
        grads, missing = gradients(*self._probe_batch)
        if before is None:  # no snapshot of this batch (unknown epoch length): no update ratio
            before = snapshot()
        dyn = norms(grads, before)
        if self._before is None:
            dyn["update_norm"] = tf.fill(tf.shape(dyn["update_norm"]), float("nan"))
        dyn["gradients"] = grads
        if rate is None:
            optimizer = self.model.optimizer
            rate = float(np.asarray(optimizer.learning_rate)) if optimizer is not None else 0.0
        dyn["learning_rate"] = tf.constant(rate, tf.float32)
        dyn["no_gradient"] = frozenset(int(i) for i in np.asarray(missing).reshape(-1))
        return dyn

    def _warn_once(self, what: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"TensorBoardRun: {what}", RuntimeWarning, stacklevel=3)

    # --- during training ----------------------------------------------------------------

    def on_train_batch_end(self, batch, logs=None):
        with self._aborting():
            self._batch_end(batch, logs)
            self._profiler.end(self._step())

    def on_epoch_end(self, epoch, logs=None):
        with self._aborting():
            self._epoch_end(epoch, logs)

    @contextlib.contextmanager
    def _aborting(self):
        """`fit` skips `on_train_end` when a hook raises: close what is open, then raise."""
        try:
            yield
        except BaseException:
            if self._open:
                self._open = False
                for close in (
                    self._profiler.stop,
                    lambda: self._train_scope.__exit__(None, None, None),
                    self.writers.close,
                    self.state.close,
                ):
                    with contextlib.suppress(Exception):  # the first error is the one to report
                        close()
            raise

    def _batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.all(np.isfinite(np.asarray(loss))):
            self._diverge(float(np.asarray(loss).reshape(-1)[0]))
            return
        if self.summary_freq != "epoch":
            step = self._step()
            if step % self.summary_freq == 0:
                self._record_variables(step)

    def _diverge(self, loss: float) -> None:
        """A non-finite training loss: stop, save nothing, name what is non-finite."""
        step = self._step()
        trainable = list(self.recorder.trainable_tags.values())
        bad = [t for t in trainable if not np.all(np.isfinite(self.recorder.tags[t].numpy()))]
        if not bad:
            where = "every trainable variable is still finite"
        elif len(bad) == len(trainable):
            # A callback sees the weights only after fit's update, which spread the
            # NaN everywhere; tbkit.Trainer's guard sees them before it.
            where = "every trainable variable is non-finite after the optimizer's update"
        else:
            where = f"first non-finite variable: {bad[0]}"
        kept = f"epoch {self.state.best_step}" if self.state.best_path else "none yet"
        self._diverged = (
            f"the training loss became {loss} at step {step} ({where}); stopping (lower the "
            f"learning rate?). Best checkpoint kept: {kept}"
        )
        lines = [f"{t}: non-finite values (NaN or Inf) at step {step}" for t in bad[:1]] or [
            f"the training loss became {loss} at step {step}"
        ]
        tbd.write_health(step, lines)
        self.recorder.record(step, compiled=False)
        self.model.stop_training = True

    def _epoch_end(self, epoch, logs=None):
        if self._diverged:
            return
        logs = logs or {}
        step = self._step()
        for key, value in logs.items():
            if not key.startswith("val_") and np.isscalar(value):
                tf.summary.scalar(key, float(value), step=step)
        if self.summary_freq == "epoch":
            self._record_variables(step)
        if self.dynamics:
            tbd.write_findings(self.recorder.latest, step)
        value = logs.get(self.monitor)
        improved = False
        if value is not None:
            improved = self.state.record(float(value), epoch + 1)
        else:
            self._warn_once(f"monitor {self.monitor!r} is not in the epoch's logs; no best is kept")
        with self.writers.scope("validation", step=step):
            for key, v in logs.items():
                if key.startswith("val_") and np.isscalar(v):
                    tf.summary.scalar(key[4:], float(v))
            if self.state.best_value is not None:
                name = self.monitor.removeprefix("val_")
                tf.summary.scalar(f"best_{name}", self.state.best_value)
            pictures = self.images and (improved or value is None)
            wanted = self.validation_data is not None and (self.class_metrics or pictures)
            classified = self._classify() if wanted else None
            if classified is not None:
                y, pred, out = classified
                classes = class_count(out.shape[-1], self.class_names, y, pred)
                if self.class_metrics:
                    write_per_class(y, pred, classes, self.class_names)
                    write_pr_curves(y, out, self.class_names)
                if pictures:
                    self._validation_images(y, pred, classes)
        if self.projector_every and (epoch + 1) % self.projector_every == 0:
            self._project(epoch + 1)
        stop = self.state.should_stop(epoch + 1)
        if stop:
            self.model.stop_training = True
        self.state.save_latest(epoch + 1, finished=True if stop else None)
        self._saved_epoch = epoch + 1

    def _classify(self):
        """`(labels, predicted classes, outputs)` on `validation_data`, or None (one warning)
        when it is not a one-output classifier's `(x, integer labels)`."""
        try:
            x, y = self.validation_data
        except (TypeError, ValueError):
            self._warn_once("validation_data is not an (x, y) pair; no per-class metrics or images")
            return None
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.integer):
            self._warn_once("validation labels are not integer classes; no per-class metrics")
            return None
        out = self.model.predict(x, verbose=0, batch_size=1000)
        if isinstance(out, list | tuple | dict) or np.ndim(out) != 2 or y.size != len(out):
            self._warn_once("the model is not a one-output classifier; no per-class metrics")
            return None
        return y.reshape(-1), np.argmax(out, axis=-1), np.asarray(out)

    def _project(self, epoch: int, best: bool = False) -> None:
        if not (self._chief and self.projector_examples and self.validation_data is not None):
            return
        try:
            _, y = self.validation_data
        except (TypeError, ValueError):
            return  # _classify warned
        if not np.issubdtype(np.asarray(y).dtype, np.integer):
            return
        tbp.write_embedding(
            self.logdir, self.model, self.validation_data, step=epoch, best=best, unit="epoch",
            examples=self.projector_examples, layer=self.projector_layer,
            class_names=self.class_names,
        )  # fmt: skip

    def _validation_images(self, y, pred, classes) -> None:
        """Confusion matrix, and example errors where they make sense (else one warning)."""
        x, _ = self.validation_data
        tbi.confusion_matrix_summary(
            "confusion_matrix", y, pred, classes, class_names=self.class_names
        )
        xs = np.asarray(x) if not isinstance(x, list | tuple | dict) else None
        if xs is None or not tbi.looks_like_images(xs.shape):
            self._warn_once("validation inputs are not one batch of images; no example errors")
            return
        tbi.example_errors_summary("example_errors", xs, y, pred, class_names=self.class_names)

    # --- the end --------------------------------------------------------------------------

    def on_train_end(self, logs=None):
        if self.state is None or not self._open:
            return
        self._open = False
        try:
            self._profiler.stop()
            self._train_scope.__exit__(None, None, None)
            # A fit that ran out of epochs is not finished: a later fit with more
            # epochs continues from the saved epoch, like `initial_epoch`. The
            # last epoch's save already holds that state, unless fit ended early.
            epoch = int(self.epoch.numpy())
            if self._saved_epoch != epoch and not self._diverged:
                self.state.save_latest(epoch)
            if self.restore_best_weights and self.state.best_path:
                self.state.restore_best()
            best = self.state.best_step
            if (
                self.state.best_path
                and not self._diverged
                and tbp.best_embedding_step(self.logdir) != best
            ):
                if self.restore_best_weights:
                    self._project(best, best=True)
                else:
                    with tbp.best_weights(self.model, self.state.best_path):
                        self._project(best, best=True)
        finally:
            self.writers.close()
            self.state.close()
        if self._diverged:
            raise TrainingError(self._diverged)
