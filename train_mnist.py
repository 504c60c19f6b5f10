#!/usr/bin/env python
"""Train the tutorial's MNIST CNN with tbkit. See `python train_mnist.py --help`.

A thin entry point: the flags are declared once in `tbkit/app/settings.py`.
"""

import sys

# TensorFlow is imported by `main`, quietly unless --verbose (tbkit/quiet.py).
from tbkit.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
