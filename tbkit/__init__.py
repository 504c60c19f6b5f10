"""tbkit: TensorBoard-centric instrumentation for TensorFlow 2."""

__version__ = "0.1.0"
