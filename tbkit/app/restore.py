"""A trained run's best model, back from its run directory (predict, export, a search's test).

The run's `config.json` names its network (`flags.model`; runs from before
`--model` existed are the CNN); the network is built, its architecture checked
against the best checkpoint variable by variable, and the weights restored.
"""

from __future__ import annotations

import dataclasses
import os

from tbkit.errors import CheckpointError, RunDirError


@dataclasses.dataclass(frozen=True)
class Restored:
    """A run's best model: the network (weights restored), its name, the checkpoint's
    step and path, and the run's `config.json`."""

    model: object
    name: str
    step: int
    checkpoint: str
    config: dict


def load_best(run_dir: str) -> Restored:
    """The run's best checkpoint in the network its config names.

    Raises:
      RunDirError: not a run directory (no config.json).
      CheckpointError: no best checkpoint yet, or an unreadable one.
      ArchitectureError: the checkpoint is of another network than the config says.
    """
    import tensorflow as tf

    from tbkit.app.models import MODELS, make_model
    from tbkit.run.rundir import RunDir

    run_dir = os.path.abspath(os.fspath(run_dir))
    run = RunDir(os.path.dirname(run_dir), os.path.basename(run_dir))
    config = run.read_config() if os.path.isdir(run_dir) else None
    if config is None:
        raise RunDirError(f"{run_dir} is not a tbkit run directory (no config.json)")
    name = config.get("flags", {}).get("model", "cnn")
    if name not in MODELS:
        raise RunDirError(f"{run.config_path} names an unknown model {name!r}")
    best = tf.train.latest_checkpoint(run.best_dir) if os.path.isdir(run.best_dir) else None
    if best is None:
        raise CheckpointError(f"{run_dir} has no best checkpoint (checkpoints/best is empty)")
    model = make_model(name)
    model.check_checkpoint(best)  # ArchitectureError naming the variable and both shapes
    tf.train.Checkpoint(model=model).read(best).expect_partial()
    return Restored(model, name, int(best.rsplit("-", 1)[1]), best, config)
