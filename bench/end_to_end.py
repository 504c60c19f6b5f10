"""A default train_mnist.py run, measured: wall time, its split, log size, load time, peak RSS.

Usage: python bench/end_to_end.py [--data-dir DIR] [--extra "--num-iterations 2000"]

Runs `train_mnist.py` as a child process on full MNIST (the cache or
`--data-dir`), then reports:

  - wall time, iterations, and the split the trainer prints (train steps,
    summaries, validation, checkpoints, test);
  - wall time / (iterations x bare step time), the bare step time measured in
    this same process right after the run (the same compiled step, no summaries);
  - the run directory's size, and the time TensorBoard's own EventAccumulator
    takes to load every run in it;
  - the child's peak RSS.

Not a test: numbers depend on the machine and its load (this one: 2 shared cores).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def bare_step_seconds(steps: int = 300) -> float:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    import tbkit
    from tbkit.distribute import make_train_step

    d = tbkit.datasets.mnist.load(None, validation_size=5000, log=lambda _: None)
    model = tbkit.MnistCNN()
    model(tf.zeros((1, 28, 28, 1)))
    opt = keras.optimizers.Adam(1e-3)
    window = tf.Variable(tf.zeros(3))
    step = make_train_step(tf.distribute.get_strategy(), model, opt, window, 64)
    ds = iter(tbkit.datasets.train_dataset(d.train_images, d.train_labels, 64, seed=0, max_shift=2))
    for _ in range(20):
        step(*next(ds))
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*next(ds))
    float(window[0].numpy())
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--extra", default="", help="extra flags for train_mnist.py")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as logdir:
        cmd = [
            sys.executable,
            os.path.join(ROOT, "train_mnist.py"),
            "--logdir",
            logdir,
            "--run-name",
            "bench",
            "--seed",
            "1",
        ]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        cmd += shlex.split(args.extra)
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        iterations = max(int(m) for m in re.findall(r"^Iter:\s+(\d+)", proc.stdout, re.M))
        split = re.search(r"^Time split: (.*)$", proc.stdout, re.M)[1]
        test = re.search(r"^Accuracy on Test-Set: .*$", proc.stdout, re.M)[0]
        size_mb = dir_size(os.path.join(logdir, "bench")) / 1e6
        events_mb = (
            sum(dir_size(os.path.join(logdir, "bench", d)) for d in ("train", "validation", "test"))
            / 1e6
        )

        from tensorboard.backend.event_processing import plugin_event_multiplexer as pem

        t0 = time.perf_counter()
        mux = pem.EventMultiplexer(
            tensor_size_guidance={"histograms": 500, "images": 10, "scalars": 10000}
        )
        mux.AddRunsFromDirectory(logdir)
        mux.Reload()
        load_s = time.perf_counter() - t0

    bare = bare_step_seconds()
    print("# end to end: python train_mnist.py (defaults, --seed 1) on full MNIST")
    print(f"wall time              {wall:8.1f} s  ({iterations} iterations; {test})")
    print(f"time split             {split}")
    print(
        f"bare step              {bare * 1e3:8.2f} ms  (same compiled step, no summaries, measured after the run)"
    )
    print(f"wall / (iters x bare)  {wall / (iterations * bare):8.2f}")
    print(
        f"run directory          {size_mb:8.1f} MB  (event files {events_mb:.1f} MB, the rest checkpoints)"
    )
    print(
        f"TensorBoard load       {load_s:8.2f} s  (EventMultiplexer, TensorBoard's default sampling)"
    )
    print(f"peak RSS of the run    {peak_mb:8.0f} MB")


if __name__ == "__main__":
    main()
