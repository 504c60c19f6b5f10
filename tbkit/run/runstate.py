"""`RunState`: every promise tbkit makes about a run directory, in one object.

`tbkit.Trainer`, `tbkit.keras.TensorBoardRun` and `train_mnist.py` all keep
their run through it, so each keeps the same guarantees:

- the best checkpoint (`checkpoints/best`, `tf.train.CheckpointManager`) is only
  ever replaced by a better value, also after a restart (its value is read back
  from disk);
- periodic checkpoints for resuming (`checkpoints/latest`) hold the model, the
  optimizer, the counters, the early-stopping state and whatever the caller adds;
  they never delete a best one;
- restoring finds checkpoints from their `.index` files (a garbage `checkpoint`
  state file hides nothing); a damaged newest one falls back to an older one
  with a line saying so; none readable is a refusal, never a silent fresh start;
- a damaged best with no older one, or a checkpoint of another architecture,
  is a refusal (`CheckpointError`, `ArchitectureError`);
- one process per run (a lock; a stale one is taken over), and what a killed
  process left half-written is removed under the lock;
- a failed checkpoint write (disk full, file too large) is one `CheckpointError`
  line that names the best checkpoint kept;
- no checkpoint ever holds a non-finite value: before each save every variable it
  holds is checked (a best: the model's; a latest: the optimizer's slots too;
  `tbkit.run.finite`), and a
  NaN or Inf stops the run with a `TrainingError` naming the first one, in
  layer order, whether or not it reached the loss;
- under `tf.distribute` only the chief writes into the run directory; another
  worker writes to a scratch directory, seeded with a copy of the chief's
  checkpoints so that it resumes from the same point, and removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

import tensorflow as tf

from tbkit.errors import ArchitectureError, CheckpointError, TrainingError, reason
from tbkit.run.checkpoints import (
    BestCheckpoint,
    EarlyStopping,
    check_architecture,
    checkpoint_candidates,
    model_weights,
    restore_newest_readable,
)
from tbkit.run.finite import FiniteCheck
from tbkit.run.rundir import RunDir


class RunState:
    """The checkpoints, counters and early stopping of one run directory.

    Args:
      run_dir: the run directory (`checkpoints/best`, `checkpoints/latest` go inside).
      model: the model whose weights the checkpoints hold.
      optimizer: its optimizer (built here if it is not yet), saved with the
        latest checkpoints; None for none.
      mode: `"max"` or `"min"`: which direction of the monitored value is better.
      min_delta: the margin an improvement must exceed.
      patience: stop after this many steps (or epochs: the caller's unit)
        without an improvement; None never stops.
      chief: False for a non-chief worker of a multi-worker strategy.
      extra: more trackables for the latest checkpoints, e.g. `{"epoch": var}`.
      names: `{id(variable): name}` used in architecture errors (default: checkpoint keys).
      max_to_keep: latest checkpoints kept (default 2, so a damaged newest has a fallback).
      log: where the one-line notices go (resume, fallbacks).
      unit: what a step of `record`/`save_latest` counts, for messages (default "step").

    Use it as a context manager, or call `open()` and `close()`:

      with RunState("logs/run1", model=model, optimizer=opt, patience=1000) as state:
          ...
          if state.record(val_acc, step): ...        # a new best, saved
          if state.should_stop(step): break
          state.save_latest(step)
    """

    def __init__(
        self,
        run_dir: str,
        *,
        model,
        optimizer=None,
        mode: str = "max",
        min_delta: float = 0.0,
        patience: int | None = None,
        chief: bool = True,
        extra: dict | None = None,
        names: dict[int, str] | None = None,
        max_to_keep: int = 2,
        log: Callable[[str], None] = print,
        unit: str = "step",
    ):
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, int) or patience <= 0
        ):
            raise ValueError(
                f"patience must be a positive integer or None. Received: patience={patience!r}"
            )
        self.run = RunDir(
            os.path.dirname(os.path.abspath(run_dir)), os.path.basename(os.path.abspath(run_dir))
        )
        self.model, self.optimizer = model, optimizer
        self.mode, self.min_delta, self.patience = mode, min_delta, patience
        self.chief, self.log, self.unit = chief, log, unit
        self._finite = FiniteCheck(model, optimizer, names)
        # A best holds the model's variables alone: its check reads no optimizer slot.
        self._finite_weights = FiniteCheck(model, None, names)
        self._extra, self._names, self._max_to_keep = dict(extra or {}), names, max_to_keep
        self._scratch: str | None = None
        self._open = False
        self.restored_from: str | None = None
        self.stopper = EarlyStopping(patience or 2**62, mode, min_delta)  # validates both
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.finished = tf.Variable(False, trainable=False, name="finished")

    # --- opening ------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The run directory (where summaries go, on every worker)."""
        return self.run.path

    @property
    def best_dir(self) -> str:
        return self._out.best_dir

    @property
    def latest_dir(self) -> str:
        return self._out.latest_dir

    def open(self) -> RunState:
        """Creates/locks the run directory and restores what it holds.

        Raises:
          RunDirError: the directory cannot be written, or another process holds it.
          CheckpointError: no readable latest checkpoint among several, or a
            damaged best one with no older best.
          ArchitectureError: a checkpoint of another model.
        """
        if self._open:
            return self
        if self.chief:
            self.run.create()
            self.run.lock()
            self._out = self.run
        else:
            self._scratch = tempfile.mkdtemp(prefix="tbkit-worker-")
            self._out = RunDir(self._scratch, self.run.name)
            chief_checkpoints = os.path.join(self.run.path, "checkpoints")
            if os.path.isdir(chief_checkpoints):
                # The chief's checkpoints, so that this worker restores the same state.
                shutil.copytree(
                    chief_checkpoints,
                    os.path.join(self._out.path, "checkpoints"),
                    ignore=shutil.ignore_patterns("*_temp", ".tmp-*"),
                )
            self._out.create()
        self._open = True
        try:
            if self.chief:
                self.run.remove_stale_temporaries()
            self._restore()
        except BaseException:
            self.close()
            raise
        return self

    def _restore(self) -> None:
        if self.optimizer is not None and not self.optimizer.built and self.model.built:
            self.optimizer.build(self.model.trainable_variables)
        weights = model_weights(self.model)  # a compiled model's optimizer stays out
        best_root = tf.train.Checkpoint(model=weights)
        on_disk = checkpoint_candidates(self._out.best_dir, "best")
        if on_disk:
            try:
                self._check_best(on_disk[0], best_root, weights)
            except ArchitectureError:  # a CheckpointError too: never taken for damage
                raise
            except CheckpointError:  # noqa: SIM105
                pass  # damaged: handled below, with the older bests
        self.best = BestCheckpoint(self._out.best_dir, self.mode, self.min_delta, model=weights)
        if on_disk and self.best.best_path != on_disk[0]:
            if self.best.best_path is None:
                raise CheckpointError(
                    f"{on_disk[0]}: the best checkpoint is damaged and there is no older one; "
                    "refusing to continue (move checkpoints/best away to start over)"
                )
            self.log(
                f"Best checkpoint {on_disk[0]} is damaged; using the older best {self.best.best_path}"
            )
        objects = dict(self._extra, model=self.model, step=self.step, finished=self.finished)
        objects["early_stopping"] = self.stopper
        if self.optimizer is not None:
            objects["optimizer"] = self.optimizer
        self.state = tf.train.Checkpoint(**objects)
        self.latest = tf.train.CheckpointManager(
            self.state,
            self._out.latest_dir,
            max_to_keep=self._max_to_keep,
            checkpoint_name="latest",
        )
        self.restored_from = restore_newest_readable(
            self.state,
            self._out.latest_dir,
            "latest",
            self.log,
            check=lambda p: check_architecture(p, self.state, self._names),
        )

    def _check_best(self, path: str, best_root, weights) -> None:
        try:
            check_architecture(path, best_root, self._names)
        except ArchitectureError as error:
            if weights is self.model:
                raise
            # A best written with the compiled model's optimizer inside (tbkit before
            # this release) keys the weights by their shorter path through the optimizer;
            # it restores all the same (by object graph), so check it with those keys.
            try:
                check_architecture(path, tf.train.Checkpoint(model=self.model), self._names)
            except ArchitectureError:
                raise error from None

    def __enter__(self) -> RunState:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Releases the lock (chief) or removes the scratch directory (other workers)."""
        if not self._open:
            return
        self._open = False
        if self.chief:
            self.run.unlock()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    # --- during the run -----------------------------------------------------------------

    @property
    def resumed(self) -> bool:
        """True when a latest checkpoint was restored."""
        return self.restored_from is not None

    @property
    def is_finished(self) -> bool:
        return bool(self.finished.numpy())

    @property
    def best_value(self) -> float | None:
        return self.best.best

    @property
    def best_step(self) -> int | None:
        return None if self.best.best is None else int(self.best.best_step.numpy())

    @property
    def best_path(self) -> str | None:
        return self.best.best_path

    def record(self, value: float, step: int) -> bool:
        """Counts `value` at `step` for early stopping; saves a best checkpoint if it is one.

        Returns:
          True when `value` is a new best (and its checkpoint is on disk).

        Raises:
          CheckpointError: the best checkpoint could not be written (one line).
          TrainingError: a model variable holds a NaN or an Inf (what a best holds).
        """
        self.check_finite(step, optimizer=False)
        improved = self.stopper.update(value, step)
        self._guarded(lambda: self.best.update(value, step), step)
        return improved

    def should_stop(self, step: int) -> bool:
        """True once `patience` steps passed without improvement (never without patience)."""
        return self.patience is not None and self.stopper.should_stop(step)

    def save_latest(self, step: int, finished: bool | None = None) -> str:
        """Writes a latest checkpoint at `step` (optionally marking the run finished).

        Raises:
          CheckpointError: the checkpoint could not be written (one line).
          TrainingError: a model or optimizer variable holds a NaN or an Inf.
        """
        self.check_finite(step)
        self.step.assign(step)
        if finished is not None:
            self.finished.assign(finished)
        return self._guarded(lambda: self.latest.save(checkpoint_number=step), step)

    def check_finite(self, step: int, optimizer: bool = True) -> None:
        """Raises `TrainingError` when a model (or, with `optimizer`, an optimizer)
        variable holds a NaN or an Inf.

        Run before every checkpoint on what it holds (a best: the model's variables; a
        latest: the optimizer's slots too), so none ever holds one; the message names
        the first such variable in layer order and the best checkpoint kept.
        """
        bad = (self._finite if optimizer else self._finite_weights).first_nonfinite()
        if bad is not None:
            raise TrainingError(nonfinite_message(bad, step, self.unit, self._kept_step()))

    def _kept_step(self) -> str:
        return f"{self.unit} {self.best_step}" if self.best_path else "none yet"

    def restore_best(self) -> str:
        """Loads the best checkpoint into the model; returns its path.

        Raises:
          CheckpointError: there is no best checkpoint.
        """
        if not self.best.best_path:
            raise CheckpointError(f"{self._out.best_dir}: no best checkpoint to restore")
        self.best.restore().assert_existing_objects_matched()
        return self.best.best_path

    def _guarded(self, save, step: int):
        try:
            return save()
        except (tf.errors.OpError, OSError) as e:
            kept = (
                f"{self.best.best_path} (value {self.best.best:.4f})"
                if self.best.best_path
                else "none yet"
            )
            raise CheckpointError(
                f"cannot write the checkpoint of step {step}: {reason(e)}. Best checkpoint kept: {kept}"
            ) from None

    def write_config(self, config: dict) -> None:
        """Writes `config.json` into the run directory (chief only; once per run)."""
        if self.chief and self.run.read_config() is None:
            self.run.write_config(config)


def nonfinite_message(variable: str, step: int, unit: str, kept: str) -> str:
    """The one line of a run stopped by a non-finite weight (both doors say the same)."""
    return (
        f"non-finite values (NaN or Inf) in {variable} at {unit} {step}; stopping before any "
        f"checkpoint holds them (lower the learning rate?). Best checkpoint kept: {kept}"
    )
