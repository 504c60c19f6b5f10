"""`tbkit.keras.TensorBoardRun`: the train_mnist.py picture for any `model.fit`.

One callback gives, for *any* Keras model (stock layers included):

- every variable's summaries (`<layer>/<variable>/mean|stddev|min|max|histogram`,
  tags by `tbkit.model.recorder`'s rule) at a batch cadence or once per epoch,
  recorded between batches, never inside the compiled train step;
- the epoch's `loss`/`accuracy`/... in `RUN_DIR/train` and the `val_*` values,
  stripped of their prefix, in `RUN_DIR/validation`, so each pair shares a chart;
- a filter grid for every 4-D kernel;
- the training dynamics at the same cadence (`tbkit.summary.dynamics`): each
  variable's `gradient_norm`, `gradient` histogram and `update_ratio`, each
  probed layer's zero / dead activation fractions, `gradient_global_norm` and
  `learning_rate`, and a `health` text with the findings at each epoch end.
  The gradients are those of `fit`'s recorded batch, copied inside its compiled
  step by a tap on the optimizer's `apply` (`tbkit.keras.tap`); the activation
  fractions come from one training-mode forward pass on a probe batch (`probe`,
  else the first examples of `validation_data`), with every non-trainable and
  metric variable restored after, as do the gradients where the tap cannot
  copy them (under a `tf.distribute` strategy); the update ratio comes from the
  weights before and after the recorded batch;
- a non-finite training loss stops `fit` with a `TrainingError` naming the
  batch, after nothing diverged was saved;
- for a classifier with integer labels and `validation_data`: per-class
  `per_class/accuracy|precision/<class>` scalars and `pr_curves/<class>` PR
  curves at every epoch, a confusion matrix at improvements, example errors
  when its inputs are a single batch of images (all from one `predict` of
  `validation_data` per epoch: Keras does not hand its own validation
  predictions to callbacks), and at the end the Embedding Projector's view of
  the best weights on a sample of it (`tbkit.summary.projector`);
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
import math
import os
import warnings
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from tbkit.checks import check_positive
from tbkit.errors import TrainingError
from tbkit.hooks import (
    Classified,
    Diverged,
    Ended,
    Hook,
    Hooks,
    Recording,
    Run,
    Validated,
    ValidationData,
    default_hooks,
)
from tbkit.keras.probe import Probe, probe_batch
from tbkit.keras.tap import GradientTap
from tbkit.loop.distribute import is_chief
from tbkit.model.recorder import LayerRecorder
from tbkit.model.recorder import variable_tags as variable_tags
from tbkit.run.runstate import RunState
from tbkit.run.writers import RunWriters
from tbkit.summary.classes import check_class_names, model_classes
from tbkit.summary.dynamics import findings as dynamics_findings


class TensorBoardRun(keras.callbacks.Callback):
    """Instruments `model.fit` like train_mnist.py: summaries, images, best checkpoints.

    Args:
      run_dir: the run directory (`train/`, `validation/`, `checkpoints/` go inside);
        `logdir=` is its deprecated name.
      validation_data: `(x, y)` arrays or a batched `tf.data.Dataset` of them,
        with integer labels, for the per-class metrics, the confusion matrix,
        example errors, the projector and the probe (optional; scalars come
        from `fit`'s own validation).
        Other kinds of data skip those images with one warning.
      summary_every: `"epoch"` (default) or a number of batches between variable
        summaries and filter images; `summary_freq=` is its deprecated name. With
        `steps_per_execution`, fit calls the callback once an execution: the execution
        holding a multiple of `summary_every` records at its end (its update ratio is
        that execution's update).
      histograms: record histograms (default True).
      images: record filter grids, confusion matrices and example errors (default True).
      profile_steps: `"A:B"` or `(A, B)`: trace TensorFlow's profiler over
        optimizer steps A to B (included, counted from 1 across epochs) into
        `logdir/train` for TensorBoard's Profile tab (`pip install "tbkit[profile]"`).
      dynamics: record the training dynamics and the `health` findings (default True).
      gradient_histograms: also write each gradient's histogram (default True).
      probe: an `(x, y)` batch for the activation fractions, and for the gradients
        where fit's own cannot be copied (default: the first `probe_size` examples
        of `validation_data`).
      probe_size: examples taken from `validation_data` for the probe (default 32).
      monitor: the `logs` key deciding what "best" means (default `"val_accuracy"`).
      mode: `"max"`, `"min"` or `"auto"` (min for names containing "loss").
      min_delta: margin an improvement must exceed.
      patience: stop after this many epochs without improvement (None: never).
      restore_best_weights: restore the best checkpoint when training ends (default True),
        also when it ends on a non-finite loss or weight.
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
      config: a JSON-able dict written to `config.json` when the run starts.
      hparams: a dict of hyperparameters for TensorBoard's HParams tab.
      hooks: more `tbkit.Hook`s, run after tbkit's own on every event (`tbkit.hooks`).
      log: where one-line notices go (damaged checkpoints, fallbacks); default `print`.

    Resuming: when `RUN_DIR/checkpoints/latest` holds a checkpoint, `fit`
    continues after its epoch with the saved model, optimizer and patience. A run
    that stopped early is finished, and a later `fit` trains nothing (the best
    weights are restored). Failures (a run in use, damaged or foreign
    checkpoints, a failed write) raise a `tbkit.TbkitError` with a one-line message.
    """

    def __init__(
        self,
        run_dir: str | None = None,
        validation_data=None,
        summary_every: int | str = "epoch",
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
        *,
        config: dict | None = None,
        hparams: dict | None = None,
        hooks: Iterable[Hook] = (),
        logdir: str | None = None,
        summary_freq: int | str | None = None,
    ):
        super().__init__()
        run_dir = _renamed("logdir", logdir, "run_dir", run_dir)
        summary_every = _renamed("summary_freq", summary_freq, "summary_every", summary_every)
        if run_dir is None:
            raise TypeError("TensorBoardRun needs a run directory: TensorBoardRun(run_dir, ...)")
        if summary_every != "epoch":
            check_positive("summary_every", summary_every)
        check_positive("patience", patience, allow_none=True)
        if mode == "auto":
            mode = "min" if "loss" in monitor else "max"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto'. Received: mode={mode!r}")
        self.run_dir, self.validation_data = os.fspath(run_dir), validation_data
        self.summary_every, self.histograms, self.images = summary_every, histograms, images
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.class_names, self.log = class_names, log
        self.dynamics, self.gradient_histograms = dynamics, gradient_histograms
        self.probe, self.probe_size = probe, probe_size
        self.class_metrics = class_metrics
        self.hooks = Hooks(
            [
                *default_hooks(
                    images=images, image_every=1, class_metrics=class_metrics,
                    projector_examples=projector_examples, projector_layer=projector_layer,
                    projector_every=projector_every, profile_steps=profile_steps,
                    config=config, hparams=hparams,
                ),
                *hooks,
            ]
        )  # fmt: skip
        self._diverged: str | None = None
        self._open = False
        self.state: RunState | None = None
        self._warned: set[str] = set()

    # The names of the previous release, kept as read-only aliases.
    logdir = property(lambda self: self.run_dir)
    summary_freq = property(lambda self: self.summary_every)

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
        # One rule at both doors, said before the first batch.
        data = ValidationData(self.validation_data) if self.validation_data is not None else None
        classes = model_classes(self.model)
        if classes is None and self.class_names is not None and data is not None:
            first = data.first(1)  # a subclassed model says its classes when traced
            classes = model_classes(self.model, first[0]) if first is not None else None
        self.class_names = check_class_names(self.class_names, classes)
        self.hooks.check(self.model)
        self._step_hooks = self.hooks.listen_to_steps
        self.writers = RunWriters(self.run_dir, enabled=chief)
        batch = probe_batch(self.probe, data, self.probe_size) if self.dynamics else None
        tap = GradientTap.of(self.model) if self.dynamics else None
        if self.dynamics and batch is None:
            self._warn_once(
                "no probe batch (pass probe=(x, y) or validation_data): no activation fractions"
                + ("" if tap is not None else " and no gradient summaries")
            )
        self.recorder = LayerRecorder(
            self.model, histograms=self.histograms, images=self.images,
            activations=False,  # the probe's activation histograms would double the cost
            gradient_histograms=self.gradient_histograms and self.dynamics,
            activation_fractions=batch is not None,
        )  # fmt: skip
        compiled = self.summary_every != "epoch"
        self._probe = (
            Probe(self.model, batch, compiled, recorder=self.recorder, tap=tap)
            if batch is not None or tap is not None
            else None
        )
        with strategy.scope():
            self.state = RunState(
                self.run_dir,
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
        self._at_best = False
        # The step count of batches; on_epoch_begin sets it again before each epoch.
        self._epoch_base, self._epoch_steps = self._step(), None
        # fit calls the batch hooks once an execution of this many steps.
        self._execution = max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))
        self._before_execution: int | None = None  # steps done when the execution began
        extended = strategy.extended
        self.run = Run(
            path=self.state.path, model=self.model, state=self.state, writers=self.writers,
            recorder=self.recorder, chief=chief,
            multi_worker=bool(getattr(extended, "_in_multi_worker_mode", lambda: False)()),
            unit="epoch", classifier=data is not None and data.integer_labels(),
            classes=model_classes(self.model), class_names=self.class_names,
            validation=data, dynamics=self.dynamics, monitor=self.monitor.removeprefix("val_"),
            log=self.log,
        )  # fmt: skip
        self._train_scope = self.writers.scope("train")
        self._train_scope.__enter__()
        self._open = True
        with self._aborting():
            self.hooks.begin(self.run)

    def _step(self) -> int:
        return (
            int(self.model.optimizer.iterations.numpy()) if self.model.optimizer is not None else 0
        )

    def _record_variables(self, step: int) -> None:
        # Compiled, one recording of a small CNN costs ~6 ms after ~2 s of tracing;
        # eagerly (statistics in numpy) ~28 ms with no tracing. So a batch cadence
        # compiles and epoch-end recordings run eagerly.
        x, dyn = None, None
        if self._probe is not None:
            dyn = self._probe.measure()
            x = self._probe.batch[0] if self._probe.batch is not None else None
            if self._probe.missed:
                self._warn_once(
                    "fit's step copied no gradients (its train function was traced before "
                    "the optimizer had tbkit's tap, or its train_step passes the optimizer no "
                    "variables): the gradients are measured on the probe batch"
                    + ("" if self._probe.batch is not None else " (none given: not recorded)")
                )
        compiled = self.summary_every != "epoch"
        self.hooks.record(self.run, Recording(step, x, dyn, compiled=compiled))

    def _batch_step(self, batch: int) -> int:
        """The optimizer step of `batch` of this epoch (the one about to run, or just run):
        counted from the epoch's first step. A read of optimizer.iterations costs ~0.2 ms
        under fit; twice a batch it was ~40% of the hooks' time on the tutorial CNN.
        With `steps_per_execution`, fit numbers a short last execution of an epoch as a
        full one: the epoch's number of steps bounds it."""
        done = batch + 1
        return self._epoch_base + (
            done if self._epoch_steps is None else min(done, self._epoch_steps)
        )

    def _will_record(self, batch: int) -> bool:
        """Whether the execution about to run (`batch` onwards) ends with a recording."""
        if self.summary_every == "epoch":
            steps = self.params.get("steps") if self.params else None
            return steps is not None and batch + self._execution >= steps
        return self._on_cadence(
            self._epoch_base + batch, self._batch_step(batch + self._execution - 1)
        )

    def _on_cadence(self, before: int, end: int) -> bool:
        """Whether steps `before + 1 .. end` (one execution of fit) hold a cadence step:
        with `steps_per_execution`, the execution holding it records, at its end."""
        return end // self.summary_every > before // self.summary_every

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_base = self._step()  # one read an epoch
        self._epoch_steps = self.params.get("steps") if self.params else None

    def on_train_batch_begin(self, batch, logs=None):
        self._at_best = False  # the weights change from here on
        self._before_execution = self._epoch_base + batch
        if self._step_hooks[0]:
            self.hooks.step_begin(self.run, self._batch_step(batch))
        if self._probe is not None and self._will_record(batch):
            self._probe.before_batch()

    def _warn_once(self, what: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"TensorBoardRun: {what}", RuntimeWarning, stacklevel=3)

    # --- during training ----------------------------------------------------------------

    def on_train_batch_end(self, batch, logs=None):
        with self._aborting():
            self._batch_end(batch, logs)
            if self._step_hooks[1]:
                self.hooks.step_end(self.run, self._batch_step(batch))

    def on_epoch_end(self, epoch, logs=None):
        with self._aborting():
            self._epoch_end(epoch, logs)

    @contextlib.contextmanager
    def _aborting(self):
        """`fit` skips `on_train_end` when a hook raises: close what is open, then raise."""
        try:
            yield
        except BaseException as e:
            if self._open:
                self._open = False
                # A non-finite weight the checkpoint check refused: leave the model at its
                # best, as a non-finite loss does (the weights it holds are not usable).
                diverged = isinstance(e, TrainingError) and self.restore_best_weights
                for close in (
                    self._disarm,
                    lambda: (
                        self.state.restore_best() if diverged and self.state.best_path else None
                    ),
                    lambda: self.hooks.end(self.run, self._ended(failed=True)),
                    lambda: self._train_scope.__exit__(None, None, None),
                    self.writers.close,
                    self.state.close,
                ):
                    with contextlib.suppress(Exception):  # the first error is the one to report
                        close()
            raise

    def _disarm(self) -> None:
        """A batch armed but never recorded (a NaN loss, an error): fit's later steps
        must not go on copying their gradients."""
        if self._probe is not None and self._probe.tap is not None:
            self._probe.tap.disarm()

    def _ended(self, failed: bool) -> Ended:
        count = int(self.epoch.numpy())
        return Ended(
            step=self._step(), count=count, best_step=self.state.best_step,
            best_path=self.state.best_path, failed=failed,
            early_stopped=self.state.is_finished and not failed,
        )  # fmt: skip

    def _batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not _finite(loss):
            self._diverge(float(np.asarray(loss).reshape(-1)[0]))
            return
        if self.summary_every != "epoch":
            end = self._batch_step(batch)
            before = self._before_execution
            self._before_execution = None
            if self._on_cadence(end - 1 if before is None else before, end):
                self._record_variables(self._step())

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
        self.hooks.diverged(self.run, Diverged(step, tuple(lines), self._diverged))
        self.model.stop_training = True

    def _weights_checked(self, save):
        """A checkpoint write of the run state; a non-finite weight it refuses is a divergence."""
        try:
            return save()
        except TrainingError as e:
            self.hooks.diverged(self.run, Diverged(self._step(), (str(e),), str(e)))
            raise

    def _epoch_end(self, epoch, logs=None):
        if self._diverged:
            return
        logs = logs or {}
        step = self._step()
        for key, value in logs.items():
            if not key.startswith("val_") and np.isscalar(value):
                tf.summary.scalar(key, float(value), step=step)
        if self.summary_every == "epoch":
            self._record_variables(step)
        value = logs.get(self.monitor)
        improved = False
        if value is not None:
            improved = self._weights_checked(lambda: self.state.record(float(value), epoch + 1))
            self._at_best = improved  # the model holds the best checkpoint's weights
        else:
            self._warn_once(f"monitor {self.monitor!r} is not in the epoch's logs; no best is kept")
        with self.writers.scope("validation", step=step):
            for key, v in logs.items():
                if key.startswith("val_") and np.isscalar(v):
                    tf.summary.scalar(key[4:], float(v))
            if self.state.best_value is not None:
                tf.summary.scalar(f"best_{self.run.monitor}", self.state.best_value)
        val_loss, val_acc = logs.get("val_loss"), logs.get("val_accuracy")
        findings = dynamics_findings(self.recorder.latest) if self.dynamics else []
        self.hooks.validation(
            self.run,
            Validated(
                step=step, count=epoch + 1,
                loss=None if val_loss is None else float(val_loss),
                accuracy=None if val_acc is None else float(val_acc),
                value=None if value is None else float(value), improved=improved,
                best_value=self.state.best_value, best_step=self.state.best_step,
                findings=tuple(findings), train_loss=logs.get("loss"),
                train_accuracy=logs.get("accuracy"), classify=self._classify,
            ),
        )  # fmt: skip
        stop = self.state.should_stop(epoch + 1)
        if self.run.stop_reason is not None:
            self.log(f"Stopping after epoch {epoch + 1}: {self.run.stop_reason}")
            stop = True
        if stop:
            self.model.stop_training = True
        self._weights_checked(
            lambda: self.state.save_latest(epoch + 1, finished=True if stop else None)
        )
        self._saved_epoch = epoch + 1

    def _classify(self) -> Classified | None:
        """`Classified` on `validation_data`, or None (one warning) when it is not a
        one-output classifier's `(x, integer labels)`."""
        data = self.run.validation
        if data is None:
            return None
        if not data.usable:
            self._warn_once("validation_data is not an (x, y) pair; no per-class metrics or images")
            return None
        if not data.integer_labels():
            self._warn_once("validation labels are not integer classes; no per-class metrics")
            return None
        if data.is_dataset:
            out = self.model.predict(data.data, verbose=0)
            y = np.concatenate([np.asarray(b[1]).reshape(-1) for b in data.data])
        else:
            x, y = data.pair
            out = self.model.predict(x, verbose=0, batch_size=1000)
            y = np.asarray(y).reshape(-1)
        if isinstance(out, list | tuple | dict) or np.ndim(out) != 2 or y.size != len(out):
            self._warn_once("the model is not a one-output classifier; no per-class metrics")
            return None
        if data.images_at([]) is None:
            self._warn_once("validation inputs are not one batch of images; no example errors")
        return Classified(y, np.argmax(out, axis=-1), np.asarray(out))

    # --- the end --------------------------------------------------------------------------

    def on_train_end(self, logs=None):
        if self.state is None or not self._open:
            return
        self._open = False
        try:
            # A fit that ran out of epochs is not finished: a later fit with more
            # epochs continues from the saved epoch, like `initial_epoch`. The
            # last epoch's save already holds that state, unless fit ended early.
            epoch = int(self.epoch.numpy())
            failed = bool(self._diverged)
            self._disarm()
            try:
                if self._saved_epoch != epoch and not failed:
                    self._weights_checked(lambda: self.state.save_latest(epoch))
                # When the last epoch was the best, the model holds its weights already.
                if self.restore_best_weights and self.state.best_path and not self._at_best:
                    self.state.restore_best()
            except BaseException:
                failed = True
                raise
            finally:
                self.hooks.end(self.run, self._ended(failed=failed))
                self._train_scope.__exit__(None, None, None)
        finally:
            self.writers.close()
            self.state.close()
        if self._diverged:
            raise TrainingError(self._diverged)


def _finite(value) -> bool:
    """Whether a logged value (a float under Keras 3, else a tensor or array) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    return bool(np.all(np.isfinite(np.asarray(value))))


_WARNED: set[str] = set()


def _renamed(old: str, old_value, new: str, new_value):
    """The value of a renamed argument; the old name works for one release and warns once."""
    if old_value is None:
        return new_value
    if old not in _WARNED:
        _WARNED.add(old)
        warnings.warn(
            f"TensorBoardRun({old}=...) is deprecated; use {new}=... (the Trainer's name)",
            DeprecationWarning,
            stacklevel=3,
        )
    return old_value
