"""A default train_mnist.py run, measured: wall time, its split, log size, load time, peak RSS.

Usage: python bench/end_to_end.py [--data-dir DIR] [--runs 2] [--extra "--num-iterations 2000"]

Runs `train_mnist.py` as a child process on full MNIST (the cache or
`--data-dir`), `--runs` times, and reports for each:

  - wall time from launch to exit, iterations, and the split the trainer
    prints (start-up, train steps, summaries, validation, checkpoints, test,
    other); "launch" is the rest: the interpreter and the TensorFlow import;
    and the start-up the run pays inside it: its first step and first recorded
    step (train step + recording), each tracing its functions;
  - wall time / (iterations x bare step time). The bare step (the same
    compiled step on the same input pipeline, no summaries, no validation) is
    measured in this process before the first run and after each run; the
    mean of the measurements either side of a run is its denominator;
  - the run directory's size;
  - TensorBoard's loading of it: the Python `EventMultiplexer` (TensorFlow
    imported beforehand, as a server has it), and a real `tensorboard` server
    (launch until it answers, and until it serves the last validation point);
  - the child's peak RSS;
  - the floor of the run, measured in this process: launch (`python -c
    "import tensorflow, keras"`) + iterations x bare step + validations x the
    bare compiled validation pass (5,000 images) + the bare test pass (10,000),
    and wall / floor; the event files' size per 1,000 iterations;
  - the import time of `tensorflow`, `tensorflow, keras` and tbkit's entry
    points, each in fresh interpreters;
  - what the classifier dashboards add to a run (issue 16), timed in this
    process on full MNIST's validation set: the per-class scalars and PR
    curves written at each validation (from the predictions validation
    already has), and the projector's one embedding at the end (best weights
    loaded and put back, 1,000 examples, TSVs and sprite), against each run's
    wall time.

Not a test: numbers depend on the machine and its load (this one: 2 shared cores).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

# The test and tool helpers live with the tests (not in the installed library).
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
)
from helpers import get, tensorboard_server  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


class BareStep:
    """The trainer's compiled step with nothing around it, timed on demand."""

    def __init__(self, data_dir: str | None):
        import keras
        import tensorflow as tf

        import tbkit
        from tbkit.loop.distribute import make_train_step

        d = tbkit.datasets.mnist.load(data_dir, validation_size=5000, log=lambda _: None)
        from tbkit.app.cnn import MnistCNN

        model = MnistCNN()
        model(tf.zeros((1, 28, 28, 1)))
        self.window = tf.Variable(tf.zeros(4))
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.step = make_train_step(
            tf.distribute.get_strategy(),
            model,
            keras.optimizers.Adam(1e-3),
            loss,
            self.window,
            True,
        )
        ds = tbkit.datasets.train_dataset(d.train_images, d.train_labels, 64, seed=0, max_shift=2)
        self.it = iter(ds)
        self.seconds(20)
        # The trainer's compiled evaluation over the validation and test sets, alone.
        from tbkit.loop.distribute import make_evaluator

        strategy = tf.distribute.get_strategy()
        self.validate = make_evaluator(
            strategy, model, tbkit.datasets.eval_dataset(d.validation_images, d.validation_labels),
            loss, True,
        )  # fmt: skip
        self.test = make_evaluator(
            strategy, model, tbkit.datasets.eval_dataset(d.test_images, d.test_labels), loss, True
        )
        self.validate(), self.test()  # traced
        self.model, self.val_ds = (
            model,
            tbkit.datasets.eval_dataset(d.validation_images, d.validation_labels),
        )

    def dashboards_seconds(self, reps: int = 5) -> tuple[float, float, int]:
        """(per validation: per-class scalars + PR curves, the projector once, PR bytes)."""
        import tensorflow as tf

        from tbkit.summary import projector
        from tbkit.summary.classes import write_per_class, write_pr_curves

        _, labels, pred, scores = self.validate()
        with tempfile.TemporaryDirectory() as tmp:
            writer = tf.summary.create_file_writer(tmp)
            times = []
            with writer.as_default(step=1):
                for _ in range(reps):
                    t0 = time.perf_counter()
                    write_per_class(labels, pred, 10)
                    write_pr_curves(labels, scores)
                    times.append(time.perf_counter() - t0)
            writer.close()
            pr_bytes = dir_size(tmp) // reps
            ckpt = tf.train.Checkpoint(model=self.model).write(os.path.join(tmp, "best"))
            os.makedirs(os.path.join(tmp, "run", "validation"))
            t0 = time.perf_counter()
            with projector.best_weights(self.model, ckpt):
                projector.write_embedding(os.path.join(tmp, "run"), self.model, self.val_ds,
                                          step=1, best=True)  # fmt: skip
            project = time.perf_counter() - t0
        return statistics.median(times), project, pr_bytes

    def pass_seconds(self, which: str, reps: int = 3) -> float:
        """Median seconds of one bare validation (or test) pass."""
        fn = self.validate if which == "validation" else self.test
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def seconds(self, steps: int = 400) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step(*next(self.it))
        float(self.window[0].numpy())
        return (time.perf_counter() - t0) / steps


def launch_seconds(code: str, reps: int = 3) -> float:
    """Median wall time of `python -c CODE` (interpreter start-up plus its imports)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def multiplexer_load(logdir: str) -> float:
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem

    t0 = time.perf_counter()
    mux = pem.EventMultiplexer(
        tensor_size_guidance={"histograms": 500, "images": 10, "scalars": 10000}
    )
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    return time.perf_counter() - t0


def server_load(logdir: str, run: str | None, last_step: int) -> tuple[float, float]:
    """Seconds from launching `tensorboard` to (answering, serving `last_step`).

    With `run=None`, only the time to answer (for an empty logdir)."""
    t0 = time.perf_counter()
    up = []

    def served(base: str) -> bool:
        up.append(up[0] if up else time.perf_counter() - t0)
        if run is None:
            return True
        query = urllib.parse.urlencode({"run": f"{run}/validation", "tag": "accuracy"})
        points = get(f"{base}/data/plugin/scalars/scalars?{query}", timeout=5)
        return bool(points) and points[-1][1] == last_step

    with tensorboard_server(logdir, ready=served, timeout=120):
        return up[0], time.perf_counter() - t0


def one_run(data_dir: str | None, extra: str, logdir: str) -> dict:
    cmd = [sys.executable, os.path.join(ROOT, "train_mnist.py"), "--logdir", logdir]
    cmd += ["--run-name", "bench", "--seed", "1"]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    cmd += shlex.split(extra)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        # wait4 gives this child's own peak RSS (ru_maxrss, KiB).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(stderr[-2000:])
    h, m, s = re.search(r"^Time usage: (\d+):(\d+):(\d+)$", stdout, re.M).groups()
    return {
        "wall": wall,
        "trainer": int(h) * 3600 + int(m) * 60 + int(s),
        "iterations": max(int(m) for m in re.findall(r"^Iter:\s+(\d+)", stdout, re.M)),
        "validations": len(re.findall(r"^Iter:", stdout, re.M)),
        "split": re.search(r"^Time split: (.*)$", stdout, re.M)[1],
        "validation_s": float(re.search(r"validation \d+% \(([\d.]+) s\)", stdout)[1]),
        "test": re.search(r"^Accuracy on Test-Set: (.*)$", stdout, re.M)[1],
        "startup": (
            re.search(r"^Start-up inside the run \(tracing\): (.*)$", stdout, re.M)
            or [None, "not printed"]
        )[1],  # fmt: skip
        "peak_mb": usage.ru_maxrss / 1024,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--extra", default="", help="extra flags for train_mnist.py")
    args = parser.parse_args(argv)

    import tensorflow  # noqa: F401  (a TensorBoard server has it imported before it loads)

    with tempfile.TemporaryDirectory() as empty:
        empty_up, _ = server_load(empty, None, None)
    imports = {
        "import tensorflow": launch_seconds("import tensorflow"),
        "import tensorflow, keras": launch_seconds("import tensorflow, keras"),
        "import tbkit": launch_seconds("import tbkit"),
        "from tbkit import Trainer": launch_seconds("from tbkit import Trainer"),
        "import tbkit.app.program": launch_seconds("import tbkit.app.program"),
    }
    bare = BareStep(args.data_dir)
    bares = [bare.seconds()]
    results = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as logdir:
            r = one_run(args.data_dir, args.extra, logdir)
            bares.append(bare.seconds())
            r["bare"] = (bares[-2] + bares[-1]) / 2
            r["bare_validation"] = bare.pass_seconds("validation")
            r["bare_test"] = bare.pass_seconds("test")
            r["size_mb"] = dir_size(os.path.join(logdir, "bench")) / 1e6
            r["events_mb"] = (  # event files only (the projector's files are not events)
                sum(
                    os.path.getsize(f)
                    for d in ("train", "validation", "test")
                    for f in glob.glob(os.path.join(logdir, "bench", d, "events.out.tfevents.*"))
                )
                / 1e6
            )
            r["mux_s"] = multiplexer_load(logdir)
            r["server_up_s"], r["server_done_s"] = server_load(logdir, "bench", r["iterations"])
            results.append(r)
        print(f"run {i + 1}: {r['wall']:.1f} s, bare {r['bare'] * 1e3:.2f} ms", flush=True)

    print("\n# end to end: python train_mnist.py (defaults, --seed 1) on full MNIST")
    print(
        f"bare step (ms), before the first run and after each: {[round(b * 1e3, 2) for b in bares]}"
    )
    for i, r in enumerate(results, 1):
        ratio = r["wall"] / (r["iterations"] * r["bare"])
        print(f"\n## run {i}")
        print(f"wall time              {r['wall']:8.1f} s  ({r['iterations']} iterations, {r['validations']} validations; test {r['test']})")  # fmt: skip
        print(f"launch (interpreter + TensorFlow import) {r['wall'] - r['trainer']:.0f} s; trainer {r['trainer']} s: {r['split']}")  # fmt: skip
        print(f"start-up inside the run: {r['startup']} (each traces its functions; in the split's train steps and summaries)")  # fmt: skip
        print(f"bare step              {r['bare'] * 1e3:8.2f} ms  (mean of the measurements either side)")  # fmt: skip
        print(f"wall / (iters x bare)  {ratio:8.2f}")
        print(f"run directory          {r['size_mb']:8.1f} MB  (event files {r['events_mb']:.1f} MB, the rest checkpoints)")  # fmt: skip
        print(f"EventMultiplexer load  {r['mux_s']:8.2f} s  (TensorBoard's Python loader, default sampling)")  # fmt: skip
        print(f"tensorboard server     {r['server_done_s']:8.2f} s  from launch to serving the last validation point (answering after {r['server_up_s']:.2f} s; {empty_up:.2f} s on an empty logdir)")  # fmt: skip
        print(f"peak RSS of the run    {r['peak_mb']:8.0f} MB")
    ratios = [r["wall"] / (r["iterations"] * r["bare"]) for r in results]
    print(f"\nwall / (iters x bare), median of {len(ratios)}: {statistics.median(ratios):.2f}")

    print("\n# imports (median of 3 fresh interpreters)")
    for code, seconds in imports.items():
        ratio = seconds / imports["import tensorflow"]
        print(f"{code:<28} {seconds:6.2f} s  ({ratio:.2f} x import tensorflow)")
    launch = imports["import tensorflow, keras"]
    print("\n# the floor of a default run: launch (python -c 'import tensorflow, keras') +")
    print("# iterations x bare step + validations x bare validation pass + bare test pass")
    floors = []
    for i, r in enumerate(results, 1):
        floor = (launch + r["iterations"] * r["bare"] + r["validations"] * r["bare_validation"]
                 + r["bare_test"])  # fmt: skip
        floors.append(r["wall"] / floor)
        print(f"run {i}: floor {floor:.1f} s = {launch:.1f} + {r['iterations']} x "
              f"{r['bare'] * 1e3:.2f} ms + {r['validations']} x {r['bare_validation']:.3f} s + "
              f"{r['bare_test']:.2f} s; wall {r['wall']:.1f} s = {r['wall'] / floor:.3f} x floor; "
              f"event files {r['events_mb'] / (r['iterations'] / 1000):.3f} MB per 1,000 "
              f"iterations")  # fmt: skip
    print(f"wall / floor, median of {len(floors)}: {statistics.median(floors):.3f}")
    for i, r in enumerate(results, 1):
        bare_total = r["validations"] * r["bare_validation"]
        print(f"run {i}: validation inside the run {r['validation_s']:.1f} s (the evaluator's "
              f"first call traces it) = {r['validation_s'] / bare_total:.3f} x {r['validations']} "
              f"bare validation passes ({bare_total:.1f} s)")  # fmt: skip

    per_validation, project, pr_bytes = bare.dashboards_seconds()
    print("\n# what the classifier dashboards add (issue 16), timed in this process")
    print(f"per-class scalars + PR curves: {per_validation * 1e3:.1f} ms per validation "
          f"({pr_bytes / 1e3:.1f} KB of events); projector at the end: {project:.2f} s")  # fmt: skip
    for i, r in enumerate(results, 1):
        added = r["validations"] * per_validation + project
        print(f"run {i}: {r['validations']} x {per_validation * 1e3:.1f} ms + {project:.2f} s = "
              f"{added:.2f} s = {added / r['wall']:.2%} of its wall time")  # fmt: skip


if __name__ == "__main__":
    main()
