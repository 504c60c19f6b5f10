"""The recording hooks: every layer's summaries and dynamics, and the run's health."""

from __future__ import annotations

import tensorflow as tf

from tbkit.errors import TrainingError, reason
from tbkit.hooks.base import Diverged, Hook, Recording, Run, Validated
from tbkit.summary import dynamics as tbd


class Summaries(Hook):
    """Writes what the layer recorder records (statistics, histograms, filter grids,
    activations and the training dynamics) at each `Recording`, and the Custom Scalars
    layout of the dynamics when a run starts."""

    def on_begin(self, run: Run) -> None:
        if run.chief and run.dynamics and not run.state.resumed:
            tbd.write_layout(run.recorder.trainable_tags.values())

    def on_record(self, run: Run, event: Recording) -> None:
        try:
            run.recorder.record(
                event.step, event.inputs, compiled=event.compiled, dynamics=event.dynamics,
                filters=event.filters,
            )  # fmt: skip
        except tf.errors.OpError as e:  # not the disk's fault unless the writer says so
            raise TrainingError(
                f"recording the summaries of step {event.step} failed: {reason(e)}"
            ) from None


class Health(Hook):
    """The `health` text at each validation (the latest recording's findings), and at a
    divergence the finding plus the weights' summaries with their `nonfinite` counts."""

    def on_validation(self, run: Run, event: Validated) -> None:
        if not run.dynamics:
            return
        latest = run.recorder.latest
        if latest is None:
            tf.summary.text(
                "health", f"step {event.step}: no training dynamics recorded yet", step=event.step
            )
        else:
            tbd.write_health(event.step, list(event.findings), latest.step)

    def on_diverged(self, run: Run, event: Diverged) -> None:
        if run.chief:
            tbd.write_health(event.step, list(event.lines))
            run.recorder.record(event.step, compiled=False)
