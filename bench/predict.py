"""`train_mnist.py predict` on people-made pictures of full MNIST's test digits, measured.

Usage: python bench/predict.py RUN [RUN ...] [--digits 1000] [--seed 7]

For each run: the first `--digits` test digits drawn the way people make them
(`tests/helpers.py:person_made`: dark ink on light paper of random shade, 3-8x
larger, off-centre, JPEG of random quality, some tinted, some PNGs of ink on a
transparent background), each brought to MNIST's form by `tbkit.app.digits`, and
the run's best checkpoint's prediction compared with its prediction on the
original 28x28 digit (agreement) and with the label (accuracy on the pictures
against accuracy on the originals), and the preprocessing's time per picture.

Not a test: a measurement on full MNIST (the cache).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--digits", type=int, default=1000)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    import numpy as np
    from PIL import Image

    from helpers import person_made
    from tbkit.app import digits
    from tbkit.app.predict import probabilities
    from tbkit.app.restore import load_best
    from tbkit.datasets import mnist

    data = mnist.load(None, 5000, log=lambda _: None)
    images, labels = data.test_images[: args.digits], data.test_labels[: args.digits]
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    pictures = []
    for image in images:
        raw, _ = person_made(image, rng)
        with Image.open(io.BytesIO(raw)) as picture:
            pictures.append(digits._grey(picture))  # noqa: SLF001 - the reader's first step
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    forms = np.stack([digits.to_mnist(pic) for pic in pictures])
    per = (time.perf_counter() - t0) / len(pictures)
    print(f"{len(pictures)} pictures (made and decoded in {made:.1f} s); to MNIST's form: "
          f"{per * 1000:.2f} ms per picture; mean |form - original| "
          f"{np.abs(forms.astype(float) - images).mean():.1f} / 255")  # fmt: skip
    for run in args.runs:
        restored = load_best(run)
        own = probabilities(restored.model, images).argmax(axis=1)
        got = probabilities(restored.model, forms).argmax(axis=1)
        print(f"{run} ({restored.name}, step {restored.step}): agreement "
              f"{np.mean(got == own):.2%}; accuracy on the originals {np.mean(own == labels):.2%}, "
              f"on the pictures {np.mean(got == labels):.2%}")  # fmt: skip


if __name__ == "__main__":
    main()
