"""tbkit: TensorBoard-centric instrumentation for TensorFlow 2.

The public face is `__all__`; everything else is internal.
"""

from tbkit import datasets, layers
from tbkit.callbacks import LayerSummaries
from tbkit.checkpoints import BestCheckpoint, EarlyStopping, is_improvement
from tbkit.errors import CheckpointError, DataError, RunDirError, TbkitError
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
from tbkit.model import MnistCNN, Model, summarize_layers
from tbkit.summaries import variable_summaries
from tbkit.writers import RunWriters, null_writers

__version__ = "0.1.0"

__all__ = [
    "BestCheckpoint",
    "CheckpointError",
    "DataError",
    "EarlyStopping",
    "LayerSummaries",
    "MnistCNN",
    "Model",
    "RunDirError",
    "RunWriters",
    "TbkitError",
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
    "write_graph",
]
