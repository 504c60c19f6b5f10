"""`train_mnist.py predict RUN FILE...`: a trained run's digit for each of a person's images.

Restores the run's best checkpoint in the network its `config.json` names,
brings each picture to MNIST's form (`tbkit.app.digits`), and prints per image
the digit and the top-3 probabilities (`--json`: one JSON document for
scripts). A file that cannot be read or holds no digit gets one line on stderr
naming it; the others are still predicted; the exit code is 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import sys

from tbkit.app.parsing import OneLineParser

PROG = "train_mnist.py predict"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Predict the digit of each image with a trained run's best checkpoint. "
        "Pictures (PNG, JPEG, BMP, GIF; any size, dark on light or light on dark) are brought "
        "to MNIST's form first; IDX files and .npy arrays hold MNIST-form 28x28 images.",
    )
    p.add_argument("run", metavar="RUN", help="a run directory (e.g. logs/RUN)")
    p.add_argument("files", nargs="+", metavar="FILE", help="images, IDX files or .npy arrays")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--top", type=int, default=3, help="how many probabilities per image")
    return p


def probabilities(model, images) -> object:
    """Softmax outputs of `model` on uint8 `(n, 28, 28)` images, as numpy."""
    import numpy as np
    import tensorflow as tf

    out = []
    for start in range(0, len(images), 256):
        x = tf.cast(images[start : start + 256], tf.float32)[..., tf.newaxis] / 255.0
        out.append(tf.nn.softmax(model(x, training=False)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    if args.top < 1:
        print(f"{PROG}: error: --top must be a positive integer", file=sys.stderr)
        return 2
    import numpy as np

    from tbkit.app import digits
    from tbkit.errors import TbkitError
    from tbkit.tools.quiet import import_tensorflow

    import_tensorflow(False)
    from tbkit.app.restore import load_best

    try:
        restored = load_best(args.run)
    except TbkitError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr, flush=True)
        return 1
    labels, images, failed = [], [], []
    for path in args.files:
        try:
            for label, image in digits.read(path):
                labels.append(label)
                images.append(image)
        except digits.DigitError as e:
            failed.append({"file": path, "error": str(e)})
            print(f"{PROG}: error: {e}", file=sys.stderr, flush=True)
    probs = probabilities(restored.model, np.stack(images) if images else np.zeros((0, 28, 28)))
    top = min(args.top, probs.shape[1])
    results = []
    for label, p in zip(labels, probs, strict=True):
        order = np.argsort(-p, kind="stable")[:top]
        results.append({"file": label, "digit": int(order[0]),
                        "top": [{"digit": int(k), "probability": float(p[k])} for k in order]})  # fmt: skip
    if args.json:
        doc = {"run": restored.config.get("flags", {}).get("run_name") or args.run,
               "model": restored.name, "checkpoint_step": restored.step,
               "predictions": results, "errors": failed}  # fmt: skip
        print(json.dumps(doc, indent=2))
    else:
        for r in results:
            tops = ", ".join(f"{t['digit']} {t['probability']:.1%}" for t in r["top"])
            print(f"{r['file']}: {r['digit']}  ({tops})", flush=True)
    return 1 if failed else 0
