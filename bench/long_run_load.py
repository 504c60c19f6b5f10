"""A long run's event files: their size, and how fast a real TensorBoard serves them.

Usage: python bench/long_run_load.py [--iterations 200000] [--logdir DIR] [--keep]

1. Writes a synthetic run of `--iterations` iterations with the tags a default
   `train_mnist.py` run writes, at its cadences, through the library and
   without training: the MNIST CNN's `LayerRecorder` (variable statistics and
   histograms, activations, the training dynamics from one real recording step,
   filter grids at the image cadence) every 100 iterations, the train and
   validation `loss` / `accuracy` / `best_accuracy` scalars and the `health`
   text every 100, the confusion matrix and example errors every 500 (the
   most a default run writes: one per `--image-every` at improvements).
2. Launches `tensorboard --logdir` (its Rust data server when installed, as
   `--load_fast=auto` picks it) and measures the time from launch until the
   server first answers, then until it serves the last validation accuracy
   point and the last point of a weight histogram, and both processes' peak RSS.
3. Launches it again with `--samples_per_plugin images=N` (N = the images a tag
   recorded, what `python -m tbkit.report` suggests) and checks that every
   filter grid is served.

Prints the figures; not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The test and tool helpers live with the tests (not in the installed library).
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
)
from helpers import free_ports, get  # noqa: E402


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def write_run(run_dir: str, iterations: int, data_dir: str) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    import tbkit
    from tbkit.loop.distribute import make_train_step
    from tbkit.summary import dynamics as tbd
    from tbkit.summary import images as tbi
    from tbkit.summary.summaries import write_eagerly

    data = tbkit.datasets.mnist.load(data_dir, validation_size=100, log=lambda _: None)
    x, y = next(
        iter(tbkit.datasets.train_dataset(data.train_images, data.train_labels, 64, seed=0))
    )
    from tbkit.app.cnn import MnistCNN

    model = MnistCNN()
    model(x[:1])
    window = tf.Variable(tf.zeros(4), trainable=False)
    step_fn = make_train_step(
        tf.distribute.get_strategy(), model, keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True), window, True,
    )  # fmt: skip
    _, _, dyn = step_fn.recording(x, y)  # one real recording step: real gradients and norms
    recorder = tbkit.LayerRecorder(model, activation_fractions=True)
    labels = data.validation_labels[:100]
    preds = (labels + (np.arange(100) % 7 == 0)) % 10
    confusion = tbi.confusion_matrix_image(tbi.confusion_matrix(labels, preds, 10))
    errors = tbi.example_errors_image(data.validation_images[:100] / 255.0, labels, preds)
    writers = tbkit.RunWriters(run_dir)
    start = time.perf_counter()
    for step in range(100, iterations + 1, 100):
        with writers.scope("train"):
            filters = step == 100 or step % 500 == 0
            recorder.record(step, x, dynamics=dyn, filters=filters)
            write_eagerly([("loss", "scalar", 0.1), ("accuracy", "scalar", 0.97)], step=step)
            tbd.write_findings(recorder.latest, step)
        with writers.scope("validation"):
            write_eagerly([(t, "scalar", 0.98) for t in ("loss", "accuracy", "best_accuracy")],
                          step=step)  # fmt: skip
            if step % 500 == 0:
                tbi.image_summary("confusion_matrix", confusion, step)
                tbi.image_summary("example_errors", errors, step)
        if step % 20000 == 0:
            rate = (time.perf_counter() - start) / step * 1000
            print(f"  wrote {step:,} iterations ({rate:.1f} s per 1,000)", flush=True)
    writers.close()


def peak_rss_mb(pid: int) -> float:
    """VmHWM of `pid` and of its children (the data server), summed."""
    total = 0.0
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def serve(logdir: str, last: int, extra: list[str], check) -> dict:
    [port] = free_ports(1)
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
           "--port", str(port), *extra]  # fmt: skip
    launched = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    answered = ready = None
    try:
        while time.perf_counter() - launched < 600:
            try:
                get(base + "/data/runs", timeout=5)
            except (OSError, ValueError):
                time.sleep(0.02)
                continue
            if answered is None:
                answered = time.perf_counter()
            if check(base, last):
                ready = time.perf_counter()
                break
            time.sleep(0.02)
        memory = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    if ready is None:
        raise SystemExit(f"tensorboard never served step {last}:\n{err[-2000:]}")
    return {"up": answered - launched, "ready": ready - answered, "rss": memory,
            "fast": "data server" in err.lower() or "load_fast" in " ".join(extra)}  # fmt: skip


def last_points_served(base: str, last: int) -> bool:
    def last_step(plugin: str, route: str, run: str, tag: str) -> int | None:
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        try:
            points = get(f"{base}/data/plugin/{plugin}/{route}?{query}", timeout=10)
        except (OSError, ValueError):
            return None
        return points[-1][1] if points else None

    return (
        last_step("scalars", "scalars", "long/validation", "accuracy") == last
        and last_step("histograms", "histograms", "long/train", "layer_fc1/weights/histogram")
        == last
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200_000)
    parser.add_argument("--logdir", default=None, help="reuse (or keep) the run here")
    parser.add_argument("--data-dir", default=os.path.join("tests", "data", "mnist_fixture"))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)

    logdir = args.logdir or tempfile.mkdtemp(prefix="tbkit-long-")
    run_dir = os.path.join(logdir, "long")
    last = args.iterations - args.iterations % 100
    try:
        if not os.path.isdir(run_dir):
            print(f"writing {args.iterations:,} iterations to {run_dir}", flush=True)
            t = time.perf_counter()
            write_run(run_dir, args.iterations, args.data_dir)
            print(f"  written in {time.perf_counter() - t:.0f} s")
        size = {r: dir_size(os.path.join(run_dir, r)) for r in ("train", "validation")}
        total = sum(size.values())
        print(f"event files: {total / 1e6:.1f} MB = {total / 1e6 / (last / 1000):.3f} MB per "
              f"1,000 iterations (train {size['train'] / 1e6:.1f} MB, validation "
              f"{size['validation'] / 1e6:.1f} MB)")  # fmt: skip

        first = serve(logdir, last, [], last_points_served)
        print(f"tensorboard: answers {first['up']:.1f} s after launch; serves the last "
              f"validation-accuracy and weight-histogram points {first['ready']:.2f} s after "
              f"answering; peak RSS (server + data server) {first['rss']:.0f} MB")  # fmt: skip

        from tbkit.tools.report import images_per_tag

        n = max(images_per_tag(os.path.join(run_dir, "train")).values())

        def every_filter_grid(base: str, last_step: int) -> bool:
            query = urllib.parse.urlencode({"run": "long/train", "tag": "layer_conv2/filters"})
            try:
                return len(get(f"{base}/data/plugin/images/images?{query}", timeout=10)) == n
            except (OSError, ValueError):
                return False

        full = serve(logdir, last, ["--samples_per_plugin", f"images={n}"], every_filter_grid)
        print(f"with --samples_per_plugin images={n}: all {n} filter grids of a tag served "
              f"{full['ready']:.2f} s after answering; peak RSS {full['rss']:.0f} MB")  # fmt: skip
    finally:
        if not args.keep and not args.logdir:
            shutil.rmtree(logdir, ignore_errors=True)


if __name__ == "__main__":
    main()
