"""Overhead of tbkit instrumentation on the MNIST CNN train step, measured side by side.

Usage: python bench/overhead.py [--reps 7] [--steps 300] [--data-dir DIR]

One process, one model, one compiled train step. Each repetition runs every
configuration for `--steps` steps in a freshly shuffled order (interleaved, so
machine noise hits all of them alike):

  bare         the train step alone, no summaries at all
  every-N      the same step, plus the layer summaries every N steps:
               variable scalars + histograms, activation histograms and the
               conv-filter images (what train_mnist.py recorded before #14)
  dyn-N        what train_mnist.py records now every N steps: the recording
               variant of the train step on those steps (gradients, norms,
               update sizes) and all of the above plus the training dynamics
               (gradient norms and histograms, update ratios, zero / dead
               activation fractions, global norm, learning rate)

Prints the median seconds per step of each configuration and its ratio to
`bare`. Then, as a run pays it: a `tbkit.Trainer.fit` of the same network
with the defaults except `summary_every=10` (`--fit-steps`), each step timed
from the Trainer's step-begin to its step-end hook (train step, recording and
every hook of the step): one recording's cost is the median recorded step
minus the median plain step of the same fit. Next to it the numpy floor of
the same values (the weights, the gradients and the activations of one
recording): for each tensor its min, max, sum, sum of squares and a
30-bucket `bincount`, the least any implementation of these summaries must
compute, single-threaded. Not a test: the numbers depend on the machine and
its load.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tbkit  # noqa: E402
from tbkit.app.cnn import MnistCNN  # noqa: E402
from tbkit.loop.distribute import make_train_step  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--cadences", default="100,10", help="summary cadences to compare with bare"
    )
    parser.add_argument("--data-dir", default=os.path.join("tests", "data", "mnist_fixture"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--fit-steps", type=int, default=600, help="steps of the Trainer.fit measurement (0: skip)"
    )
    args = parser.parse_args(argv)

    data = tbkit.datasets.mnist.load(args.data_dir, validation_size=100, log=lambda _: None)
    ds = iter(
        tbkit.datasets.train_dataset(data.train_images, data.train_labels, args.batch_size, seed=0)
    )
    model = MnistCNN()
    model(tf.zeros((1, 28, 28, 1)))
    opt = keras.optimizers.Adam(1e-3)
    window = tf.Variable(tf.zeros(4), trainable=False)
    # The very step tbkit.Trainer (and so train_mnist.py) compiles (single device).
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # What the Trainer records at its summary cadence: every variable, the activations
    # of the logged batch and the filter grids.
    recorder = tbkit.LayerRecorder(model)
    dyn_recorder = tbkit.LayerRecorder(model, activation_fractions=True)  # what the Trainer uses
    strategy = tf.distribute.get_strategy()
    try:  # the recording step takes the activations from its own forward pass
        train_step = make_train_step(strategy, model, opt, loss, window, True, probe=dyn_recorder)
    except TypeError:  # a tbkit from before that (to measure side by side)
        train_step = make_train_step(strategy, model, opt, loss, window, True)

    recordings: dict[bool, list[float]] = {False: [], True: []}  # seconds per recording

    def run(config, steps: int, start: int) -> float:
        cadence, dynamics = config or (None, False)
        t0 = time.perf_counter()
        for step in range(start, start + steps):
            x, y = next(ds)
            record = cadence and step % cadence == 0
            if record and dynamics:
                t1 = time.perf_counter()
                _, _, dyn = train_step.recording(x, y)
                dyn_recorder.record(step, x, dynamics=dyn)
                recordings[True].append(time.perf_counter() - t1)
                continue
            train_step(x, y)
            if record:
                t1 = time.perf_counter()
                recorder.record(step, x)
                recordings[False].append(time.perf_counter() - t1)
        # Wait for the last step's results, so async work is not left uncounted.
        float(model.layer_fc2.bias[0].numpy())
        return (time.perf_counter() - t0) / steps

    cadences = [int(c) for c in args.cadences.split(",")]
    configs = [None] + [(c, d) for c in cadences for d in (False, True)]
    label = lambda c: "bare" if c is None else f"{'dyn' if c[1] else 'every'}-{c[0]}"  # noqa: E731
    with tempfile.TemporaryDirectory() as logdir:
        writer = tf.summary.create_file_writer(logdir)
        with writer.as_default():
            for c in configs:  # warm-up: trace every function once
                run((1, c[1]) if c else None, 5, 1)
            recordings[False].clear()
            recordings[True].clear()
            times = {c: [] for c in configs}
            step = 1
            for _ in range(args.reps):
                order = configs[:]
                random.shuffle(order)
                for c in order:
                    times[c].append(run(c, args.steps, step))
                    step += args.steps
        writer.close()

    bare = statistics.median(times[None])
    print(
        f"# tbkit overhead: MNIST CNN train step, batch {args.batch_size}, {args.reps} interleaved reps x {args.steps} steps"
    )
    print(f"# TF {tf.__version__}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"{'config':<10} {'ms/step':>8} {'ratio':>7} {'paired':>7}  min..max ms/step")
    for c in configs:
        med = statistics.median(times[c])
        lo, hi = min(times[c]) * 1e3, max(times[c]) * 1e3
        # Ratio to the bare block of the same repetition, then the median: slow
        # drifts of the machine's speed cancel within a repetition.
        paired = statistics.median(t / b for t, b in zip(times[c], times[None], strict=True))
        print(
            f"{label(c):<10} {med * 1e3:8.3f} {med / bare:7.3f} {paired:7.3f}  {lo:.3f}..{hi:.3f}"
        )
    # The steadier estimate: what the recordings themselves take, spread over their cadence.
    # (A dynamics recording includes its train step: one bare step is taken off.)
    for dyn in (False, True):
        rec = statistics.median(recordings[dyn]) - (bare if dyn else 0.0)
        name = "dyn" if dyn else "every"
        print(f"# one {name} recording: median {rec * 1e3:.1f} ms over {len(recordings[dyn])}")
        for c in cadences:
            print(f"# {name}-{c}: expected ratio from it {1 + rec / (c * bare):.3f}")
    if args.fit_steps:
        in_fit(args, data, bare)


class _StepTimes(tbkit.Hook):
    """Each step's time from the Trainer's step-begin hook to its step-end hook."""

    def __init__(self):
        self.times: dict[int, float] = {}

    def on_step_begin(self, run, step):
        self._t = time.perf_counter()

    def on_step_end(self, run, step):
        self.times[step] = time.perf_counter() - self._t


def _floor(values) -> float:
    """Seconds for numpy's least computation of the summaries of `values`."""
    t = time.perf_counter()
    for v in values:
        x = v.reshape(-1)
        lo, hi = x.min(), x.max()
        x.sum(dtype=np.float64)
        np.einsum("i,i->", x, x)  # not np.dot: single-threaded, as the recording
        scale = 30 / (hi - lo) if hi > lo else 0.0
        np.bincount(((x - lo) * scale).astype(np.intp), minlength=31)
    return time.perf_counter() - t


def in_fit(args, data, bare: float) -> None:
    """One default recording as `Trainer.fit` pays it, against its numpy floor."""
    every = 10
    model = MnistCNN()
    model(tf.zeros((1, 28, 28, 1)))
    times = _StepTimes()
    with tempfile.TemporaryDirectory() as logdir:
        trainer = tbkit.Trainer(
            model, keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True), logdir,
            summary_every=every, eval_every=10**9, checkpoint_every=10**9, patience=None,
            hooks=[times], progress=False, log=lambda _: None,
        )  # fmt: skip
        train = tbkit.datasets.train_dataset(
            data.train_images, data.train_labels, args.batch_size, seed=1
        )
        val = tbkit.datasets.eval_dataset(data.validation_images, data.validation_labels)
        trainer.fit(train, val, steps=args.fit_steps)
        # The same values one recording summarises, for the floor.
        x, y = next(iter(train))
        _, _, dyn = trainer._train_step.recording(x, y)
        recorder = trainer.recorder
        values = [np.asarray(v.numpy()) for v in recorder.tags.values()]
        values += [np.asarray(g) for g in dyn.gradients]
        values += [np.asarray(a) for a in recorder._probe(x).values()]
    steps = sorted(times.times)[3 * every :]  # after the first recordings' tracing
    recorded = [times.times[s] for s in steps if s % every == 0 and s != steps[-1]]
    plain = [times.times[s] for s in steps if s % every]
    one = statistics.median(recorded) - statistics.median(plain)
    floor = statistics.median(_floor(values) for _ in range(15))
    n = sum(v.size for v in values)
    step_ms = statistics.median(plain) * 1e3
    print(
        f"# in Trainer.fit ({args.fit_steps} steps, a recording every {every}; "
        f"{len(recorded)} recordings, {len(plain)} plain steps timed):"
    )
    print(f"#   plain step {step_ms:.1f} ms (the bench's bare step {bare * 1e3:.1f} ms)")
    print(
        f"#   one default recording (dynamics on) {one * 1e3:.1f} ms = "
        f"{one * 1e3 / step_ms:.2f} plain steps = {one / bare:.2f} bare steps"
    )
    print(
        f"#   its numpy floor ({n:,} values: weights, gradients, activations) "
        f"{floor * 1e3:.1f} ms ({floor / n * 1e9:.2f} ns per value)"
    )
    print(f"#   recording / floor {one / floor:.2f}")
    first, first_recorded = times.times[1], times.times[every]
    print(
        f"#   start-up: the first step {first:.2f} s (traces the train step), the first "
        f"recorded step {first_recorded:.2f} s (traces its recording variant and the recorder)"
    )


if __name__ == "__main__":
    main()
