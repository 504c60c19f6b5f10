"""Default `train_mnist.py` runs over several seeds: restored-best validation and test accuracy.

Usage: python bench/seeds.py [--seeds 1 2 3 4 5] [--parallel 1] [--logdir DIR] [-- FLAGS...]

Runs `train_mnist.py --logdir DIR --run-name seed-S --seed S FLAGS...` on full MNIST
for each seed (`--parallel` at once), and prints per seed the iterations, the best
validation accuracy (and its iteration) and the restored best's test accuracy, then
the means. The settings are chosen on validation only; the test column is reported,
never used to choose.

Not a test: several full runs (about 4-6 minutes each on a 2-core AVX2 machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--logdir", default=None)
    args = p.parse_args(argv)
    logdir = args.logdir or tempfile.mkdtemp(prefix="tbkit-seeds-")
    os.makedirs(logdir, exist_ok=True)
    print(f"# bench/seeds.py: seeds {args.seeds}, flags {flags or '(defaults)'}, {logdir}")
    pending, running, done = list(args.seeds), {}, {}
    while pending or running:
        while pending and len(running) < args.parallel:
            seed = pending.pop(0)
            cmd = [sys.executable, os.path.join(ROOT, "train_mnist.py"), "--logdir", logdir,
                   "--run-name", f"seed-{seed}", "--seed", str(seed), *flags]  # fmt: skip
            log = open(os.path.join(logdir, f"seed-{seed}.log"), "w")  # noqa: SIM115
            running[seed] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT),
                             time.perf_counter(), log)  # fmt: skip
        for seed, (proc, t0, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                done[seed] = (proc.returncode, time.perf_counter() - t0)
                del running[seed]
                report(logdir, seed, *done[seed])
        time.sleep(1)
    vals, tests = [], []
    for seed in args.seeds:
        r = result(logdir, seed)
        if r:
            vals.append(r["validation"])
            tests.append(r["test"])
    if tests:
        print(
            f"mean over {len(tests)} seeds: validation {statistics.mean(vals):.2%}, "
            f"test {statistics.mean(tests):.2%} (min {min(tests):.2%}, max {max(tests):.2%})"
        )


def result(logdir: str, seed: int) -> dict | None:
    with open(os.path.join(logdir, f"seed-{seed}.log")) as f:
        text = f.read()
    test = re.findall(r"Accuracy on Test-Set: [\d.]+% \((\d+) / (\d+)\)", text)
    best = re.findall(r"Iter:\s+(\d+), .*Validation Acc:\s+([\d.]+)% \*", text)
    iters = re.findall(r"Iter:\s+(\d+),", text)
    if not test or not best:
        return None
    run = os.path.join(logdir, f"seed-{seed}")
    with open(os.path.join(run, "config.json")) as f:
        flags = json.load(f)["flags"]
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(os.path.join(run, "validation"), size_guidance={
        event_accumulator.TENSORS: 0})  # fmt: skip
    acc.Reload()
    import tensorflow as tf

    val = {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors("accuracy")}
    step = max(val, key=lambda s: (val[s], -s))
    return {
        "validation": val[step],
        "best_step": step,
        "iterations": int(iters[-1]),
        "test": int(test[-1][0]) / int(test[-1][1]),
        "model": flags.get("model", "cnn"),
    }


def report(logdir: str, seed: int, code: int, wall: float) -> None:
    r = result(logdir, seed)
    if code != 0 or r is None:
        print(f"seed {seed}: exit {code} after {wall:.0f} s (see {logdir}/seed-{seed}.log)")
        return
    print(
        f"seed {seed}: {r['iterations']} iterations, best validation {r['validation']:.2%} at "
        f"{r['best_step']}, test {r['test']:.2%} ({r['model']}), wall {wall:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
