"""Best-checkpoint keeping and early stopping.

The decision ("is this a new best?") is the pure function `is_improvement`;
saving is a separate step through `tf.train.CheckpointManager`. The state of
both (best value, its step, the step of the last improvement) lives in
`tf.Variable`s that are saved inside the checkpoints, so a restarted run
continues with the same patience and never overwrites a better best.
"""

from __future__ import annotations

import collections
import glob
import math
import os
import re

import keras
import tensorflow as tf

from tbkit.errors import ArchitectureError, CheckpointError

_MODES = ("max", "min")


def checkpoint_candidates(directory: str, prefix: str) -> list[str]:
    """Checkpoint prefixes `directory/prefix-N` found on disk, newest (largest N) first.

    Found from the `.index` files, not from the `checkpoint` state file, so a
    damaged state file cannot hide them.
    """
    found = []
    for index in glob.glob(os.path.join(glob.escape(directory), f"{prefix}-*.index")):
        m = re.fullmatch(rf"{re.escape(prefix)}-(\d+)\.index", os.path.basename(index))
        if m:
            found.append((int(m[1]), index[: -len(".index")]))
    return [path for _, path in sorted(found, reverse=True)]


def _reason(e: BaseException) -> str:
    text = (getattr(e, "message", None) or str(e)).strip()
    text = text.splitlines()[-1] if text else type(e).__name__
    return text[:160]


def restore_newest_readable(
    checkpoint: tf.train.Checkpoint, directory: str, prefix: str, log=print, check=None
) -> str | None:
    """Restores the newest checkpoint of `directory` that reads back whole.

    A damaged one (truncated, flipped bytes, unreadable) is reported in one line
    and the next older one is tried. `check(path)` may raise to refuse a
    checkpoint outright (e.g. another architecture).

    Returns:
      The restored prefix, or None when the directory holds no checkpoint.

    Raises:
      CheckpointError: checkpoints exist but none is readable (never a silent fresh start).
    """
    candidates = checkpoint_candidates(directory, prefix)
    for i, path in enumerate(candidates):
        try:
            if check is not None:
                check(path)
            checkpoint.restore(path).assert_existing_objects_matched()
        except ArchitectureError:
            raise
        except CheckpointError as e:
            failure = _reason(e)
        except (tf.errors.OpError, ValueError, AssertionError) as e:
            failure = _reason(e)
        else:
            if i:
                log(f"Restored the older checkpoint {path} instead")
            return path
        log(f"Checkpoint {path} is damaged ({failure}); trying an older one")
    if candidates:
        raise CheckpointError(
            f"{directory}: no readable checkpoint among {len(candidates)}; refusing to start over "
            "(move the directory away to start fresh)"
        )
    return None


class _ModelWeights(tf.__internal__.tracking.Trackable):
    """A model as `tf.train.Checkpoint(model=...)` sees it, without the optimizer that
    `compile` attaches to it: the same keys for everything else, so what it writes
    restores with an ordinary `tf.train.Checkpoint(model=fresh_model)`."""

    def __init__(self, model):
        self._model = model

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        children = self._model._trackable_children(save_type, **kwargs)  # noqa: SLF001
        optimizer = getattr(self._model, "optimizer", None)
        return {k: v for k, v in children.items() if optimizer is None or v is not optimizer}

    def _lookup_dependency(self, name, cached_dependencies=None):
        if cached_dependencies is None:
            cached_dependencies = self._trackable_children()
        return cached_dependencies.get(name)


def model_weights(model):
    """What a best checkpoint holds of `model`: its own variables, not a compiled
    model's optimizer (whose step and moments a restore of the best would rewind)."""
    if getattr(model, "optimizer", None) is None:
        return model
    return _ModelWeights(model)


def _escape(name: str) -> str:
    # How tf.train.Checkpoint escapes a local name inside a checkpoint key.
    return name.replace(".", "..").replace("/", ".S")


def checkpoint_shapes(root) -> dict[str, tuple[tuple, object]]:
    """`{checkpoint key: (shape, variable)}` of what saving `root` would write.

    Walks the object graph breadth-first, as `tf.train.Checkpoint` does, so a
    variable reachable along two paths gets the key of the shorter one.

    Args:
      root: a `tf.train.Checkpoint` (or any trackable) as used for saving.
    """
    view = tf.train.TrackableView(root)
    seen, out = {id(root)}, {}
    queue = collections.deque([(root, ())])
    while queue:
        obj, path = queue.popleft()
        for name, child in view.children(obj).items():
            if id(child) in seen:
                continue
            seen.add(id(child))
            key = path + (_escape(name),)
            if isinstance(child, (tf.Variable, keras.Variable)):
                out["/".join(key) + "/.ATTRIBUTES/VARIABLE_VALUE"] = (tuple(child.shape), child)
            queue.append((child, key))
    return out


def check_architecture(path: str, root, names: dict[int, str] | None = None) -> None:
    """Raises `ArchitectureError` unless checkpoint `path` fits `root` variable for variable.

    Args:
      path: a checkpoint prefix.
      root: the `tf.train.Checkpoint` the caller would restore it with.
      names: optional `{id(variable): readable name}` for the message (e.g.
        the recorder's tags); the checkpoint key is used otherwise.

    Raises:
      ArchitectureError: a variable is missing from the checkpoint or has another shape.
      CheckpointError: the checkpoint cannot be read at all.
    """
    try:
        stored = dict(tf.train.list_variables(path))
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({_reason(e)})") from None
    names = names or {}
    # The named variables (the model's own) first, so the message names a layer
    # rather than, say, an optimizer slot of the same shape.
    entries = sorted(checkpoint_shapes(root).items(), key=lambda kv: id(kv[1][1]) not in names)
    for key, (shape, var) in entries:
        label = names.get(id(var)) or key.split("/.ATTRIBUTES")[0]
        if key not in stored:
            raise ArchitectureError(
                f"{path}: checkpoint belongs to a different architecture: it has no "
                f"variable {label} (the model's has shape {list(shape)})"
            )
        if tuple(stored[key]) != shape:
            raise ArchitectureError(
                f"{path}: checkpoint belongs to a different architecture: {label} has "
                f"shape {list(stored[key])} in the checkpoint, {list(shape)} in the model"
            )


def is_improvement(
    value: float, best: float | None, mode: str = "max", min_delta: float = 0.0
) -> bool:
    """Whether `value` beats `best` by more than `min_delta`.

    Args:
      value: the new metric value; NaN or infinite never improves.
      best: the best so far, or None when there is none yet.
      mode: `"max"` (higher is better, e.g. accuracy) or `"min"` (e.g. loss).
      min_delta: the margin an improvement must exceed (>= 0).

    Returns:
      True if `value` is a new best.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be 'max' or 'min'. Received: mode={mode!r}")
    if min_delta < 0:
        raise ValueError(f"min_delta must be >= 0. Received: min_delta={min_delta}")
    if value is None or not math.isfinite(value):
        return False
    if best is None or not math.isfinite(best):
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


class _BestState(tf.Module):
    def __init__(self, mode: str, name=None):
        super().__init__(name=name)
        self.best_value = tf.Variable(
            -math.inf if mode == "max" else math.inf, dtype=tf.float64, trainable=False
        )
        self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False)

    @property
    def best(self) -> float | None:
        return None if int(self.best_step.numpy()) < 0 else float(self.best_value.numpy())


class EarlyStopping(_BestState):
    """Stops when the metric has not improved for `patience` steps.

    The state is a `tf.Module`: put it in the `tf.train.Checkpoint` used for
    resuming, and a restored run keeps counting from where it was.

    Args:
      patience: steps without improvement before stopping (positive).
      mode: `"max"` or `"min"`.
      min_delta: margin an improvement must exceed.

    Example:

      stopper = EarlyStopping(patience=1000)
      if stopper.update(val_acc, step): ...   # new best
      if stopper.should_stop(step): break
    """

    def __init__(self, patience: int, mode: str = "max", min_delta: float = 0.0):
        if not isinstance(patience, int) or patience <= 0:
            raise ValueError(f"patience must be a positive integer. Received: patience={patience}")
        is_improvement(0.0, None, mode, min_delta)  # validates mode and min_delta
        super().__init__(mode, name="early_stopping")
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.last_improvement = tf.Variable(0, dtype=tf.int64, trainable=False)

    def update(self, value: float, step: int) -> bool:
        """Records `value` at `step`; returns True if it is a new best."""
        if not is_improvement(value, self.best, self.mode, self.min_delta):
            return False
        self.best_value.assign(value)
        self.best_step.assign(step)
        self.last_improvement.assign(step)
        return True

    def should_stop(self, step: int) -> bool:
        """True once `patience` steps have passed since the last improvement."""
        return step - int(self.last_improvement.numpy()) >= self.patience


class BestCheckpoint(_BestState):
    """Saves a checkpoint with `tf.train.CheckpointManager` on each new best value.

    The checkpoint holds the given objects plus `best_value` and `best_step`,
    so it restores with an ordinary `tf.train.Checkpoint(model=...)` and the
    keeper reloads its best from disk on restart (it never overwrites a better
    checkpoint with a worse one).

    Args:
      directory: where checkpoints go, e.g. `RUN/checkpoints/best`.
      mode, min_delta: as in `is_improvement`.
      max_to_keep: how many of the most recent bests to keep (default 1).
      **objects: trackables to save, as for `tf.train.Checkpoint` (e.g. `model=model`).
    """

    def __init__(
        self,
        directory: str,
        mode: str = "max",
        min_delta: float = 0.0,
        max_to_keep: int = 1,
        **objects,
    ):
        is_improvement(0.0, None, mode, min_delta)
        if not objects:
            raise ValueError("BestCheckpoint needs at least one object to save, e.g. model=model")
        super().__init__(mode, name="best_checkpoint")
        self.directory, self.mode, self.min_delta = directory, mode, min_delta
        self.checkpoint = tf.train.Checkpoint(
            **objects, best_value=self.best_value, best_step=self.best_step
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=max_to_keep, checkpoint_name="best"
        )
        self._path = None
        # The newest best that reads back is the best (bests are only ever saved
        # on improvement); a damaged newer one is skipped, never silently lost.
        for path in checkpoint_candidates(directory, "best"):
            try:
                value = tf.train.load_variable(path, "best_value/.ATTRIBUTES/VARIABLE_VALUE")
                step = tf.train.load_variable(path, "best_step/.ATTRIBUTES/VARIABLE_VALUE")
            except (tf.errors.OpError, ValueError):
                continue
            self.best_value.assign(value)
            self.best_step.assign(step)
            self._path = path
            break

    @property
    def best_path(self) -> str | None:
        """Prefix of the best checkpoint on disk, or None."""
        return self._path

    def update(self, value: float, step: int) -> bool:
        """Saves a checkpoint if `value` is a new best; returns whether it did."""
        if not is_improvement(value, self.best, self.mode, self.min_delta):
            return False
        old_value, old_step = self.best_value.numpy(), self.best_step.numpy()
        self.best_value.assign(value)
        self.best_step.assign(step)
        try:
            self._path = self.manager.save(checkpoint_number=step)
        except BaseException:
            self.best_value.assign(old_value)
            self.best_step.assign(old_step)
            raise
        return True

    def restore(self):
        """Restores the best checkpoint into the objects; returns the load status."""
        if not self.best_path:
            raise FileNotFoundError(f"no best checkpoint in {self.directory}")
        return self.checkpoint.restore(self.best_path)

    def __repr__(self) -> str:
        return f"BestCheckpoint({os.fspath(self.directory)!r}, best={self.best}, step={int(self.best_step.numpy())})"
