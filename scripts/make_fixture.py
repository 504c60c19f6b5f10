"""Builds the small real-MNIST test fixture from the verified full data set.

Usage: python scripts/make_fixture.py [--data-dir DIR] [--out tests/data/mnist_fixture]

Takes the first 2,000 training and the first 500 test images of the verified
full MNIST (any source `tbkit.datasets.mnist.load` accepts), writes them as
gzipped IDX files with the original names, and a SHA256SUMS manifest of the
uncompressed files so the loader verifies the fixture like the real data.
"""

from __future__ import annotations

import argparse
import gzip
import os

from tbkit.datasets import idx, mnist


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="full MNIST (default: cache or fetch)")
    parser.add_argument("--out", default=os.path.join("tests", "data", "mnist_fixture"))
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    args = parser.parse_args(argv)

    full = mnist.load(args.data_dir, validation_size=5000)
    if full.sha256 != {k: v for k, v in mnist.IDX_SHA256.items()} and full.sha256 != {
        mnist.NPZ_NAME: mnist.KERAS_NPZ_SHA256
    }:
        raise SystemExit("the fixture must be cut from the canonical full data set")
    # Re-join the split: validation is the head of the training set.
    import numpy as np

    arrays = {
        "train_images": np.concatenate([full.validation_images, full.train_images])[: args.train],
        "train_labels": np.concatenate([full.validation_labels, full.train_labels])[
            : args.train
        ].astype(np.uint8),
        "test_images": full.test_images[: args.test],
        "test_labels": full.test_labels[: args.test].astype(np.uint8),
    }
    os.makedirs(args.out, exist_ok=True)
    for key, (name, _, _) in mnist.FILES.items():
        path = os.path.join(args.out, name + ".gz")
        # mtime=0 keeps the .gz bytes reproducible.
        with open(path, "wb") as raw, gzip.GzipFile(name, "wb", 9, raw, mtime=0) as f:
            f.write(idx.encode_idx(arrays[key]))
    with open(os.path.join(args.out, mnist.MANIFEST), "w") as f:
        f.write(mnist.fixture_manifest(arrays))
    print(f"wrote {args.train} train / {args.test} test images to {args.out}")


if __name__ == "__main__":
    main()
