"""tbkit: TensorBoard-centric instrumentation for TensorFlow 2.

The public face is `__all__`; everything else is internal.

Names are imported on first use (PEP 562), so `import tbkit` itself costs
nothing and `train_mnist.py --help` does not load TensorFlow; `tbkit.Trainer`,
`from tbkit import Trainer` and `tbkit.layers` import what they need then.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from tbkit import datasets, layers
    from tbkit.app.cnn import MnistCNN
    from tbkit.callbacks import LayerSummaries
    from tbkit.checkpoints import BestCheckpoint, EarlyStopping, is_improvement
    from tbkit.errors import (
        ArchitectureError,
        CheckpointError,
        DataError,
        RunDirError,
        TbkitError,
        TrainingError,
    )
    from tbkit.graph import write_graph
    from tbkit.images import (
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
    from tbkit.model import Model, summarize_layers
    from tbkit.recorder import LayerRecorder, variable_tags
    from tbkit.runstate import RunState
    from tbkit.summaries import variable_summaries
    from tbkit.trainer import Evaluation, FitResult, Trainer, Validation
    from tbkit.writers import RunWriters, null_writers

# public name -> the module that defines it
_EXPORTS = {
    "MnistCNN": "tbkit.app.cnn",
    "LayerSummaries": "tbkit.callbacks",
    "BestCheckpoint": "tbkit.checkpoints",
    "EarlyStopping": "tbkit.checkpoints",
    "is_improvement": "tbkit.checkpoints",
    "ArchitectureError": "tbkit.errors",
    "CheckpointError": "tbkit.errors",
    "DataError": "tbkit.errors",
    "RunDirError": "tbkit.errors",
    "TbkitError": "tbkit.errors",
    "TrainingError": "tbkit.errors",
    "write_graph": "tbkit.graph",
    "confusion_matrix": "tbkit.images",
    "confusion_matrix_image": "tbkit.images",
    "confusion_matrix_summary": "tbkit.images",
    "confusion_matrix_text": "tbkit.images",
    "example_errors_image": "tbkit.images",
    "example_errors_summary": "tbkit.images",
    "figure_summary": "tbkit.images",
    "figure_to_image": "tbkit.images",
    "filter_grid": "tbkit.images",
    "filters_summary": "tbkit.images",
    "Model": "tbkit.model",
    "summarize_layers": "tbkit.model",
    "LayerRecorder": "tbkit.recorder",
    "variable_tags": "tbkit.recorder",
    "RunState": "tbkit.runstate",
    "variable_summaries": "tbkit.summaries",
    "Evaluation": "tbkit.trainer",
    "FitResult": "tbkit.trainer",
    "Trainer": "tbkit.trainer",
    "Validation": "tbkit.trainer",
    "RunWriters": "tbkit.writers",
    "null_writers": "tbkit.writers",
}
_SUBMODULES = {"datasets", "layers"}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES or importlib.util.find_spec(f"tbkit.{name}") is not None:
        value = importlib.import_module(f"tbkit.{name}")  # tbkit.summaries, tbkit.keras, ...
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
    "FitResult",
    "LayerRecorder",
    "LayerSummaries",
    "MnistCNN",
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
    "example_errors_image",
    "example_errors_summary",
    "figure_summary",
    "figure_to_image",
    "filter_grid",
    "filters_summary",
    "is_improvement",
    "layers",
    "null_writers",
    "summarize_layers",
    "variable_summaries",
    "variable_tags",
    "write_graph",
]
