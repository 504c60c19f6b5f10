"""Why validation alone costs about a quarter of a default run: step vs. validation pass.

Usage: python bench/validation_cost.py [--reps 5] [--data-dir DIR]

Measures, interleaved in one process, the trainer's compiled train step
(batch 64) and one validation pass of the trainer's evaluator (5,000 images,
batches of 1,000), and counts their floating-point operations with
TensorFlow's own profiler (`tf.compat.v1.profiler`, forward graph of the
model). If both run at the same rate (GFLOP/s), the processor is the limit:
the validation pass then costs what its arithmetic costs, and its share of a
run is fixed by the tutorial's cadence (every 100 iterations), not by tbkit.

Not a test: numbers depend on the machine and its load (this one: 2 shared cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import tbkit  # noqa: E402
from tbkit.app.cnn import MnistCNN  # noqa: E402
from tbkit.loop.distribute import make_evaluator, make_train_step  # noqa: E402


def forward_flops(model, batch: int) -> int:
    """Float operations of one forward pass over `batch` images, per TF's profiler."""
    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((batch, 28, 28, 1), tf.float32)).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    tf.get_logger().setLevel("ERROR")  # the v1 profiler's deprecation notice
    return tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--eval-every", type=int, default=100)
    args = parser.parse_args(argv)

    d = tbkit.datasets.mnist.load(args.data_dir, validation_size=5000, log=lambda _: None)
    model = MnistCNN()
    model(tf.zeros((1, 28, 28, 1)))
    strategy = tf.distribute.get_strategy()
    window = tf.Variable(tf.zeros(4))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    step = make_train_step(strategy, model, keras.optimizers.Adam(1e-3), loss, window, True)
    val = tbkit.datasets.eval_dataset(d.validation_images, d.validation_labels)
    evaluate = make_evaluator(strategy, model, val, loss, True)
    it = iter(tbkit.datasets.train_dataset(d.train_images, d.train_labels, 64, seed=0))
    for _ in range(20):
        step(*next(it))
    evaluate()

    steps, passes = [], []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        for _ in range(args.eval_every):
            step(*next(it))
        float(window[0].numpy())
        steps.append((time.perf_counter() - t0) / args.eval_every)
        t0 = time.perf_counter()
        evaluate()
        passes.append(time.perf_counter() - t0)
    step_s, pass_s = statistics.median(steps), statistics.median(passes)

    n_val = len(d.validation_images)
    fwd_image = forward_flops(model, 1000) / 1000
    train_flops = 3 * fwd_image * 64  # forward + the two backward products
    eval_flops = fwd_image * n_val
    share = pass_s / (args.eval_every * step_s)
    print(f"# train step vs validation pass, {args.reps} interleaved reps (medians)")
    print(f"forward pass             {fwd_image / 1e6:8.2f} MFLOP per image (TF profiler)")
    print(f"train step (batch 64)    {step_s * 1e3:8.2f} ms   {train_flops / step_s / 1e9:6.1f} GFLOP/s (3 x forward)")  # fmt: skip
    print(f"validation pass ({n_val})  {pass_s * 1e3:8.1f} ms   {eval_flops / pass_s / 1e9:6.1f} GFLOP/s")  # fmt: skip
    print(f"one pass / {args.eval_every} steps      {share:8.1%}   (FLOP share: {eval_flops / (args.eval_every * train_flops):.1%})")  # fmt: skip
    print(f"=> wall / (iterations x bare step) >= {1 + share:.2f} from validation alone")


if __name__ == "__main__":
    main()
