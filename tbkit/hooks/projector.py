"""The Embedding Projector hook: the best weights' view of the validation data at the
end of a run, and optionally the current weights' view at a cadence."""

from __future__ import annotations

from tbkit.hooks.base import Ended, Hook, Run, Validated
from tbkit.run.checkpoints import model_weights
from tbkit.summary import projector as tbp


class Projector(Hook):
    """Embeds `examples` validation examples for TensorBoard's Projector.

    Under a multi-worker strategy every worker computes (loading the best weights
    into distributed variables takes the same collective operations on each) and
    only the chief writes.

    Args:
      examples: how many validation examples (a seeded sample); 0 for none.
      layer: the layer whose output is embedded (default: the input of the last
        layer with weights).
      every: also embed the current weights when the run state's count (steps,
        or epochs for the callback) is a multiple of `every` at a validation.
    """

    def __init__(self, examples: int = 1000, layer: str | None = None, every: int | None = None):
        tbp.check_options(examples, every)
        self.examples, self.layer, self.every = examples, layer, every

    def _active(self, run: Run) -> bool:
        return bool(
            self.examples and run.classifier and run.validation is not None
            and run.validation.usable and run.validation.integer_labels()
        )  # fmt: skip

    def check(self, model) -> None:
        if self.examples and self.layer is not None:
            tbp.target_layer(model, self.layer)  # a wrong name fails before training

    def _write(self, run: Run, count: int, best: bool) -> None:
        tbp.write_embedding(
            run.path, run.model, run.validation.data, step=count, best=best, unit=run.unit,
            examples=self.examples, layer=self.layer, class_names=run.class_names,
            write=run.chief,
        )  # fmt: skip

    def on_validation(self, run: Run, event: Validated) -> None:
        if self.every and event.count % self.every == 0 and self._active(run):
            self._write(run, event.count, best=False)

    def on_end(self, run: Run, event: Ended) -> None:
        if event.failed or not event.best_path or not self._active(run):
            return
        # Whether it is written already: the chief's files say; other workers cannot
        # read them reliably, so under several workers every run embeds its best again.
        if not run.multi_worker and tbp.best_embedding_step(run.path) == event.best_step:
            return
        with tbp.best_weights(run.model, event.best_path, root=model_weights(run.model)):
            self._write(run, event.best_step, best=True)
