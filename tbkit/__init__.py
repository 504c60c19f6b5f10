"""tbkit: TensorBoard-centric instrumentation for TensorFlow 2.

The public face is `__all__`; everything else is internal.
"""

from tbkit import datasets, layers

# The MNIST application's model, kept importable as `tbkit.MnistCNN`.
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
