"""What `tbkit.Trainer` reports: one validation, a fit, an evaluation."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Validation:
    """One validation, as passed to `on_validation` (e.g. to print a console line)."""

    step: int
    train_loss: float  # mean over the batches since the previous validation
    train_accuracy: float | None
    batch_accuracy: float | None  # of the last training batch
    loss: float
    accuracy: float | None
    value: float  # the monitored value
    improved: bool
    best_value: float | None
    best_step: int | None
    findings: list[str] = dataclasses.field(default_factory=list)  # the `health` lines


@dataclasses.dataclass
class FitResult:
    """What `Trainer.fit` did."""

    steps: int  # the step the run is at (resumed runs count from the start)
    best_value: float | None
    best_step: int | None
    best_checkpoint: str | None
    monitor: str
    early_stopped: bool
    resumed_from: int | None
    timings: dict


@dataclasses.dataclass
class Evaluation:
    """`Trainer.evaluate` on the restored best checkpoint."""

    step: int  # the best checkpoint's step
    loss: float
    accuracy: float | None
    correct: int | None
    total: int
    labels: np.ndarray | None
    predictions: np.ndarray | None
    confusion_matrix: np.ndarray | None
