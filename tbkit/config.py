"""`TrainConfig`: every setting of a train_mnist.py run, and its validation.

The CLI's defaults come from here (one place).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tbkit.distribute import STRATEGIES

#: Flags that define the trajectory of a run; a resume must not change them.
_FIXED_ON_RESUME = (
    "batch_size",
    "learning_rate",
    "lr_decay",
    "validation_size",
    "eval_every",
    "seed",
)


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run; the CLI's defaults come from here."""

    logdir: str = "logs"
    run_name: str | None = None
    num_iterations: int = 10_000
    batch_size: int = 64
    learning_rate: float = 2e-3
    lr_decay: float = 0.5
    augment_shift: int = 2
    eval_every: int = 100
    require_improvement: int = 1000
    summary_every: int = 100
    checkpoint_every: int = 500
    image_every: int = 500
    data_dir: str | None = None
    validation_size: int = 5000
    seed: int | None = None
    images: bool = True
    histograms: bool = True
    deterministic: bool = True
    strategy: str = "default"

    def validate(self) -> None:
        for field in (
            "num_iterations",
            "batch_size",
            "eval_every",
            "require_improvement",
            "summary_every",
            "checkpoint_every",
            "image_every",
            "validation_size",
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{field} must be a positive integer. Received: {field}={value!r}")
        if not self.learning_rate > 0 or not np.isfinite(self.learning_rate):
            raise ValueError(
                f"learning_rate must be a positive number. Received: learning_rate={self.learning_rate}"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={self.strategy!r}"
            )
        if self.strategy == "multi-worker" and self.seed is None:
            raise ValueError(
                "--strategy multi-worker needs an explicit --seed so that every worker agrees"
            )
        if (
            isinstance(self.augment_shift, bool)
            or not isinstance(self.augment_shift, int)
            or not 0 <= self.augment_shift <= 8
        ):
            raise ValueError(
                f"augment_shift must be an integer from 0 to 8. Received: augment_shift={self.augment_shift!r}"
            )
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1]. Received: lr_decay={self.lr_decay}")
        if self.seed is not None and not 0 <= self.seed < 2**31:
            raise ValueError(f"seed must be between 0 and 2**31-1. Received: seed={self.seed}")
