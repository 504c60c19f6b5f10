"""Training the MNIST CNN the tutorial's way, fully instrumented.

`train(TrainConfig(...))` validates every `eval_every` iterations, keeps the
best checkpoint, stops after `require_improvement` iterations without a better
validation accuracy, resumes an interrupted run exactly, and finally restores
the best checkpoint and evaluates it on the test set.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tbkit import images as tbi
from tbkit.checkpoints import (
    BestCheckpoint,
    EarlyStopping,
    checkpoint_candidates,
    restore_newest_readable,
)
from tbkit.config import _FIXED_ON_RESUME, TrainConfig  # noqa: F401 (re-exported)
from tbkit.datasets import mnist, train_dataset
from tbkit.distribute import (
    distribute,
    first_replica,
    is_chief,
    make_evaluator,
    make_strategy,
    make_train_step,
)
from tbkit.errors import CheckpointError, TbkitError
from tbkit.graph import write_graph
from tbkit.hparams import write_hparams
from tbkit.interrupt import Interrupted, InterruptFlag  # noqa: F401 (re-exported)
from tbkit.model import MnistCNN
from tbkit.rundir import RunDir, default_run_name
from tbkit.writers import RunWriters


@dataclasses.dataclass
class TrainResult:
    run_dir: str
    iterations: int
    best_step: int
    best_accuracy: float
    test_accuracy: float
    test_correct: int
    test_total: int
    early_stopped: bool
    confusion_matrix: np.ndarray
    timings: dict


def _versions() -> dict:
    import tensorboard

    import tbkit

    return {
        "tensorflow": tf.__version__,
        "tensorboard": tensorboard.__version__,
        "keras": keras.__version__,
        "tbkit": tbkit.__version__,
        "python": sys.version.split()[0],
    }


def train(config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Runs (or resumes, or re-evaluates) one training run; see the module docstring.

    Raises:
      ValueError: a setting is invalid.
      TbkitError: bad data, an unwritable or locked run directory, a checkpoint
        of another architecture. Nothing already in the run directory is lost.
    """
    config.validate()
    started = time.perf_counter()
    timings = dict.fromkeys(
        ("startup", "train_steps", "summaries", "validation", "checkpoints", "test"), 0.0
    )
    # The strategy before any other TF work (multi-worker collectives need that);
    # then the data: a bad data set must not leave anything in the run directory.
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    data = mnist.load(config.data_dir, config.validation_size, log=log)
    if config.batch_size > len(data.train_images):
        raise ValueError(
            f"batch_size must not exceed the {len(data.train_images)} training images. Received: batch_size={config.batch_size}"
        )

    run = RunDir(config.logdir, config.run_name or default_run_name())
    resuming = run.exists() and os.path.exists(run.config_path)
    stored = run.read_config() if resuming else None
    if stored:
        for key in _FIXED_ON_RESUME:
            given, before = getattr(config, key), stored["flags"].get(key)
            if key == "seed" and given is None:
                continue
            if given != before:
                raise TbkitError(
                    f"run {run.path} was started with {key}={before}; resuming with {given} would not continue it (use another --run-name)"
                )
        config = dataclasses.replace(config, seed=stored["seed"])
    seed = config.seed if config.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    if not chief:
        return _train_worker(config, run, data, seed, stored, started, timings, strategy)
    run.create()
    run.lock()
    try:
        run.remove_stale_temporaries()
        return _train(config, run, data, seed, stored, started, timings, log, strategy, run)
    finally:
        run.unlock()


def _train_worker(config, run, data, seed, stored, started, timings, strategy):
    """A non-chief worker: the same computation, written to a scratch copy that is removed."""
    with tempfile.TemporaryDirectory(prefix="tbkit-worker-") as scratch:
        own = RunDir(scratch, run.name)
        if os.path.isdir(os.path.join(run.path, "checkpoints")):
            shutil.copytree(
                os.path.join(run.path, "checkpoints"), os.path.join(own.path, "checkpoints")
            )
        own.create()
        return _train(
            config,
            run,
            data,
            seed,
            stored,
            started,
            timings,
            lambda _: None,
            strategy,
            own,
            chief=False,
        )


def _train(
    config, run, data, seed, stored, started, timings, log, strategy, out, chief=True
) -> TrainResult:
    """Trains; `run` is the real run directory, `out` where this process writes checkpoints."""
    keras.utils.set_random_seed(seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    with strategy.scope():
        return _train_in_scope(
            config, run, data, seed, stored, started, timings, log, strategy, out, chief
        )


def _train_in_scope(config, run, data, seed, stored, started, timings, log, strategy, out, chief):
    model = MnistCNN(logging=config.histograms)
    model(tf.zeros((1, 28, 28, 1)))
    # The rate decays smoothly by `lr_decay` every 1000 iterations; the schedule
    # reads the optimizer's own step counter, which the checkpoint restores.
    schedule = keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, 1000, config.lr_decay
    )
    optimizer = keras.optimizers.Adam(schedule if config.lr_decay < 1 else config.learning_rate)
    optimizer.build(model.trainable_variables)
    iteration = tf.Variable(0, dtype=tf.int64, trainable=False)
    finished = tf.Variable(False, trainable=False)
    window = tf.Variable(tf.zeros(3), trainable=False)  # sum of loss, accuracy, count
    stopper = EarlyStopping(config.require_improvement)

    for path in checkpoint_candidates(out.best_dir, "best")[:1]:
        try:
            model.check_checkpoint(path)
        except CheckpointError as e:
            if "different architecture" in str(e):
                raise
    best = BestCheckpoint(out.best_dir, model=model)
    best_on_disk = checkpoint_candidates(out.best_dir, "best")
    if best_on_disk and best.best_path != best_on_disk[0]:
        if best.best_path is None:
            raise CheckpointError(
                f"{best_on_disk[0]}: the best checkpoint is damaged and there is no older one; "
                "refusing to continue (move checkpoints/best away to start over)"
            )
        log(f"Best checkpoint {best_on_disk[0]} is damaged; using the older best {best.best_path}")
    state = tf.train.Checkpoint(
        model=model,
        optimizer=optimizer,
        iteration=iteration,
        finished=finished,
        train_window=window,
        early_stopping=stopper,
    )
    latest = tf.train.CheckpointManager(
        state, out.latest_dir, max_to_keep=2, checkpoint_name="latest"
    )
    restored = restore_newest_readable(
        state, out.latest_dir, "latest", log, check=model.check_checkpoint
    )
    if restored and not bool(finished.numpy()):
        log(f"Resuming from iteration {int(iteration.numpy())}")
    if stored is None and chief:
        write_hparams(run, config, seed)
        run.write_config(
            {
                "flags": dataclasses.asdict(config),
                "seed": seed,
                "versions": _versions(),
                "data": {
                    "source": data.source,
                    "sha256": dict(data.sha256),
                    "train": len(data.train_images),
                    "validation": len(data.validation_images),
                    "test": len(data.test_images),
                },
                "created": datetime.datetime.now().isoformat(timespec="seconds"),
            }
        )
    writers = RunWriters(run.path, enabled=chief)
    train_step = make_train_step(strategy, model, optimizer, window, config.batch_size)
    validate = make_evaluator(strategy, model, data.validation_images, data.validation_labels)
    test = make_evaluator(strategy, model, data.test_images, data.test_labels)

    timings["startup"] = time.perf_counter() - started
    early_stopped = False
    try:
        with writers.scope("train"):
            if not bool(finished.numpy()):
                early_stopped = _loop(
                    _LoopParts(
                        config, data, seed, model, iteration, window, stopper, best, latest,
                        writers, train_step, validate, strategy, timings, log,
                    )
                )  # fmt: skip
                finished.assign(True)
                t = time.perf_counter()
                _write_checkpoint(latest.save, int(iteration.numpy()), best)
                timings["checkpoints"] += time.perf_counter() - t
            else:
                log(
                    f"Run {run.name} already finished at iteration {int(iteration.numpy())}; evaluating its best checkpoint."
                )
                early_stopped = stopper.should_stop(int(iteration.numpy()))
        if not best.best_path:
            raise CheckpointError(f"{run.best_dir}: no best checkpoint to evaluate")
        t = time.perf_counter()
        status = best.restore()
        status.assert_existing_objects_matched()
        test_loss, test_pred = test()
        correct = int(np.sum(test_pred == data.test_labels))
        total = len(test_pred)
        cm = tbi.confusion_matrix(data.test_labels, test_pred, mnist.NUM_CLASSES)
        best_step = int(best.best_step.numpy())
        if chief and not tf.io.gfile.glob(os.path.join(run.path, "test", "events.*")):
            with writers.scope("test", step=best_step):
                tf.summary.scalar("accuracy", correct / total)
                tf.summary.scalar("loss", test_loss)
                if config.images:
                    tbi.confusion_matrix_summary(
                        "confusion_matrix", data.test_labels, test_pred, mnist.NUM_CLASSES
                    )
        timings["test"] = time.perf_counter() - t
    finally:
        writers.close()

    elapsed = time.perf_counter() - started
    log(f"Time usage: {datetime.timedelta(seconds=round(elapsed))}")
    parts = ("startup", "train_steps", "summaries", "validation", "checkpoints", "test")
    other = max(0.0, elapsed - sum(timings[k] for k in parts))
    log(
        "Time split: "
        + ", ".join(f"{k.replace('_', ' ')} {timings[k] / elapsed:.0%}" for k in parts)
        + f", other {other / elapsed:.0%}"
    )
    log(f"Accuracy on Test-Set: {correct / total:.1%} ({correct} / {total})")
    log("Confusion Matrix:")
    log(tbi.confusion_matrix_text(cm))
    timings["total"] = elapsed
    return TrainResult(
        run.path,
        int(iteration.numpy()),
        best_step,
        float(best.best or 0.0),
        correct / total,
        correct,
        total,
        early_stopped,
        cm,
        timings,
    )


@dataclasses.dataclass
class _LoopParts:
    """What the training loop works with, built once by `_train_in_scope`."""

    config: TrainConfig
    data: mnist.MnistData
    seed: int
    model: MnistCNN
    iteration: tf.Variable
    window: tf.Variable
    stopper: EarlyStopping
    best: BestCheckpoint
    latest: tf.train.CheckpointManager
    writers: RunWriters
    train_step: Callable
    validate: Callable
    strategy: tf.distribute.Strategy
    timings: dict
    log: Callable[[str], None]


def _loop(parts: _LoopParts) -> bool:
    """The training loop proper; returns True when it stopped early."""
    config, data, seed, model = parts.config, parts.data, parts.seed, parts.model
    iteration, window, stopper, best = parts.iteration, parts.window, parts.stopper, parts.best
    latest, writers, train_step, validate = (
        parts.latest,
        parts.writers,
        parts.train_step,
        parts.validate,
    )
    strategy, timings, log = parts.strategy, parts.timings, parts.log
    start = int(iteration.numpy())
    ds = distribute(
        strategy,
        train_dataset(
            data.train_images, data.train_labels, config.batch_size, seed, start_step=start
        ),
    )
    if start == 0:
        write_graph(
            train_step,
            tf.TensorSpec((config.batch_size, 28, 28, 1), tf.float32),
            tf.TensorSpec((config.batch_size,), tf.int32),
        )
    interactive = sys.stdout.isatty()
    bar = tqdm(
        total=config.num_iterations,
        initial=start,
        disable=not interactive,
        unit="it",
        dynamic_ncols=True,
        leave=False,
    )
    say = bar.write if interactive else log
    stopped_early = False
    pending, last_image = None, -(10**12)
    with InterruptFlag() as interrupt:
        it = iter(ds)
        for step in range(start + 1, config.num_iterations + 1):
            t = time.perf_counter()
            x, y = next(it)
            loss, acc = train_step(x, y)
            timings["train_steps"] += time.perf_counter() - t
            if step % config.summary_every == 0:
                t = time.perf_counter()
                model.summarize(step, first_replica(strategy, x))
                if config.images:
                    for name in ("layer_conv1", "layer_conv2"):
                        tbi.filters_summary(
                            f"{name}/filters", getattr(model, name).kernel.numpy(), step=step
                        )
                timings["summaries"] += time.perf_counter() - t
            if step % config.eval_every == 0:
                t = time.perf_counter()
                # `iteration` is only read by checkpoints, so it is set where one
                # may be written (an assign every step cost ~0.5 ms, 4% of a step).
                iteration.assign(step)
                loss_sum, acc_sum, count = window.numpy()
                if not np.isfinite(loss_sum):
                    # Checked at validation cadence (no per-step host sync); the
                    # latest checkpoint is not overwritten with diverged weights.
                    bar.close()
                    kept = (
                        f"iteration {int(best.best_step.numpy())}" if best.best_path else "none yet"
                    )
                    raise TbkitError(
                        f"the training loss became {loss_sum} between iterations {step - config.eval_every + 1} and "
                        f"{step}; stopping (lower --learning-rate?). Best checkpoint kept: {kept}"
                    )
                window.assign(tf.zeros(3))
                tf.summary.scalar("loss", loss_sum / count, step=step)
                tf.summary.scalar("accuracy", acc_sum / count, step=step)
                val_loss, val_pred = validate()
                val_acc = float(np.mean(val_pred == data.validation_labels))
                improved = stopper.update(val_acc, step)
                tv = time.perf_counter()
                _write_checkpoint(functools.partial(best.update, val_acc), step, best)
                ckpt_dt = time.perf_counter() - tv
                timings["checkpoints"] += ckpt_dt
                with writers.scope("validation", step=step):
                    tf.summary.scalar("loss", val_loss)
                    tf.summary.scalar("accuracy", val_acc)
                    tf.summary.scalar("best_accuracy", stopper.best)
                if improved and config.images:
                    # Rendering costs ~0.3 s: at most every --image-every iterations,
                    # and the final best always (below), so the kept model is pictured.
                    pending = (step, val_pred)
                    if step - last_image >= config.image_every:
                        _validation_images(writers, data, *pending)
                        last_image, pending = step, None
                say(
                    f"Iter: {step:>6}, Train-Batch Accuracy: {float(acc):>6.1%}, Validation Acc: {val_acc:>6.1%}{' *' if improved else ''}"
                )
                bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
                timings["validation"] += time.perf_counter() - t - ckpt_dt
                if stopper.should_stop(step):
                    say("No improvement found in a while, stopping optimization.")
                    stopped_early = True
            bar.update(1)
            if stopped_early:
                break
            if step % config.checkpoint_every == 0 or interrupt.signum is not None:
                t = time.perf_counter()
                iteration.assign(step)
                saved = _write_checkpoint(latest.save, step, best)
                timings["checkpoints"] += time.perf_counter() - t
            if interrupt.signum is not None:
                bar.close()
                writers.flush()
                name = signal.Signals(interrupt.signum).name
                raise Interrupted(
                    f"{name} received: stopped at iteration {step}, saved {saved}; run the same command again to resume",
                    128 + interrupt.signum,
                )
        else:
            iteration.assign(max(start, config.num_iterations))
    bar.close()
    if pending is not None:
        _validation_images(writers, data, *pending)
    return stopped_early


def _validation_images(writers, data, step: int, predictions) -> None:
    """The validation run's confusion matrix and example errors for one evaluation."""
    with writers.scope("validation", step=step):
        tbi.confusion_matrix_summary(
            "confusion_matrix", data.validation_labels, predictions, mnist.NUM_CLASSES
        )
        tbi.example_errors_summary(
            "example_errors", data.validation_images, data.validation_labels, predictions
        )


def _write_checkpoint(save, step: int, best: BestCheckpoint):
    """Runs a checkpoint write; a failed write (disk full, file too large, read-only)
    becomes one line that says the previous best is intact."""
    try:
        return save(step)
    except (tf.errors.OpError, OSError) as e:
        reason = (getattr(e, "message", None) or str(e)).strip().splitlines()[0][:200]
        kept = f"{best.best_path} (accuracy {best.best:.4f})" if best.best_path else "none yet"
        raise CheckpointError(
            f"cannot write the checkpoint of iteration {step}: {reason}. Best checkpoint kept: {kept}"
        ) from None
