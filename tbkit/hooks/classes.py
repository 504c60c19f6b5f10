"""The classifier hooks: per-class scalars and PR curves, the confusion matrix and the
example errors, from the predictions a validation already has."""

from __future__ import annotations

from tbkit.hooks.base import Classified, Ended, Hook, Run, Validated
from tbkit.summary import images as tbi
from tbkit.summary.classes import class_count, write_per_class, write_pr_curves


class ClassMetrics(Hook):
    """`per_class/accuracy|precision/<class>` and `pr_curves/<class>` in the validation run,
    at every validation of a classifier."""

    def on_validation(self, run: Run, event: Validated) -> None:
        c = event.classified
        if c is None:
            return
        classes = class_count(run.classes, run.class_names, c.labels, c.predictions)
        with run.writers.scope("validation", step=event.step):
            write_per_class(c.labels, c.predictions, classes, run.class_names)
            write_pr_curves(c.labels, c.scores, run.class_names)


class ValidationPictures(Hook):
    """The `confusion_matrix` and `example_errors` images at improvements.

    Rendering costs a few hundred milliseconds, so at most one picture every
    `every` steps; the last improvement is always pictured when the run ends, so
    the kept model is the one shown.

    Args:
      every: the least number of summary steps between two pictures (1: every improvement).
    """

    def __init__(self, every: int = 1):
        self.every = every
        self._last = None
        self._pending: tuple[int, Classified] | None = None

    def on_begin(self, run: Run) -> None:
        self._last, self._pending = None, None

    def on_validation(self, run: Run, event: Validated) -> None:
        if not (event.improved or event.value is None):
            return
        c = event.classified
        if c is None:
            return
        self._pending = (event.step, c)
        if self._last is None or event.step - self._last >= self.every:
            self._draw(run)

    def on_end(self, run: Run, event: Ended) -> None:
        if self._pending is not None and not event.failed:
            self._draw(run)

    def _draw(self, run: Run) -> None:
        step, c = self._pending
        self._last, self._pending = step, None
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
