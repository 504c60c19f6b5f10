#!/usr/bin/env python
"""Train the tutorial's MNIST CNN with tbkit. See `python train_mnist.py --help`.

A thin entry point: the flags are declared once in `tbkit/app/settings.py`.
"""

import os
import sys

# Before TensorFlow is imported: keep its C++ start-up chatter off the console.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tbkit.app.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
