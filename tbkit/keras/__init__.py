"""The Keras door: `TensorBoardRun` for `model.fit`, and the lighter `LayerSummaries`.

`tbkit.keras.TensorBoardRun` adapts Keras' callback methods to the run
protocol's events (`tbkit.hooks`), so `model.fit` gets every feature of
`tbkit.Trainer`.
"""

from tbkit.keras.callback import TensorBoardRun
from tbkit.keras.summaries import LayerSummaries
from tbkit.model.recorder import variable_tags

__all__ = ["LayerSummaries", "TensorBoardRun", "variable_tags"]
