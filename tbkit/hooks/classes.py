"""The classifier hooks: per-class scalars and PR curves, the confusion matrix and the
example errors, from the predictions a validation already has."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

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

    Drawing them costs a few hundred milliseconds, so at most one picture every
    `every` steps; the last improvement is always pictured when the run ends, so
    the kept model is the one shown. They are drawn in a worker thread (matplotlib's
    Agg canvas, one figure per picture, PNGs encoded there too) while training goes
    on, and written, at their own step, at the next validation or when the run ends.

    Args:
      every: the least number of summary steps between two pictures (1: every improvement).
    """

    def __init__(self, every: int = 1):
        super().__init__(every)
        self._pool: ThreadPoolExecutor | None = None
        self._drawing: list[tuple[int, Future]] = []

    def on_begin(self, run: Run) -> None:
        super().on_begin(run)
        self._drawing = []

    def on_validation(self, run: Run, event: Validated) -> None:
        self._collect(run, wait=False)
        if (event.improved or event.value is None) and event.classified is not None:
            self.offer(run, event.step, event.classified)

    def on_end(self, run: Run, event: Ended) -> None:
        super().on_end(run, event)
        try:
            self._collect(run, wait=True)
        except Exception:
            if not event.failed:  # a failed run's own error is the one to tell
                raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def write(self, run: Run, step: int, c: Classified) -> None:
        with run.writers.scope("validation", step=step):
            if not tbi._will_record():  # not the chief: nothing to draw
                return
        classes = class_count(run.classes, run.class_names, c.labels, c.predictions)
        wrong = (c.labels != c.predictions).nonzero()[0][:9]
        images = run.validation.images_at(wrong) if run.validation is not None else None
        args = (c.labels, c.predictions, classes, run.class_names, wrong, images)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tbkit-pictures")
        self._drawing.append((step, self._pool.submit(_draw, *args)))

    def _collect(self, run: Run, wait: bool) -> None:
        """Writes the pictures drawn so far (all of them, waiting, with `wait`)."""
        pending, self._drawing = self._drawing, []
        for i, (step, future) in enumerate(pending):
            if not (wait or future.done()):
                self._drawing = pending[i:]  # in step order: the rest waits too
                return
            self._put(run, step, future.result())

    def _put(self, run: Run, step: int, pictures: list) -> None:
        with run.writers.scope("validation", step=step):
            for name, picture in pictures:
                tbi.png_summary(name, picture)


def _draw(labels, predictions, classes, class_names, wrong, images) -> list:
    """`[(name, encoded picture)]`: the confusion matrix and the example errors."""
    cm = tbi.confusion_matrix(labels, predictions, classes)
    out = [("confusion_matrix", tbi.encoded(tbi.confusion_matrix_image(cm, class_names)))]
    if images is not None:
        picture = tbi.example_errors_image(images, labels[wrong], predictions[wrong], class_names)
        out.append(("example_errors", tbi.encoded(picture)))
    return out
