"""The run protocol: the events both drivers emit, and the `Hook` every feature is.

`tbkit.Trainer` (a custom loop) and `tbkit.keras.TensorBoardRun` (an adapter
from Keras' callback methods) are two drivers of one protocol. Each emits, in
this order:

    check(model)                       before anything is written: refuse bad options
    on_begin(run)                      the run directory is open, the train writer entered
    on_step_begin(run, step)           around every step (only hooks that define them
    on_step_end(run, step)               are called: the others cost nothing)
    on_record(run, Recording)          a step to record (variables, dynamics, filters)
    on_validation(run, Validated)      after a validation, once the run state decided
    on_diverged(run, Diverged)         training cannot go on (NaN/Inf), before the error
    on_end(run, Ended)                 always, last, while the writers are still open

Every feature (summaries, health, per-class metrics, pictures, projector,
profiling, config and HParams) is a `Hook` written once, so a promise made at
one door holds at the other. Pass your own with `hooks=[...]` at either door.

Example: a hook that stops a run whose validation accuracy is not above 50%
after 1,000 steps, and one that reports each validation elsewhere:

    class GiveUp(tbkit.Hook):
        def on_validation(self, run, event):
            if event.step >= 1000 and (event.accuracy or 0) < 0.5:
                run.request_stop("accuracy below 50% after 1,000 steps")

    class Report(tbkit.Hook):
        def on_validation(self, run, event):
            requests.post(URL, json={"step": event.step, "value": event.value})
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable

import numpy as np

from tbkit.model.measure import StepDynamics


@dataclasses.dataclass(frozen=True)
class Classified:
    """A classifier's validation pass: labels, predicted classes, scores, in data order."""

    labels: np.ndarray
    predictions: np.ndarray
    scores: np.ndarray


@dataclasses.dataclass(frozen=True)
class Recording:
    """A step to record (`on_record`).

    Attributes:
      step: the summary step (the x axis: the optimizer's step).
      inputs: a batch for the activation summaries, or None.
      dynamics: the step's measured dynamics, or None (dynamics off).
      filters: whether the filter grids are due at this step.
      compiled: record in a traced function (many calls) or eagerly (a few).
    """

    step: int
    inputs: object = None
    dynamics: StepDynamics | None = None
    filters: bool = True
    compiled: bool = True


@dataclasses.dataclass(frozen=True)
class Validated:
    """A validation, after the run state's decision (`on_validation`).

    Attributes:
      step: the summary step (the x axis).
      count: the run state's count at this validation (steps for the Trainer,
        epochs for the callback): the unit of `best_step` and of cadences in epochs.
      loss, accuracy: the validation values (accuracy None when not a classifier).
      value: the monitored value (None when it was not available).
      improved: a new best was saved.
      best_value, best_step: the best so far.
      findings: the `health` findings of the latest recording.
      train_loss, train_accuracy: over the training since the previous validation.
    """

    step: int
    count: int
    loss: float | None
    accuracy: float | None
    value: float | None
    improved: bool
    best_value: float | None
    best_step: int | None
    findings: tuple[str, ...] = ()
    train_loss: float | None = None
    train_accuracy: float | None = None
    classify: Callable[[], Classified | None] = dataclasses.field(
        default=lambda: None, repr=False, compare=False
    )

    @functools.cached_property
    def classified(self) -> Classified | None:
        """Labels, predictions and scores of the validation data (computed once, when a
        hook first asks; None when the model is not a one-output classifier)."""
        return self.classify()


@dataclasses.dataclass(frozen=True)
class Diverged:
    """Training cannot go on: a NaN/Inf in the loss or the weights (`on_diverged`)."""

    step: int
    lines: tuple[str, ...]  # the findings, one per line (the first names the variable)
    message: str  # the one line of the `TrainingError` that follows


@dataclasses.dataclass(frozen=True)
class Ended:
    """The end of a driver's run (`on_end`), also after a failure."""

    step: int
    count: int
    best_step: int | None
    best_path: str | None
    early_stopped: bool = False
    failed: bool = False


class Run:
    """What hooks see of a run: its directory, writers, state, recorder and data.

    Attributes:
      path: the run directory.
      model: the model being trained.
      state: its `tbkit.RunState` (checkpoints, best, early stopping).
      writers: its `tbkit.RunWriters`; the `train` writer is the default during events.
      recorder: its `tbkit.LayerRecorder`.
      chief: False on a non-chief worker (which must not write).
      multi_worker: True under a multi-worker strategy (every worker runs the same ops).
      unit: `"step"` (Trainer) or `"epoch"` (callback): the unit of `state`'s counts.
      classifier: the model is a classifier with integer labels.
      classes: the model's number of classes, when it says.
      class_names: the names given for the classes, or None.
      validation: the validation data (`tbkit.hooks.ValidationData`), or None.
      dynamics: training dynamics are recorded.
      log: where one-line notices go.
    """

    def __init__(self, **fields):
        self.path: str = fields.pop("path")
        self.model = fields.pop("model")
        self.state = fields.pop("state")
        self.writers = fields.pop("writers")
        self.recorder = fields.pop("recorder")
        self.chief: bool = fields.pop("chief", True)
        self.multi_worker: bool = fields.pop("multi_worker", False)
        self.unit: str = fields.pop("unit", "step")
        self.classifier: bool = fields.pop("classifier", False)
        self.classes: int | None = fields.pop("classes", None)
        self.class_names: list[str] | None = fields.pop("class_names", None)
        self.validation = fields.pop("validation", None)
        self.dynamics: bool = fields.pop("dynamics", True)
        self.monitor: str = fields.pop("monitor", "accuracy")
        self.log: Callable[[str], None] = fields.pop("log", print)
        if fields:
            raise TypeError(f"unknown Run fields: {', '.join(fields)}")
        self.stop_reason: str | None = None

    def request_stop(self, reason: str) -> None:
        """Asks the driver to end the run after the current event (a finished run, resumable)."""
        self.stop_reason = reason


class Hook:
    """One feature of a run: override the events it needs (each does nothing by default)."""

    def check(self, model) -> None:
        """Called before the run directory is touched (Trainer: at construction; callback:
        at the start of `fit`): raise to refuse options that cannot work with `model`."""

    def on_begin(self, run: Run) -> None:
        pass

    def on_step_begin(self, run: Run, step: int) -> None:
        pass

    def on_step_end(self, run: Run, step: int) -> None:
        pass

    def on_record(self, run: Run, event: Recording) -> None:
        pass

    def on_validation(self, run: Run, event: Validated) -> None:
        pass

    def on_diverged(self, run: Run, event: Diverged) -> None:
        pass

    def on_end(self, run: Run, event: Ended) -> None:
        pass


def _overrides(hook: Hook, name: str) -> bool:
    return getattr(type(hook), name, None) is not getattr(Hook, name)


class Hooks:
    """Calls a list of hooks in order; the per-step events reach only the hooks that
    define them, so a step pays nothing for the others."""

    def __init__(self, hooks: Iterable[Hook]):
        self.hooks = list(hooks)
        for h in self.hooks:
            if not isinstance(h, Hook):
                raise TypeError(f"hooks must be tbkit.Hook instances. Received: {type(h).__name__}")
        self._step_begin = [h for h in self.hooks if _overrides(h, "on_step_begin")]
        self._step_end = [h for h in self.hooks if _overrides(h, "on_step_end")]

    @property
    def listen_to_steps(self) -> tuple[bool, bool]:
        """Whether any hook defines `on_step_begin`, and whether any defines `on_step_end`
        (a caller can skip finding out the step for neither)."""
        return bool(self._step_begin), bool(self._step_end)

    def check(self, model) -> None:
        for h in self.hooks:
            h.check(model)

    def begin(self, run: Run) -> None:
        for h in self.hooks:
            h.on_begin(run)

    def step_begin(self, run: Run, step: int) -> None:
        for h in self._step_begin:
            h.on_step_begin(run, step)

    def step_end(self, run: Run, step: int) -> None:
        for h in self._step_end:
            h.on_step_end(run, step)

    def record(self, run: Run, event: Recording) -> None:
        for h in self.hooks:
            h.on_record(run, event)

    def validation(self, run: Run, event: Validated) -> None:
        for h in self.hooks:
            h.on_validation(run, event)

    def diverged(self, run: Run, event: Diverged) -> None:
        for h in self.hooks:
            h.on_diverged(run, event)

    def end(self, run: Run, event: Ended) -> None:
        """Every hook's `on_end`, even if one fails (the first failure is raised after)."""
        failure = None
        for h in self.hooks:
            try:
                h.on_end(run, event)
            except Exception as e:  # noqa: BLE001 - each hook gets to close what it opened
                failure = failure or e
        if failure is not None and not event.failed:
            raise failure
