"""The MNIST application: the tutorial's program, as a client of `tbkit.Trainer`.

`train(TrainConfig(...))` loads verified MNIST, builds the tutorial's CNN and
hands both to `tbkit.Trainer`, which validates every `eval_every` iterations,
keeps the best checkpoint, stops after `require_improvement` iterations
without a better validation accuracy, and resumes an interrupted run exactly.
Then the best checkpoint is evaluated on the test set. Everything MNIST (the
data, the shapes, the class count, the console lines) lives here, not in the engine.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tbkit.app import settings
from tbkit.app.models import make_model
from tbkit.app.settings import TrainConfig
from tbkit.datasets import eval_dataset, mnist, train_dataset
from tbkit.errors import TbkitError
from tbkit.loop.distribute import is_chief, make_strategy
from tbkit.loop.trainer import Trainer, Validation
from tbkit.run.rundir import RunDir, default_run_name
from tbkit.summary import images as tbi


@dataclasses.dataclass
class TrainResult:
    run_dir: str
    iterations: int
    best_step: int
    best_accuracy: float
    test_accuracy: float | None  # None: the test set was not read (a search's trial)
    test_correct: int | None
    test_total: int | None
    early_stopped: bool
    confusion_matrix: np.ndarray | None
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


def _set_determinism(on: bool) -> None:
    if on:
        tf.config.experimental.enable_op_determinism()
    else:  # a process may train several runs (tests): switch it back off
        from tensorflow.python.framework import config as tf_config

        if tf_config.is_op_determinism_enabled():
            tf_config.disable_op_determinism()


def train(
    config: TrainConfig,
    log: Callable[[str], None] = print,
    *,
    hooks=(),
    test: bool = True,
    extra_config: dict | None = None,
    hparams: bool = True,
) -> TrainResult:
    """Runs (or resumes, or re-evaluates) one training run; see the module docstring.

    Args:
      config: the run's settings.
      log: where the console lines go.
      hooks: more `tbkit.Hook`s for the run (a search's pruning hook).
      test: evaluate the restored best on the test set at the end (False for a
        search's trials: the test set is read once, for the winner).
      extra_config: more entries for `config.json` (e.g. the search and trial).
      hparams: write the run's own HParams experiment and session (False for a
        search's trials, whose sessions the search writes under its experiment).

    Raises:
      ValueError: a setting is invalid.
      TbkitError: bad data, an unwritable or locked run directory, a checkpoint
        of another architecture. Nothing already in the run directory is lost.
    """
    config.validate()
    started = time.perf_counter()
    # The strategy before any other TF work (multi-worker collectives need that);
    # then the data: a bad data set must not leave anything in the run directory.
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    if not chief:
        log = lambda _: None  # noqa: E731 (the chief speaks for the cluster)
    data = mnist.load(config.data_dir, config.validation_size, log=log)
    if config.batch_size > len(data.train_images):
        raise ValueError(
            f"batch_size must not exceed the {len(data.train_images)} training images. Received: batch_size={config.batch_size}"
        )

    run = RunDir(config.logdir, config.run_name or default_run_name())
    stored = run.read_config() if run.exists() else None
    if stored:
        conflict = settings.resume_conflict(config, stored["flags"])
        if conflict:
            raise TbkitError(
                f"run {run.path} was started with {conflict}={stored['flags'].get(conflict)}; resuming "
                f"with {getattr(config, conflict)} would not continue it (use another --run-name)"
            )
        config = dataclasses.replace(config, seed=stored["seed"])
    seed = config.seed if config.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    keras.utils.set_random_seed(seed)
    _set_determinism(config.deterministic)

    with strategy.scope():
        model = make_model(config.model, logging=config.histograms)
        # The rate decays smoothly by `lr_decay` every 1000 iterations; the schedule
        # reads the optimizer's own step counter, which the checkpoints restore.
        rate = config.learning_rate
        if config.lr_decay < 1:
            rate = keras.optimizers.schedules.ExponentialDecay(rate, 1000, config.lr_decay)
        optimizer = keras.optimizers.Adam(rate)

    def tutorial_line(v: Validation) -> None:
        trainer.say(
            f"Iter: {v.step:>6}, Train-Batch Accuracy: {v.batch_accuracy:>6.1%}, "
            f"Validation Acc: {v.accuracy:>6.1%}{' *' if v.improved else ''}"
        )

    trainer = Trainer(
        model,
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run.path,
        monitor="accuracy",
        eval_every=config.eval_every,
        patience=config.require_improvement,
        summary_every=config.summary_every,
        checkpoint_every=config.checkpoint_every,
        image_every=config.image_every,
        histograms=config.histograms,
        images=config.images,
        profile_steps=config.profile_steps,
        projector_examples=config.projector_examples,
        projector_layer=config.projector_layer,
        projector_every=config.projector_every,
        strategy=strategy,
        hparams=settings.hparams(config, seed) if hparams else None,
        config={
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
            **(extra_config or {}),
        },
        hooks=hooks,
        on_validation=tutorial_line,
        log=log,
    )

    def train_data(start_step: int) -> tf.data.Dataset:
        return train_dataset(
            data.train_images, data.train_labels, config.batch_size, seed,
            start_step=start_step, max_shift=config.augment_shift,
        )  # fmt: skip

    startup = time.perf_counter() - started
    fit = trainer.fit(
        train_data,
        eval_dataset(data.validation_images, data.validation_labels),
        steps=config.num_iterations,
    )
    if fit.early_stopped and fit.timings["train_steps"] > 0:
        log("No improvement found in a while, stopping optimization.")
    result = TrainResult(
        run_dir=run.path,
        iterations=fit.steps,
        best_step=fit.best_step,
        best_accuracy=float(fit.best_value or 0.0),
        test_accuracy=None,
        test_correct=None,
        test_total=None,
        early_stopped=fit.early_stopped,
        confusion_matrix=None,
        timings=dict(trainer.timings, startup=startup),
    )
    if not test:
        return result
    evaluation = trainer.evaluate(eval_dataset(data.test_images, data.test_labels))

    elapsed = time.perf_counter() - started
    timings = dict(trainer.timings, startup=startup)
    log(f"Time usage: {datetime.timedelta(seconds=round(elapsed))}")
    parts = ("startup", "train_steps", "summaries", "validation", "checkpoints", "test")
    other = max(0.0, elapsed - sum(timings[k] for k in parts))
    log(
        "Time split: "
        + ", ".join(
            f"{k.replace('_', ' ')} {timings[k] / elapsed:.0%} ({timings[k]:.1f} s)" for k in parts
        )
        + f", other {other / elapsed:.0%}"
    )
    firsts = [
        f"{what} {timings[key]:.2f} s"
        for key, what in (
            ("first_step", "first step"),
            ("first_recorded_step", "first recorded step"),
        )
        if timings.get(key) is not None
    ]
    if firsts:  # included in the split's train steps and summaries
        log(f"Start-up inside the run (tracing): {', '.join(firsts)}")
    log(
        f"Accuracy on Test-Set: {evaluation.accuracy:.1%} "
        f"({evaluation.correct} / {evaluation.total})"
    )
    log("Confusion Matrix:")
    log(tbi.confusion_matrix_text(evaluation.confusion_matrix))
    timings["total"] = elapsed
    return dataclasses.replace(
        result,
        best_step=evaluation.step,
        test_accuracy=evaluation.accuracy,
        test_correct=evaluation.correct,
        test_total=evaluation.total,
        confusion_matrix=evaluation.confusion_matrix,
        timings=timings,
    )
