"""The run protocol's hooks: every feature of a run, written once for both doors.

See `tbkit.hooks.base` for the events. `default_hooks` builds the standard set
that `tbkit.Trainer` and `tbkit.keras.TensorBoardRun` both run; users add their
own with `hooks=[...]`.
"""

from __future__ import annotations

from tbkit.hooks.base import (
    Classified,
    Diverged,
    Ended,
    Hook,
    Hooks,
    Recording,
    Run,
    Validated,
)
from tbkit.hooks.classes import ClassMetrics, ValidationPictures
from tbkit.hooks.data import ValidationData
from tbkit.hooks.projector import Projector
from tbkit.hooks.recording import Health, Summaries
from tbkit.hooks.setup import Config, Profile


def default_hooks(
    *,
    images: bool = True,
    image_every: int = 1,
    class_metrics: bool = True,
    projector_examples: int = 1000,
    projector_layer: str | None = None,
    projector_every: int | None = None,
    profile_steps=None,
    config: dict | None = None,
    hparams: dict | None = None,
) -> list[Hook]:
    """The hooks of a tbkit run, in the order they run, from the doors' options."""
    # Without a profile window no hook listens to the steps, so a door need not find
    # out each step's number (under fit, a read of optimizer.iterations per batch).
    profile = [Profile(profile_steps)] if profile_steps is not None else []
    hooks: list[Hook] = [Config(config, hparams), *profile, Summaries(), Health()]
    if class_metrics:
        hooks.append(ClassMetrics(pr_every=image_every))
    if images:
        hooks.append(ValidationPictures(image_every))
    hooks.append(Projector(projector_examples, projector_layer, projector_every))
    return hooks


__all__ = [
    "ClassMetrics",
    "Classified",
    "Config",
    "Diverged",
    "Ended",
    "Health",
    "Hook",
    "Hooks",
    "Profile",
    "Projector",
    "Recording",
    "Run",
    "Summaries",
    "Validated",
    "ValidationData",
    "ValidationPictures",
    "default_hooks",
]
