"""The `test` run of a finished training: the restored best checkpoint on held-out data."""

from __future__ import annotations

import glob
import os

import tensorflow as tf

from tbkit.run.writers import RunWriters
from tbkit.summary import images as tbi
from tbkit.summary.classes import write_per_class, write_pr_curves


def write_test_run(run_path: str, step: int, loss: float, classified=None, *, classes: int = 0,
                   class_names=None, images: bool = True) -> bool:  # fmt: skip
    """Writes `loss` (and for a classifier `accuracy`, the per-class scalars, the PR
    curves and the confusion matrix) to `run_path/test` at the best step, once per run.

    Args:
      classified: `(labels, predictions, scores)` of a classifier, or None.

    Returns:
      True when written, False when the test run already holds event files.
    """
    test_dir = os.path.join(run_path, "test")
    if glob.glob(os.path.join(glob.escape(test_dir), "events.*")):
        return False
    writers = RunWriters(run_path)
    try:
        with writers.scope("test", step=step):
            tf.summary.scalar("loss", loss)
            if classified is not None:
                labels, pred, scores = classified
                tf.summary.scalar("accuracy", float((pred == labels).mean()))
                write_per_class(labels, pred, classes, class_names)
                write_pr_curves(labels, scores, class_names)
                if images:
                    tbi.confusion_matrix_summary(
                        "confusion_matrix", labels, pred, classes, class_names=class_names
                    )
    finally:
        writers.close()
    return True
