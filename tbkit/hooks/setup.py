"""The hooks of a run's start and edges: config.json and HParams, the profiler window."""

from __future__ import annotations

import glob
import os

from tbkit.hooks.base import Ended, Hook, Run
from tbkit.summary.hparams import write_hparams
from tbkit.summary.profiling import Profiler, parse_steps


class Config(Hook):
    """Writes `config.json` and the HParams session when a run first starts (chief only).

    Args:
      config: a JSON-able dict for `config.json` (None: none).
      hparams: `{name: value}` for TensorBoard's HParams tab (None: none).
    """

    def __init__(self, config: dict | None = None, hparams: dict | None = None):
        self.config, self.hparams = config, hparams

    def on_begin(self, run: Run) -> None:
        if not run.chief:
            return
        # A first start: nothing at the top of the run directory yet (a run killed
        # before its first checkpoint restarts without writing a second session).
        first = not glob.glob(os.path.join(glob.escape(run.path), "events.out.tfevents.*"))
        if self.config is not None:
            run.state.write_config(self.config)
        if self.hparams is not None and first:
            write_hparams(run.path, os.path.basename(run.path), self.hparams, run.monitor)


class Profile(Hook):
    """Traces TensorFlow's profiler over a window of steps into `train/` (chief only).

    Args:
      steps: `"A:B"` or `(A, B)`, steps counted from 1 (None: never).
    """

    def __init__(self, steps):
        self.window = parse_steps(steps)
        self._profiler: Profiler | None = None

    def on_begin(self, run: Run) -> None:
        self._profiler = Profiler(
            self.window if run.chief else None, os.path.join(run.path, "train")
        )

    def on_step_begin(self, run: Run, step: int) -> None:
        self._profiler.begin(step)

    def on_step_end(self, run: Run, step: int) -> None:
        self._profiler.end(step)

    def on_end(self, run: Run, event: Ended) -> None:
        if self._profiler is not None:
            self._profiler.stop()
