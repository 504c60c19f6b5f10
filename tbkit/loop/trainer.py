"""`tbkit.Trainer`: a custom training loop for any Keras model, fully instrumented.

The loop of the classic tutorial, for your model and your `tf.data` pipeline:
validate every `eval_every` steps, keep the best checkpoint, stop after
`patience` steps without improvement, resume an interrupted run exactly,
record every layer's summaries at a cadence off the hot path, and evaluate the
restored best at the end. Its run directory keeps every promise of
`tbkit.RunState`; under a `tf.distribute` strategy only the chief writes.

Example:

  trainer = tbkit.Trainer(model, keras.optimizers.Adam(1e-3),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          "logs/run1", eval_every=200, patience=2000)
  result = trainer.fit(train_ds, val_ds, steps=20_000)
  print(result.best_value, result.best_step, result.best_checkpoint)
  print(trainer.evaluate(test_ds).accuracy)
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tbkit.checks import check_positive
from tbkit.errors import TrainingError, reason
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
from tbkit.loop.distribute import (
    distribute,
    first_replica,
    is_chief,
    make_evaluator,
    make_train_step,
)
from tbkit.loop.evaluation import write_test_run
from tbkit.loop.guard import loss_divergence
from tbkit.loop.interrupt import Interrupted, InterruptFlag
from tbkit.loop.results import Evaluation, FitResult, Validation
from tbkit.model.recorder import LayerRecorder
from tbkit.run.runstate import RunState
from tbkit.run.writers import RunWriters
from tbkit.summary import dynamics as tbd
from tbkit.summary import images as tbi
from tbkit.summary.classes import (
    check_class_names,
    class_count,
    model_classes,
)
from tbkit.summary.graph import write_graph

_MONITORS = ("auto", "accuracy", "loss")


class Trainer:
    """Trains a Keras model in a compiled custom loop with tbkit's run semantics.

    Args:
      model: a built Keras model (any kind: Sequential, functional, subclassed).
      optimizer: a Keras optimizer (learning-rate schedules included).
      loss: a Keras loss or a callable `(y_true, y_pred) -> per-example losses`.
      run_dir: the run directory (`train/`, `validation/`, `test/`, `checkpoints/`).
      monitor: `"accuracy"` (validation accuracy, for integer labels),
        `"loss"` (validation loss) or `"auto"` (default): accuracy for a
        classifier with integer labels, else loss.
      eval_every: validate every N steps (default 100).
      patience: stop after N steps without a better monitored value (default
        1000; None never stops early).
      min_delta: the margin an improvement must exceed (default 0).
      summary_every: record the layer summaries every N steps (default 100).
      checkpoint_every: write a latest checkpoint every N steps (default 500).
      image_every: validation images at improvements at most every N steps
        (default 500; the final best is always pictured), and the filter grids
        at the first summary step of the run and the first at or after each
        multiple of N.
      histograms, images: write histograms / image summaries (default True).
      dynamics: record the training dynamics at the summary cadence (gradient
        norms, update ratios, zero / dead activation fractions, global gradient
        norm, learning rate) and write the `health` findings at each
        validation (default True). The recording steps run a second compiled
        variant of the train step; the others pay nothing.
      gradient_histograms: also write each gradient's histogram (default True;
        needs `histograms` and `dynamics`).
      jit_compile: compile the train step with XLA (one replica only).
      profile_steps: `"A:B"` or `(A, B)`: trace TensorFlow's profiler from step
        A to step B (included) into the run's `train/` directory, for
        TensorBoard's Profile tab (`pip install "tbkit[profile]"`). Chief only;
        other steps pay nothing.
      projector_examples: for a classifier with validation data, embed this many
        validation examples (a seeded sample) for TensorBoard's Projector at the
        end of `fit`, with the best checkpoint's weights (default 1000; 0: none).
      projector_layer: the layer whose output is embedded (default: the input of
        the model's last layer with weights, i.e. what the classifier head reads).
      projector_every: also embed the current weights at every validation that
        falls on a multiple of N steps (default None: only the best, at the end).
      class_metrics: per-class scalars and PR curves at every validation
        (default True; the test run always has them).
      class_names: names of the classes for the confusion matrix, per-class
        scalars, PR curves and the projector's metadata.
      strategy: the `tf.distribute` strategy the model was built under (default: the current one).
      hparams: a dict of hyperparameters for TensorBoard's HParams tab (optional).
      config: a JSON-able dict written to `config.json` when the run starts (optional).
      hooks: more `tbkit.Hook`s, run after tbkit's own on every event of the run
        (see `tbkit.hooks`): e.g. to stop a run or report it elsewhere.
      on_validation: called with a `Validation` after each validation (e.g. to print).
      log: where one-line notices go (resume, damaged checkpoints); default `print`.
      progress: show a tqdm progress bar when the output is a terminal (default True).
    """

    def __init__(
        self,
        model,
        optimizer,
        loss,
        run_dir: str,
        *,
        monitor: str = "auto",
        eval_every: int = 100,
        patience: int | None = 1000,
        min_delta: float = 0.0,
        summary_every: int = 100,
        checkpoint_every: int = 500,
        image_every: int = 500,
        histograms: bool = True,
        images: bool = True,
        dynamics: bool = True,
        gradient_histograms: bool = True,
        class_metrics: bool = True,
        jit_compile: bool = False,
        profile_steps=None,
        projector_examples: int = 1000,
        projector_layer: str | None = None,
        projector_every: int | None = None,
        class_names=None,
        strategy: tf.distribute.Strategy | None = None,
        hparams: dict | None = None,
        config: dict | None = None,
        hooks: Iterable[Hook] = (),
        on_validation: Callable[[Validation], None] | None = None,
        log: Callable[[str], None] = print,
        progress: bool = True,
    ):
        for name in ("eval_every", "summary_every", "checkpoint_every", "image_every"):
            check_positive(name, locals()[name])
        check_positive("patience", patience, allow_none=True)
        if monitor not in _MONITORS:
            raise ValueError(
                f"monitor must be one of {', '.join(_MONITORS)}. Received: monitor={monitor!r}"
            )
        if not getattr(model, "built", False):
            raise ValueError(
                f"build the model first (call it on a batch): {model.name} is not built"
            )
        self.model, self.optimizer, self.loss = model, optimizer, loss
        self.run_dir, self.monitor, self.min_delta = os.fspath(run_dir), monitor, min_delta
        self.eval_every, self.patience = eval_every, patience
        self.summary_every, self.checkpoint_every = summary_every, checkpoint_every
        self.image_every, self.histograms, self.images = image_every, histograms, images
        self.dynamics, self.jit_compile = dynamics, jit_compile
        self.class_metrics = class_metrics
        self.class_names = check_class_names(class_names, model_classes(model))
        self.strategy = strategy or tf.distribute.get_strategy()
        self.on_validation, self.progress = on_validation, progress
        self._log = log
        self.chief = is_chief(self.strategy)
        self.hooks = Hooks(
            [
                *default_hooks(
                    images=images, image_every=image_every, class_metrics=class_metrics,
                    projector_examples=projector_examples, projector_layer=projector_layer,
                    projector_every=projector_every, profile_steps=profile_steps,
                    config=config, hparams=hparams,
                ),
                *hooks,
            ]
        )  # fmt: skip
        self.hooks.check(model)  # e.g. a wrong projector layer fails now, not after training
        self.recorder = LayerRecorder(
            model, histograms=histograms, images=images,
            gradient_histograms=gradient_histograms and dynamics, activation_fractions=dynamics,
        )  # fmt: skip
        self.timings = dict.fromkeys(
            ("train_steps", "summaries", "validation", "checkpoints", "test"), 0.0
        )
        # Start-up on the critical path: the first plain step and the first recorded one
        # (train step + recording) of this trainer, each tracing its functions (None: none yet).
        self.timings.update(first_step=None, first_recorded_step=None)
        self._state: RunState | None = None
        self._classifier: bool | None = None
        self._say = log

    # --- the run state ------------------------------------------------------------------

    def _run_state(self, mode: str) -> RunState:
        if self._state is None:
            with self.strategy.scope():
                names = {id(v): tag for tag, v in self.recorder.tags.items()}
                self._window = tf.Variable(tf.zeros(4), trainable=False, name="train_window")
                self._state = RunState(
                    self.run_dir,
                    model=self.model,
                    optimizer=self.optimizer,
                    mode=mode,
                    min_delta=self.min_delta,
                    patience=self.patience,
                    chief=self.chief,
                    extra={"train_window": self._window},
                    names=names,
                    log=self._log,
                )
        return self._state

    @property
    def state(self) -> RunState | None:
        """The `RunState` of the last `fit`/`evaluate` (None before either)."""
        return self._state

    def _resolve_monitor(self, spec) -> str:
        labels = spec[1] if isinstance(spec, tuple) and len(spec) == 2 else None
        classifier = isinstance(labels, tf.TensorSpec) and labels.dtype.is_integer
        if self._classifier is None:
            self._classifier = classifier
        if self.monitor == "accuracy" and not classifier:
            raise ValueError(
                "monitor='accuracy' needs integer class labels; use monitor='loss' for this data"
            )
        return self.monitor if self.monitor != "auto" else ("accuracy" if classifier else "loss")

    def _multi_worker(self) -> bool:
        extended = self.strategy.extended
        return bool(getattr(extended, "_in_multi_worker_mode", lambda: False)())

    # --- training -----------------------------------------------------------------------

    def fit(self, train_data, validation_data=None, *, steps: int) -> FitResult:
        """Trains up to `steps` steps (resuming where the run directory stands).

        The last step is always validated and recorded, also off the cadences, so
        a short fit ends with a best checkpoint. Calling `fit` again (with a
        larger `steps`) continues the same run.

        Args:
          train_data: a `tf.data.Dataset` of `(x, y)` batches (repeated as
            needed; a resumed run skips the batches already trained on), or a
            function `start_step -> dataset` that starts there directly.
          validation_data: a finite `tf.data.Dataset` of `(x, y)` batches. Without
            it the monitored value is the training loss over each `eval_every` window.
          steps: the step to train up to (counted from the run's start).

        Returns:
          A `FitResult`.

        Raises:
          TbkitError (and subclasses): run directory, checkpoints, a diverged run.
          Interrupted: SIGINT/SIGTERM, after saving a checkpoint.
        """
        check_positive("steps", steps)
        spec_source = train_data(0) if callable(train_data) else train_data
        self._element_spec = spec_source.element_spec
        if self.class_names is not None and model_classes(self.model) is None:
            # A subclassed model says its classes only when traced on its inputs.
            spec = spec_source.element_spec
            check_class_names(self.class_names, model_classes(self.model, spec[0]))
        monitor = self._resolve_monitor(spec_source.element_spec)
        if validation_data is None and monitor == "accuracy":
            monitor = "loss"
        state = self._run_state("max" if monitor == "accuracy" else "min")
        with self.strategy.scope(), state:
            start = int(state.step.numpy())
            if state.resumed and not state.is_finished:
                self._log(f"Resuming from step {start}")
            writers = RunWriters(state.path, enabled=self.chief)
            # A compiled recorder holds the writer it was traced with: a second fit on
            # this Trainer writes through new writers, so it traces anew.
            self.recorder.reset()
            run = Run(
                path=state.path, model=self.model, state=state, writers=writers,
                recorder=self.recorder, chief=self.chief, multi_worker=self._multi_worker(),
                unit="step", classifier=bool(self._classifier), classes=model_classes(self.model),
                class_names=self.class_names, dynamics=self.dynamics, monitor=monitor,
                validation=ValidationData(validation_data) if validation_data is not None else None,
                log=self._log,
            )  # fmt: skip
            step, early, failed = start, state.is_finished and state.should_stop(start), True
            finished = early or start >= steps
            # A finished run trains nothing: no train writer (no empty event file per call).
            scope = contextlib.nullcontext() if finished else writers.scope("train")
            try:
                with scope:
                    self.hooks.begin(run)
                    try:
                        if finished:
                            self._log(
                                f"Run {os.path.basename(state.path)} already finished at step {start}"
                            )
                        else:
                            step, early = self._loop(
                                run, train_data, spec_source, validation_data, start, steps
                            )
                            t = time.perf_counter()
                            self._weights_checked(
                                run, lambda: state.save_latest(step, finished=True), step
                            )
                            self.timings["checkpoints"] += time.perf_counter() - t
                        failed = False
                    finally:
                        t = time.perf_counter()
                        self.hooks.end(
                            run,
                            Ended(step=step, count=step, best_step=state.best_step,
                                  best_path=state.best_path, early_stopped=bool(early),
                                  failed=failed),
                        )  # fmt: skip
                        self.timings["validation"] += time.perf_counter() - t
            finally:
                writers.close()
            resumed_from = start if state.resumed and not finished else None
            return FitResult(
                steps=step,
                best_value=state.best_value,
                best_step=state.best_step,
                best_checkpoint=state.best_path,
                monitor=monitor,
                early_stopped=bool(early),
                resumed_from=resumed_from,
                timings=dict(self.timings),
            )

    def _loop(self, run, train_data, spec_source, validation_data, start, steps):
        state = run.state
        if callable(train_data):
            ds = train_data(start)
        else:
            ds = train_data.repeat().skip(start) if start else train_data.repeat()
        ds = distribute(self.strategy, ds)
        train_step = make_train_step(
            self.strategy, self.model, self.optimizer, self.loss, self._window, self._classifier,
            jit_compile=self.jit_compile, probe=self.recorder,
        )  # fmt: skip
        self._train_step = train_step
        validate = (
            make_evaluator(self.strategy, self.model, validation_data, self.loss, self._classifier)
            if validation_data is not None
            else None
        )
        if start == 0:
            write_graph(train_step, *spec_source.element_spec)
        # The recording variant is traced (~1 s) in a thread while the first plain steps
        # run, not on the first recorded step. One device only: a strategy's scope and
        # replica context belong to this thread.
        first_record = min((start // self.summary_every + 1) * self.summary_every, steps)
        tracer = (
            train_step.trace_recording(*spec_source.element_spec)
            if self.dynamics
            and first_record - start >= 2
            and not tf.distribute.has_strategy()
            and self.strategy is tf.distribute.get_strategy()
            else None
        )
        interactive = self.progress and sys.stdout.isatty()
        bar = tqdm(total=steps, initial=start, disable=not interactive, unit="step",
                   dynamic_ncols=True, leave=False)  # fmt: skip
        self._say = bar.write if interactive else self._log
        stopped, step, saved = False, start, None
        self._checked = start
        hooks = self.hooks
        use_signals = threading.current_thread() is threading.main_thread()
        flag = InterruptFlag() if use_signals else None
        try:
            if flag:
                flag.__enter__()
            it = iter(ds)
            for step in range(start + 1, steps + 1):
                t = time.perf_counter()
                # The last step of a fit is always recorded and validated: a fit shorter
                # than the cadences (or ending off them) still ends measured.
                last = step == steps
                record = step % self.summary_every == 0 or last
                hooks.step_begin(run, step)
                try:
                    x, y = next(it)
                    if record and self.dynamics:
                        _, batch_acc, dyn = train_step.recording(x, y)
                    else:
                        (_, batch_acc), dyn = train_step(x, y), None
                except tf.errors.OpError as e:  # not an event-file failure: say what failed
                    raise TrainingError(
                        f"the train step failed at step {step}: {reason(e)}"
                    ) from None
                stepped = time.perf_counter() - t
                self.timings["train_steps"] += stepped
                if record:
                    t = time.perf_counter()
                    hooks.record(
                        run,
                        Recording(step, first_replica(self.strategy, x), dyn,
                                  filters=self._draws_filters(step)),
                    )  # fmt: skip
                    recorded = time.perf_counter() - t
                    self.timings["summaries"] += recorded
                    if self.timings["first_recorded_step"] is None:
                        self.timings["first_recorded_step"] = stepped + recorded
                elif self.timings["first_step"] is None:
                    self.timings["first_step"] = stepped
                hooks.step_end(run, step)
                if step % self.eval_every == 0 or last:
                    t = time.perf_counter()
                    self._validate(run, validate, step, batch_acc)
                    self.timings["validation"] += time.perf_counter() - t
                    if state.should_stop(step):
                        stopped = True
                    elif run.stop_reason is not None:
                        self._log(f"Stopping at step {step}: {run.stop_reason}")
                        stopped = True
                bar.update(1)
                if stopped:
                    break
                signum = flag.signum if flag else None
                if step % self.checkpoint_every == 0 or signum is not None:
                    t = time.perf_counter()
                    self._check_finite(run, step)
                    saved = self._weights_checked(run, lambda at=step: state.save_latest(at), step)
                    self.timings["checkpoints"] += time.perf_counter() - t
                if signum is not None:
                    bar.close()
                    run.writers.flush()
                    name = signal.Signals(signum).name
                    raise Interrupted(
                        f"{name} received: stopped at step {step}, saved {saved}; run the same command again to resume",
                        128 + signum,
                    )
        finally:
            if tracer is not None:
                tracer.join()
            if flag:
                flag.__exit__(None, None, None)
            bar.close()
            self._say = self._log
        return step, stopped

    def _diverge(self, run, step: int, lines: list[str], message: str):
        """Shows the divergence in TensorBoard (the hooks), then raises its one line."""
        self.hooks.diverged(run, Diverged(step=step, lines=tuple(lines), message=message))
        raise TrainingError(message)

    def _weights_checked(self, run, save, step: int):
        """A checkpoint write of the run state; a non-finite weight it refuses is a divergence."""
        try:
            return save()
        except TrainingError as e:
            self._diverge(run, step, [str(e)], str(e))

    def _check_finite(self, run, step: int, loss_sum: float | None = None) -> None:
        """Raises `TrainingError` if the loss since the last check is not finite.

        Called before each validation and each latest checkpoint (no per-step host
        sync). The error names the first step whose loss was not finite (the train
        step's guard notes it) and the first variable, in layer order, whose value
        was non-finite at that step, else the first whose gradient was. (The
        weights themselves are checked before every checkpoint by the run state,
        whether or not a NaN reached the loss.)
        """
        if loss_sum is None:
            loss_sum = float(self._window[0].numpy())
        guard = self._train_step.first_nonfinite()
        if math.isfinite(loss_sum) and guard is None:
            self._train_step.reset_guard()
            self._checked = step
            return
        state = run.state
        kept = f"step {state.best_step}" if state.best_path else "none yet"
        lines, message = loss_divergence(loss_sum, guard, self._checked, step, self.recorder, kept)
        self._diverge(run, step, lines, message)

    def _draws_filters(self, step: int) -> bool:
        """Filter grids at the image cadence: the first recording of a run and the
        first recording at or after each multiple of `image_every` (a rule of the
        step alone, so a resumed run draws them where an uninterrupted one does)."""
        previous = step - self.summary_every
        return previous <= 0 or step // self.image_every != previous // self.image_every

    def _validate(self, run, validate, step, batch_acc) -> None:
        state = run.state
        loss_sum, correct, count, batches = (float(v) for v in self._window.numpy())
        self._check_finite(run, step, loss_sum)
        self._window.assign(tf.zeros(4))
        train_loss = loss_sum / max(batches, 1)
        train_acc = correct / count if self._classifier and count else None
        tf.summary.scalar("loss", train_loss, step=step)
        if train_acc is not None:
            tf.summary.scalar("accuracy", train_acc, step=step)
        found = tbd.findings(self.recorder.latest) if self.dynamics else []
        classified = None
        if validate is not None:
            val_loss, labels, pred, scores = validate()
            val_acc = float(np.mean(pred == labels)) if labels is not None else None
            if labels is not None:
                classified = Classified(labels, pred, scores)
        else:
            val_loss, val_acc = train_loss, None
        value = val_acc if run.monitor == "accuracy" else val_loss
        t = time.perf_counter()
        improved = self._weights_checked(run, lambda: state.record(value, step), step)
        ckpt = time.perf_counter() - t
        self.timings["checkpoints"] += ckpt
        self.timings["validation"] -= ckpt
        if validate is not None:
            with run.writers.scope("validation", step=step):
                tf.summary.scalar("loss", val_loss)
                if val_acc is not None:
                    tf.summary.scalar("accuracy", val_acc)
                tf.summary.scalar(f"best_{run.monitor}", state.best_value)
        self.hooks.validation(
            run,
            Validated(
                step=step, count=step, loss=val_loss, accuracy=val_acc, value=value,
                improved=improved, best_value=state.best_value, best_step=state.best_step,
                findings=tuple(found), train_loss=train_loss, train_accuracy=train_acc,
                classify=lambda: classified,
            ),
        )  # fmt: skip
        if self.on_validation is not None:
            self.on_validation(
                Validation(
                    step=step,
                    train_loss=train_loss,
                    train_accuracy=train_acc,
                    batch_accuracy=float(batch_acc) if self._classifier else None,
                    loss=val_loss,
                    accuracy=val_acc,
                    value=value,
                    improved=improved,
                    best_value=state.best_value,
                    best_step=state.best_step,
                    findings=found,
                )
            )

    def say(self, line: str) -> None:
        """Prints `line` through the progress bar while one is shown (else through `log`)."""
        self._say(line)

    def _num_classes(self, labels, pred) -> int:
        return class_count(model_classes(self.model), self.class_names, labels, pred)

    # --- evaluation ---------------------------------------------------------------------

    def export(self, path, signature=None, *, outputs: str = "auto", preprocess=None) -> str:
        """Writes the run's best checkpoint as a SavedModel for serving (no tbkit needed to
        load it): `serving_default` takes `signature` (default: the training data's inputs
        with any batch size) and returns `probabilities` and `classes` for a classifier
        (`outputs="auto"`: the loss's `from_logits` says whether the model outputs logits),
        else `outputs`. Written through a temporary directory renamed into place.

        Raises:
          ExportError: `path` exists and is not empty, is not writable, or no signature.
          CheckpointError: the run has no best checkpoint.
        """
        from tbkit.loop import export as tbe

        if signature is None:
            spec = getattr(self, "_element_spec", None)
            if spec is None:
                raise tbe.ExportError(
                    "pass signature=tf.TensorSpec(...): this Trainer has not seen its data"
                )
            signature = tbe.signature_of(spec)
        if outputs == "auto":
            if self._classifier is False:
                outputs = "raw"
            else:
                outputs = "logits" if getattr(self.loss, "from_logits", False) else "probabilities"
        tbe.check_target(path)
        spec = getattr(self, "_element_spec", None)
        monitor = self._resolve_monitor(spec) if spec is not None else self.monitor
        state = self._run_state("min" if monitor == "loss" else "max")
        with self.strategy.scope(), state:
            state.restore_best()
            return tbe.export_saved_model(
                self.model, path, signature, preprocess=preprocess, outputs=outputs
            )

    def evaluate(self, test_data) -> Evaluation:
        """Restores the best checkpoint and evaluates it on `test_data`.

        Writes `accuracy`, `loss`, the per-class scalars and `confusion_matrix`
        to the `test` run at the best step (once per run).

        Args:
          test_data: a finite `tf.data.Dataset` of `(x, y)` batches.

        Raises:
          CheckpointError: the run has no best checkpoint.
        """
        monitor = self._resolve_monitor(test_data.element_spec)
        state = self._run_state("max" if monitor == "accuracy" else "min")
        t = time.perf_counter()
        with self.strategy.scope(), state:
            state.restore_best()
            evaluate = make_evaluator(
                self.strategy, self.model, test_data, self.loss, self._classifier
            )
            loss, labels, pred, scores = evaluate()
            step = state.best_step
            total = len(labels) if labels is not None else 0
            correct = int(np.sum(pred == labels)) if labels is not None else None
            acc = correct / total if labels is not None else None
            cm = (
                tbi.confusion_matrix(labels, pred, self._num_classes(labels, pred))
                if labels is not None
                else None
            )
            if self.chief:
                write_test_run(
                    state.path, step, loss,
                    (labels, pred, scores) if labels is not None else None,
                    classes=len(cm) if cm is not None else 0, class_names=self.class_names,
                    images=self.images,
                )  # fmt: skip
        self.timings["test"] += time.perf_counter() - t
        return Evaluation(step, loss, acc, correct, total, labels, pred, cm)
