"""tbkit: TensorBoard-centric instrumentation for TensorFlow 2.

The public face is `__all__`; everything else is internal.

Names are imported on first use (PEP 562), so `import tbkit` itself costs
nothing and `train_mnist.py --help` does not load TensorFlow; `tbkit.Trainer`,
`from tbkit import Trainer` and `tbkit.layers` import what they need then.

The package is layered; a module imports only from its own layer or below:

    errors, checks, fileio     the base: errors, argument checks, atomic files
    summary/                   pure builders and thin tf.summary writers
    run/                       the run directory: checkpoints, run state, writers
    model/                     layers, model base, layer recorder, step dynamics
    hooks/                     the run protocol: events and one hook per feature
    loop/                      the custom loop: train/eval steps, strategy, Trainer
    keras/                     the Keras door: TensorBoardRun, LayerSummaries
    tools/                     report, quiet console
    datasets/, app/            data, and the MNIST application (a client of the rest)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from tbkit import datasets
    from tbkit.errors import (
        ArchitectureError,
        CheckpointError,
        DataError,
        RunDirError,
        TbkitError,
        TrainingError,
    )
    from tbkit.hooks import Hook
    from tbkit.keras.summaries import LayerSummaries
    from tbkit.loop.export import ExportError, export_saved_model
    from tbkit.loop.trainer import Evaluation, FitResult, Trainer, Validation
    from tbkit.model import layers
    from tbkit.model.model import Model, summarize_layers
    from tbkit.model.recorder import LayerRecorder, variable_tags
    from tbkit.run.checkpoints import BestCheckpoint, EarlyStopping, is_improvement
    from tbkit.run.runstate import RunState
    from tbkit.run.writers import RunWriters, null_writers
    from tbkit.summary.graph import write_graph
    from tbkit.summary.images import (
        confusion_matrix,
        confusion_matrix_image,
        confusion_matrix_summary,
        confusion_matrix_text,
        example_errors_image,
        example_errors_summary,
        figure_summary,
        figure_to_image,
        filter_grid,
        filters_summary,
    )
    from tbkit.summary.summaries import variable_summaries

# public name -> the module that defines it
_EXPORTS = {
    "LayerSummaries": "tbkit.keras.summaries",
    "BestCheckpoint": "tbkit.run.checkpoints",
    "EarlyStopping": "tbkit.run.checkpoints",
    "is_improvement": "tbkit.run.checkpoints",
    "ArchitectureError": "tbkit.errors",
    "CheckpointError": "tbkit.errors",
    "DataError": "tbkit.errors",
    "RunDirError": "tbkit.errors",
    "TbkitError": "tbkit.errors",
    "TrainingError": "tbkit.errors",
    "Hook": "tbkit.hooks",
    "write_graph": "tbkit.summary.graph",
    "confusion_matrix": "tbkit.summary.images",
    "confusion_matrix_image": "tbkit.summary.images",
    "confusion_matrix_summary": "tbkit.summary.images",
    "confusion_matrix_text": "tbkit.summary.images",
    "example_errors_image": "tbkit.summary.images",
    "example_errors_summary": "tbkit.summary.images",
    "figure_summary": "tbkit.summary.images",
    "figure_to_image": "tbkit.summary.images",
    "filter_grid": "tbkit.summary.images",
    "filters_summary": "tbkit.summary.images",
    "Model": "tbkit.model.model",
    "summarize_layers": "tbkit.model.model",
    "LayerRecorder": "tbkit.model.recorder",
    "variable_tags": "tbkit.model.recorder",
    "RunState": "tbkit.run.runstate",
    "variable_summaries": "tbkit.summary.summaries",
    "Evaluation": "tbkit.loop.trainer",
    "FitResult": "tbkit.loop.trainer",
    "Trainer": "tbkit.loop.trainer",
    "export_saved_model": "tbkit.loop.export",
    "ExportError": "tbkit.loop.export",
    "Validation": "tbkit.loop.trainer",
    "RunWriters": "tbkit.run.writers",
    "null_writers": "tbkit.run.writers",
}

# Modules of the flat layout of earlier releases, kept importable under their old
# names (`import tbkit.layers`, `tbkit.dynamics.findings`): each is the same
# module object as its new home.
_MOVED = {
    "summaries": "tbkit.summary.summaries",
    "images": "tbkit.summary.images",
    "classes": "tbkit.summary.classes",
    "projector": "tbkit.summary.projector",
    "graph": "tbkit.summary.graph",
    "hparams": "tbkit.summary.hparams",
    "dynamics": "tbkit.summary.dynamics",
    "profiling": "tbkit.summary.profiling",
    "rundir": "tbkit.run.rundir",
    "runstate": "tbkit.run.runstate",
    "checkpoints": "tbkit.run.checkpoints",
    "writers": "tbkit.run.writers",
    "recorder": "tbkit.model.recorder",
    "layers": "tbkit.model.layers",
    "distribute": "tbkit.loop.distribute",
    "interrupt": "tbkit.loop.interrupt",
    "trainer": "tbkit.loop.trainer",
    "results": "tbkit.loop.results",
    "callbacks": "tbkit.keras.summaries",
    "quiet": "tbkit.tools.quiet",
}


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `tbkit.<old name>` as the module it moved to."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix == "tbkit" and name in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(_MOVED[spec.name.partition(".")[2]])

    def exec_module(self, module):
        pass


if not any(isinstance(f, _OldNames) for f in sys.meta_path):
    sys.meta_path.insert(0, _OldNames())


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name == "MnistCNN":
        # The MNIST application is a client of the library, not part of it.
        warnings.warn(
            "tbkit.MnistCNN is deprecated; import it from tbkit.app.cnn",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module("tbkit.app.cnn").MnistCNN
    elif name in _MOVED:
        value = importlib.import_module(_MOVED[name])
    elif importlib.util.find_spec(f"tbkit.{name}") is not None:
        value = importlib.import_module(f"tbkit.{name}")  # tbkit.keras, tbkit.hooks, ...
    else:
        raise AttributeError(f"module 'tbkit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "ArchitectureError",
    "BestCheckpoint",
    "CheckpointError",
    "DataError",
    "EarlyStopping",
    "Evaluation",
    "ExportError",
    "FitResult",
    "Hook",
    "LayerRecorder",
    "LayerSummaries",
    "Model",
    "RunDirError",
    "RunState",
    "RunWriters",
    "TbkitError",
    "Trainer",
    "TrainingError",
    "Validation",
    "confusion_matrix",
    "confusion_matrix_image",
    "confusion_matrix_summary",
    "confusion_matrix_text",
    "datasets",
    "export_saved_model",
    "example_errors_image",
    "example_errors_summary",
    "figure_summary",
    "figure_to_image",
    "filter_grid",
    "filters_summary",
    "hooks",
    "is_improvement",
    "layers",
    "null_writers",
    "summarize_layers",
    "variable_summaries",
    "variable_tags",
    "write_graph",
]
