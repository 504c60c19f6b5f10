"""The classifier hooks: per-class scalars and PR curves, the confusion matrix and the
example errors, from the predictions a validation already has."""

from __future__ import annotations

from tbkit.hooks.base import Classified, Ended, Hook, Run, Validated
from tbkit.summary import images as tbi
from tbkit.summary.classes import class_count, write_per_class, write_pr_curves


class _Throttled(Hook):
    """Writes something of a validation at most every `every` summary steps: at the first
    offered, then at the first offered `every` or more steps after the last written, and
    the last offered when the run ends (unless it failed), so the end is always there."""

    def __init__(self, every: int = 1):
        self.every = every
        self._last: int | None = None
        self._pending: tuple[int, Classified] | None = None

    def on_begin(self, run: Run) -> None:
        self._last, self._pending = None, None

    def offer(self, run: Run, step: int, c: Classified) -> None:
        self._pending = (step, c)
        if self._last is None or step - self._last >= self.every:
            self._flush(run)

    def on_end(self, run: Run, event: Ended) -> None:
        if self._pending is not None and not event.failed:
            self._flush(run)

    def _flush(self, run: Run) -> None:
        (step, c), self._pending = self._pending, None
        self._last = step
        self.write(run, step, c)

    def write(self, run: Run, step: int, c: Classified) -> None:
        raise NotImplementedError


class ClassMetrics(_Throttled):
    """`per_class/accuracy|precision/<class>` at every validation of a classifier, and
    `pr_curves/<class>` at most every `pr_every` summary steps (first, throttled, last).

    Args:
      pr_every: the least number of summary steps between two PR-curve writes (1: every
        validation). A PR curve of 10 classes is about 13 KB: at every validation of a
        default run they were half of its event files.
    """

    def __init__(self, pr_every: int = 1):
        super().__init__(pr_every)

    def on_validation(self, run: Run, event: Validated) -> None:
        c = event.classified
        if c is None:
            return
        classes = class_count(run.classes, run.class_names, c.labels, c.predictions)
        with run.writers.scope("validation", step=event.step):
            write_per_class(c.labels, c.predictions, classes, run.class_names)
        self.offer(run, event.step, c)

    def write(self, run: Run, step: int, c: Classified) -> None:
        with run.writers.scope("validation", step=step):
            write_pr_curves(c.labels, c.scores, run.class_names)


class ValidationPictures(_Throttled):
    """The `confusion_matrix` and `example_errors` images at improvements.

    Rendering costs a few hundred milliseconds, so at most one picture every
    `every` steps; the last improvement is always pictured when the run ends, so
    the kept model is the one shown.

    Args:
      every: the least number of summary steps between two pictures (1: every improvement).
    """

    def on_validation(self, run: Run, event: Validated) -> None:
        if (event.improved or event.value is None) and event.classified is not None:
            self.offer(run, event.step, event.classified)

    def write(self, run: Run, step: int, c: Classified) -> None:
        classes = class_count(run.classes, run.class_names, c.labels, c.predictions)
        with run.writers.scope("validation", step=step):
            tbi.confusion_matrix_summary(
                "confusion_matrix", c.labels, c.predictions, classes, class_names=run.class_names
            )
            wrong = (c.labels != c.predictions).nonzero()[0][:9]
            images = run.validation.images_at(wrong) if run.validation is not None else None
            if images is not None:
                tbi.example_errors_summary(
                    "example_errors", images, c.labels[wrong], c.predictions[wrong],
                    class_names=run.class_names,
                )  # fmt: skip
