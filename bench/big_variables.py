"""Statistics of one large variable: tbkit vs TensorBoard's histogram vs numpy's floor.

Usage: python bench/big_variables.py [--sizes 1e6,1e7,1e8] [--methods ...]

For each size, every method runs in a fresh child process (so one method's
peak cannot hide another's) that builds a float32 variable of normal values
chunk by chunk, resets the kernel's peak-RSS counter (`/proc/self/clear_refs`),
then records the variable six times into a summary writer:

  tbkit-eager        tbkit.variable_summaries (mean, stddev, min, max, histogram)
  tbkit-compiled     the same inside a tf.function (first call traces)
  tb-eager           tf.summary.histogram alone (TensorBoard's op)
  tb-compiled        the same inside a tf.function
  numpy-floor        one pass of numpy sum / min / max (no histogram): the floor
  numpy-histogram    np.histogram(x, 30) (not TensorBoard's buckets; for scale)

Prints the first call's time, the median of the next five, ns per value (that
median) and the peak memory over the process's resident size before the first call, in MB and
as a multiple of the variable's own size. TensorBoard's op needs a one-hot
matrix of 240 bytes per value; sizes where that exceeds `--tb-limit-gb` are
skipped for it (and said so). Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

METHODS = (
    "tbkit-eager",
    "tbkit-compiled",
    "tb-eager",
    "tb-compiled",
    "numpy-floor",
    "numpy-histogram",
)


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(method: str, size: int) -> dict:
    """Runs one method on one size in this process; returns its measurements."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    import tbkit

    values = np.empty(size, np.float32)
    rng = np.random.default_rng(0)
    for start in range(0, size, 1 << 20):
        part = values[start : start + (1 << 20)]
        part[:] = rng.standard_normal(part.size, dtype=np.float32)
    var = tf.Variable(values)
    del values
    writer = tf.summary.create_file_writer(tempfile.mkdtemp())

    if method == "tbkit-eager":
        fn = lambda: tbkit.variable_summaries(var, name="w", step=0)  # noqa: E731
    elif method == "tbkit-compiled":
        fn = tf.function(lambda: tbkit.variable_summaries(var, name="w", step=0))
    elif method == "tb-eager":
        fn = lambda: tf.summary.histogram("w", var, step=0)  # noqa: E731
    elif method == "tb-compiled":
        fn = tf.function(lambda: tf.summary.histogram("w", var, step=0))
    elif method == "numpy-floor":
        x = var.numpy()
        fn = lambda: (x.sum(dtype=np.float64), x.min(), x.max())  # noqa: E731
    elif method == "numpy-histogram":
        x = var.numpy()
        fn = lambda: np.histogram(x, 30)  # noqa: E731
    else:
        raise SystemExit(f"unknown method {method}")

    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM (peak RSS) to the current RSS
    before = _rss_mb("VmRSS")
    times = []
    with writer.as_default():
        for _ in range(6):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    writer.flush()
    peak = _rss_mb("VmHWM")
    rest = sorted(times[1:])
    return {"first": times[0], "second": rest[len(rest) // 2], "peak_extra_mb": peak - before}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7,1e8")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--tb-limit-gb", type=float, default=12.0)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return

    print(
        "| values | method | first call | later calls (median) | ns/value | peak extra | x size |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in (int(float(s)) for s in args.sizes.split(",")):
        own_mb = size * 4 / 2**20
        for method in args.methods.split(","):
            if method.startswith("tb-") and size * 240 / 2**30 > args.tb_limit_gb:
                need = size * 240 / 2**30
                print(
                    f"| {size:,} | {method} | skipped: its one-hot needs ~{need:.0f} GB | | | | |"
                )
                continue
            out = subprocess.run(
                [sys.executable, __file__, "--child", method, str(size)],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                reason = (out.stderr.strip().splitlines() or ["?"])[-1][:80]
                print(f"| {size:,} | {method} | failed: {reason} | | | | |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"| {size:,} | {method} | {r['first'] * 1e3:.0f} ms | {r['second'] * 1e3:.0f} ms "
                f"| {r['second'] * 1e9 / size:.2f} | {r['peak_extra_mb']:.0f} MB "
                f"| {r['peak_extra_mb'] / own_mb:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
