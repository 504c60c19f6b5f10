"""model.fit with tbkit's callback vs Keras' TensorBoard callback vs no callback.

Usage: python bench/vs_keras.py [--reps 3] [--epochs 1] [--data-dir DIR]

The same Keras model (the tutorial's CNN from stock Keras layers), the same
data, one epoch per measurement, configurations interleaved in one process:

  none     no callback
  keras    keras.callbacks.TensorBoard(histogram_freq=1, write_images=True,
           update_freq="epoch"): weight histograms and weight images once per epoch
  keras-all  the Keras callbacks that together do what TensorBoardRun does beyond
           pictures: TensorBoard as above + ModelCheckpoint(save_best_only=True,
           weights) + BackupAndRestore (resume after interruption)
  tbkit    tbkit.keras.TensorBoardRun(summary_every="epoch", dynamics=False):
           weight scalars + histograms + filter grids once per epoch, plus
           best/latest checkpoints (matched cadence, more content)
  tbkit-dyn  the same with the training dynamics on (the default): the epoch's
           last batch's own gradients (norms + histograms, copied in fit's step
           by the optimizer's tap), update ratios around that batch, zero / dead
           activation fractions of a 32-example probe batch, learning rate,
           global norm, and the `health` findings

Prints the median seconds per epoch and the ratio to `none`, the time inside
each callback's hooks and the peak resident memory during each kind's fits.

`--model resnet50` swaps the CNN for `keras.applications.ResNet50` with random
weights (23.6 M parameters, 320 variables, BatchNorm) on MNIST digits padded to
32x32x3, the big-model case: there `tbkit` is `TensorBoardRun(dynamics=False,
images=False)` (matched content: a histogram per variable, as
`TensorBoard(histogram_freq=1)` without `write_images`, plus tbkit's scalars
and checkpoints), `tbkit-dyn` the callback's defaults. Not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tbkit  # noqa: E402
import tbkit.keras  # noqa: E402


def model():
    m = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 5, padding="same", activation="relu", name="layer_conv1"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(36, 5, padding="same", activation="relu", name="layer_conv2"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", name="layer_fc1"),
            keras.layers.Dense(10, name="layer_fc2"),
        ]
    )
    m.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return m


def resnet50():
    m = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    m.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=False), metrics=["accuracy"]
    )
    return m


class PeakRSS:
    """The largest resident set size of this process while inside the `with` (sampled)."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * page)
            self._stop.wait(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


CHECKPOINT_SECONDS = [0.0]


def _time_checkpoints():
    """Adds the seconds TensorBoardRun spends writing checkpoints to CHECKPOINT_SECONDS."""
    from tbkit.run.runstate import RunState

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                CHECKPOINT_SECONDS[0] += time.perf_counter() - t0

        return wrapper

    RunState.record = timed(RunState.record)  # saves the best checkpoint on an improvement
    RunState.save_latest = timed(RunState.save_latest)


HOOKS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
    "on_test_batch_begin", "on_test_batch_end",
)  # fmt: skip


class Timed(keras.callbacks.Callback):
    """Forwards every hook to `inner` and adds up the seconds spent in them."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seconds = inner, 0.0
        for hook in HOOKS:
            setattr(self, hook, self._timed(getattr(inner, hook)))

    def _timed(self, fn):
        def hook(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return hook

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--kinds", default="none,keras,keras-all,tbkit,tbkit-dyn")
    parser.add_argument("--model", choices=("cnn", "resnet50"), default="cnn")
    parser.add_argument("--validation-images", type=int, default=5000)
    args = parser.parse_args(argv)

    d = tbkit.datasets.mnist.load(args.data_dir, validation_size=5000, log=lambda _: None)
    x = (d.train_images[: args.train_images, ..., None] / 255.0).astype("float32")
    y = d.train_labels[: args.train_images]
    xv = (d.validation_images[: args.validation_images, ..., None] / 255.0).astype("float32")
    yv = d.validation_labels[: args.validation_images]
    model = globals()[args.model] if args.model == "resnet50" else globals()["model"]
    big = args.model == "resnet50"
    if big:  # 28x28x1 digits -> 32x32x3
        import numpy as np

        def to_rgb(a):
            return np.repeat(np.pad(a, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=3)

        x, xv = to_rgb(x), to_rgb(xv)

    def callbacks(kind, logdir):
        if kind == "keras":
            return [
                Timed(
                    keras.callbacks.TensorBoard(
                        logdir, histogram_freq=1, write_images=not big, update_freq="epoch"
                    )
                )
            ]
        if kind == "keras-all":
            return [
                Timed(
                    keras.callbacks.TensorBoard(
                        logdir, histogram_freq=1, write_images=not big, update_freq="epoch"
                    )
                ),
                Timed(
                    keras.callbacks.ModelCheckpoint(
                        os.path.join(logdir, "best.weights.h5"), monitor="val_accuracy",
                        save_best_only=True, save_weights_only=True,
                    )
                ),
                Timed(keras.callbacks.BackupAndRestore(os.path.join(logdir, "backup"))),
            ]  # fmt: skip
        if kind == "tbkit":
            run = tbkit.keras.TensorBoardRun(
                logdir, summary_every="epoch", dynamics=False, images=not big, log=lambda _: None
            )
            return [Timed(run)]
        if kind == "tbkit-dyn":
            run = tbkit.keras.TensorBoardRun(
                logdir, summary_every="epoch", probe=(xv[:32], yv[:32]), log=lambda _: None
            )
            return [Timed(run)]
        return []

    _time_checkpoints()
    kinds = args.kinds.split(",")
    in_checkpoints = {k: [] for k in kinds if k.startswith("tbkit")}
    times = {k: [] for k in kinds}
    in_hooks = {k: [] for k in kinds if k != "none"}
    peaks = {k: 0 for k in kinds}
    with tempfile.TemporaryDirectory() as root:
        for rep in range(args.reps + 1):  # the first round warms up and is dropped
            order = list(times)
            random.shuffle(order)
            for kind in order:
                m = model()
                cbs = callbacks(kind, os.path.join(root, f"{kind}-{rep}"))
                CHECKPOINT_SECONDS[0] = 0.0
                t0 = time.perf_counter()
                with PeakRSS() as rss:
                    m.fit(
                        x,
                        y,
                        batch_size=64,
                        epochs=args.epochs,
                        validation_data=(xv, yv),
                        callbacks=cbs,
                        verbose=0,
                    )
                peaks[kind] = max(peaks[kind], rss.peak)
                if rep:
                    times[kind].append(time.perf_counter() - t0)
                    if cbs:
                        in_hooks[kind].append(sum(cb.seconds for cb in cbs))
                    if kind in in_checkpoints:
                        in_checkpoints[kind].append(CHECKPOINT_SECONDS[0])
    none = statistics.median(times["none"]) if "none" in times else float("nan")
    print(
        f"# time inside the callback's hooks per fit ({args.epochs} epoch(s)), median of {args.reps}"
    )
    for kind, ts in in_hooks.items():
        print(f"{kind:<9} {statistics.median(ts) * 1e3:7.0f} ms  ({', '.join(f'{t * 1e3:.0f}' for t in ts)})")  # fmt: skip
    for kind, ts in in_checkpoints.items():
        print(f"{kind:<9} of which writing its best and latest checkpoints: {statistics.median(ts) * 1e3:.0f} ms")  # fmt: skip
    name = "ResNet50 (random weights, 32x32x3)" if big else "tutorial CNN"
    print(
        f"# model.fit, {name}, {len(x)} images/epoch + {len(xv)} validation, batch 64, {args.reps} interleaved reps"
    )
    for kind, ts in times.items():
        med = statistics.median(ts)
        print(
            f"{kind:<9} {med:7.2f} s/epoch  ratio {med / none:5.3f}  peak RSS {peaks[kind] / 2**30:.2f} GiB  ({', '.join(f'{t:.2f}' for t in ts)})"
        )


if __name__ == "__main__":
    main()
