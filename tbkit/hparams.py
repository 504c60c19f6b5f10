"""The HParams session of a run, so TensorBoard's HParams tab can compare runs."""

from __future__ import annotations

import tensorflow as tf


def write_hparams(run, config, seed) -> None:
    """Writes the HParams session (and experiment config) at the top of the run directory.

    The session groups `NAME/train`, `NAME/validation` and `NAME/test`; the
    metrics are the validation and test accuracies those runs already log.
    """
    from tensorboard.plugins.hparams import api as hp

    hparams = {
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "lr_decay": config.lr_decay,
        "augment_shift": config.augment_shift,
        "eval_every": config.eval_every,
        "require_improvement": config.require_improvement,
        "validation_size": config.validation_size,
        "seed": seed,
    }
    metrics = [
        hp.Metric("accuracy", group="validation", display_name="validation accuracy"),
        hp.Metric("best_accuracy", group="validation", display_name="best validation accuracy"),
        hp.Metric("loss", group="validation", display_name="validation loss"),
        hp.Metric("accuracy", group="test", display_name="test accuracy"),
    ]
    writer = tf.summary.create_file_writer(run.path)
    with writer.as_default(step=0):
        hp.hparams_config(hparams=[hp.HParam(k) for k in hparams], metrics=metrics)
        hp.hparams(hparams, trial_id=run.name)
    writer.close()
