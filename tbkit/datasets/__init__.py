"""Datasets: verified MNIST loading and the tf.data input pipeline."""

from tbkit.datasets import mnist
from tbkit.datasets.pipeline import eval_dataset, train_dataset

__all__ = ["mnist", "train_dataset", "eval_dataset"]
