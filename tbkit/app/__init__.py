"""The MNIST application (`train_mnist.py`): a client of the tbkit engine.

`settings` declares every flag once, `cli` derives the command line from it,
`program` runs the tutorial's training with `tbkit.Trainer`, `cnn` is its model.
"""
