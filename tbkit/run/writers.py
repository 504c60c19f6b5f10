"""`RunWriters`: the `train` / `validation` / `test` writers of one run directory.

Like Keras' TensorBoard callback: one sub-directory per writer, the same tags in
each so TensorBoard overlays the curves, each writer created on first use and
closed at the end, and a no-op variant when logging is off.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import tensorflow as tf

from tbkit.errors import RunDirError, reason

#: The writer names of the run-directory contract.
RUNS = ("train", "validation", "test")


class RunWriters:
    """Owns the summary writers of a run directory.

    Args:
      run_dir: the run directory; writer `name` writes to `run_dir/name`.
      enabled: when False every writer is a no-op writer and nothing is written.
      max_queue, flush_millis: passed to `tf.summary.create_file_writer`.

    Example:

      with RunWriters("logs/run1") as writers:
          with writers.scope("train", step=0):      # long-lived: enter once
              tf.summary.scalar("loss", 0.3)
              with writers.scope("validation"):     # nested: flushed on exit
                  tf.summary.scalar("loss", 0.4)
    """

    def __init__(
        self, run_dir: str, enabled: bool = True, max_queue: int = 100, flush_millis: int = 30_000
    ):
        self.run_dir = run_dir
        self.enabled = enabled
        self._kwargs = dict(max_queue=max_queue, flush_millis=flush_millis)
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def __getitem__(self, name: str) -> tf.summary.SummaryWriter:
        writer = self._writers.get(name)
        if writer is None:
            if self.enabled:
                writer = tf.summary.create_file_writer(
                    os.path.join(self.run_dir, name), name=f"{name}_writer", **self._kwargs
                )
            else:
                writer = tf.summary.create_noop_writer()
            self._writers[name] = writer
        return writer

    def logdir(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    @contextlib.contextmanager
    def scope(self, name: str, step=None) -> Iterator[tf.summary.SummaryWriter]:
        """Makes writer `name` the default (with an optional default step).

        Leaving the scope flushes that writer, so enter the train writer once
        around the loop and nest the occasional validation/test scopes inside.
        """
        writer = self[name]
        with self._failures(name), writer.as_default(step=step):
            yield writer

    @contextlib.contextmanager
    def _failures(self, name: str):
        """An event file that cannot be written (disk full, file too large) is one line."""
        try:
            yield
        except tf.errors.OpError as e:
            raise RunDirError(
                f"cannot write the event files of {self.logdir(name)}: {reason(e)}"
            ) from None

    def flush(self) -> None:
        for name, writer in self._writers.items():
            with self._failures(name):
                writer.flush()

    def close(self) -> None:
        """Flushes and closes every writer created so far (all of them, even if one fails)."""
        writers, self._writers = self._writers, {}
        failure = None
        for name, writer in writers.items():
            try:
                with self._failures(name):
                    writer.close()
            except RunDirError as e:
                failure = failure or e
        if failure is not None:
            raise failure

    def __enter__(self) -> RunWriters:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def null_writers(run_dir: str = "") -> RunWriters:
    """A `RunWriters` whose writers are all no-ops (logging switched off)."""
    return RunWriters(run_dir, enabled=False)
