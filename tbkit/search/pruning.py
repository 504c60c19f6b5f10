"""Pruning a trial: on the monitored value (Optuna's pruners) and on a diagnosis.

`Pruning` is a run-protocol hook (`tbkit.hooks`), so a trial prunes the same way
through `tbkit.Trainer` and through the Keras callback. At every validation it
reports the monitored value to the Optuna trial (`trial.report(value, step)`, at
most once per step, so a resumed trial does not report twice) and asks
`trial.should_prune()`. It also reads the run's health, which no value-based
pruner sees, and prunes with the finding as its reason when:

- the weights or the loss became non-finite (at once: the run cannot go on);
- a layer's units are dead (`dead_fraction` above `tbkit.dynamics.DEAD_FRACTION`)
  at `DEAD_VALIDATIONS` validations in a row;
- the learning rate barely moves any layer (every layer's update ratio below
  `tbkit.dynamics.UPDATE_RATIO_LOW`) at `STALLED_VALIDATIONS` validations in a row.
"""

from __future__ import annotations

from tbkit.hooks.base import Diverged, Hook, Run, Validated
from tbkit.summary import dynamics as tbd

#: The trial's user attribute holding a pruning decision not yet told to the study.
PRUNED_ATTR = "pruned"

#: Consecutive validations with a dead layer before a trial is pruned for it: one
#: can be a bad batch early in training; three in a row is a layer that stays dead.
DEAD_VALIDATIONS = 3

#: Consecutive validations at which no layer's update ratio reaches
#: `tbkit.dynamics.UPDATE_RATIO_LOW` before a trial is pruned: a learning rate that
#: barely moves the weights wastes the whole trial.
STALLED_VALIDATIONS = 3


def dead_layers(d: tbd.Dynamics | None) -> list[str]:
    """The layers more than `DEAD_FRACTION` of whose units were dead in recording `d`."""
    if d is None:
        return []
    return [layer for layer, f in d.dead_fraction.items() if f > tbd.DEAD_FRACTION]


def stalled(d: tbd.Dynamics | None) -> bool:
    """True when recording `d` moved no layer by `UPDATE_RATIO_LOW` of its size (the
    health finding "barely moves the weights")."""
    if d is None or not d.update_norm:
        return False
    ratios = tbd.layer_update_ratios(d)
    return bool(ratios) and max(ratios.values()) < tbd.UPDATE_RATIO_LOW


class Pruning(Hook):
    """Reports each validation to an Optuna trial and prunes it on value or diagnosis.

    Args:
      trial: the `optuna.Trial`.
      reported: the steps this trial already reported (a resumed trial's), skipped.
      value_pruning: ask the study's pruner after each report (default True).

    After the run, `reason` says why it was pruned (None: not pruned).
    """

    def __init__(self, trial, reported=(), value_pruning: bool = True):
        self.trial = trial
        self.reported = set(int(s) for s in reported)
        self.value_pruning = value_pruning
        self.reason: str | None = None
        self._dead: dict[str, int] = {}
        self._stalled = 0

    def on_validation(self, run: Run, event: Validated) -> None:
        if self.reason is not None:
            return
        if event.value is not None and event.count not in self.reported:
            self.trial.report(float(event.value), event.count)
            self.reported.add(event.count)
        reason = self._diagnose(run.recorder.latest, event.count)
        if reason is None and self.value_pruning and self.trial.should_prune():
            reason = f"the {run.monitor} at {run.unit} {event.count} ranks low (pruner)"
        if reason is not None:
            self.decide(reason)
            run.request_stop(f"pruned: {reason}")

    def _diagnose(self, d, count: int) -> str | None:
        dead = set(dead_layers(d))
        for layer in list(self._dead):
            if layer not in dead:
                del self._dead[layer]
        for layer in dead:
            self._dead[layer] = self._dead.get(layer, 0) + 1
            if self._dead[layer] >= DEAD_VALIDATIONS:
                share = d.dead_fraction[layer]
                return (
                    f"{layer}: {share:.0%} of its units dead at {DEAD_VALIDATIONS} validations "
                    f"in a row (up to {count})"
                )
        self._stalled = self._stalled + 1 if stalled(d) else 0
        if self._stalled >= STALLED_VALIDATIONS:
            return (
                f"every layer's update ratio below {tbd.UPDATE_RATIO_LOW:.0e} at "
                f"{STALLED_VALIDATIONS} validations in a row (learning rate too low)"
            )
        return None

    def on_diverged(self, run: Run, event: Diverged) -> None:
        self.decide(f"non-finite values: {event.lines[0] if event.lines else event.message}")

    def decide(self, reason: str) -> None:
        """Prunes: `reason` is kept, and stored with the trial at once (`PRUNED_ATTR`), so a
        process killed before it tells the study leaves the decision for the one resuming."""
        self.reason = reason
        self.trial.set_user_attr(PRUNED_ATTR, reason)
