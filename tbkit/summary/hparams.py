"""The HParams session of a run, so TensorBoard's HParams tab can compare runs."""

from __future__ import annotations

import tensorflow as tf


def write_hparams(run_path: str, trial_id: str, hparams: dict, monitor: str = "accuracy") -> None:
    """Writes the HParams session (and experiment config) at the top of a run directory.

    The session groups `RUN/train`, `RUN/validation` and `RUN/test`; its metrics
    are the values those runs already log: the validation `loss`, the
    monitored value and its best (`accuracy`/`best_accuracy` for a classifier),
    and the test value.

    Args:
      run_path: the run directory.
      trial_id: the session's name (usually the run's directory name).
      hparams: `{name: bool | int | float | str}`.
      monitor: `"accuracy"` or `"loss"`.
    """
    from tensorboard.plugins.hparams import api as hp

    metrics = [hp.Metric("loss", group="validation", display_name="validation loss")]
    if monitor == "accuracy":
        metrics.append(
            hp.Metric("accuracy", group="validation", display_name="validation accuracy")
        )
    metrics += [
        hp.Metric(f"best_{monitor}", group="validation", display_name=f"best validation {monitor}"),
        hp.Metric(monitor, group="test", display_name=f"test {monitor}"),
    ]
    writer = tf.summary.create_file_writer(run_path)
    with writer.as_default(step=0):
        hp.hparams_config(hparams=[hp.HParam(k) for k in hparams], metrics=metrics)
        hp.hparams(hparams, trial_id=trial_id)
    writer.close()
