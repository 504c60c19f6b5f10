"""The classifier hooks: per-class scalars and PR curves, the confusion matrix and the
example errors, from the predictions a validation already has."""

from __future__ import annotations

from tbkit.hooks.base import Classified, Ended, Hook, Run, Validated
from tbkit.summary import images as tbi
from tbkit.summary.classes import class_count, write_per_class, write_pr_curves


class ClassMetrics(Hook):
    """`per_class/accuracy|precision/<class>` at every validation of a classifier, and
    `pr_curves/<class>` at most every `pr_every` summary steps: at the first validation,
    then at the first one `pr_every` or more steps after the last written, and at the
    run's last validation (so the curves of the end are always there).

    Args:
      pr_every: the least number of summary steps between two PR-curve writes (1: every
        validation). A PR curve of 10 classes is about 13 KB: at every validation of a
        default run it was most of the validation event file.
    """

    def __init__(self, pr_every: int = 1):
        self.pr_every = pr_every
        self._last: int | None = None
        self._pending: tuple[int, Classified] | None = None

    def on_begin(self, run: Run) -> None:
        self._last, self._pending = None, None

    def on_validation(self, run: Run, event: Validated) -> None:
        c = event.classified
        if c is None:
            return
        classes = class_count(run.classes, run.class_names, c.labels, c.predictions)
        with run.writers.scope("validation", step=event.step):
            write_per_class(c.labels, c.predictions, classes, run.class_names)
        self._pending = (event.step, c)
        if self._last is None or event.step - self._last >= self.pr_every:
            self._write_curves(run)

    def on_end(self, run: Run, event: Ended) -> None:
        if self._pending is not None and not event.failed:
            self._write_curves(run)

    def _write_curves(self, run: Run) -> None:
        step, c = self._pending
        self._last, self._pending = step, None
        with run.writers.scope("validation", step=step):
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
