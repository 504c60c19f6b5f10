"""A hyperparameter search on full MNIST, measured (issue 23).

Usage: python bench/search.py [--trials 24] [--workers 2] [--pruner hyperband]
                              [--throughput-trials 4] [--throughput-iterations 400]
                              [--seed 1] [--logdir DIR] [--skip-throughput] [--skip-search]

Two parts, each run as the user runs it (`train_mnist.py search`'s own code, the
orchestrator in this process so its CPU time is its own, the workers as the
processes they are):

1. **Throughput, two workers against one**, side by side: the same small search
   (`--throughput-trials` trials of `--throughput-iterations` iterations, no
   pruning, the same seed) with `--workers 1` and then `--workers 2`, and the
   trials per hour of each.
2. **The search**: `--trials` trials, `--workers` workers, `--pruner` (Hyperband by
   default) and the diagnosis pruning, on today's search space with trial 0 the
   defaults (`--baseline`). Reported: the trials by status, each pruned trial's
   reason, the best against the defaults (validation only), the wall time against
   the sum of the trials' times, and the orchestration's own cost: the
   orchestrator's CPU time, and each worker process's time outside its trial's
   training (interpreter, imports, claiming the trial, telling the study), both
   against the time spent training the trials. The best trial's restored best
   checkpoint is evaluated on the test set once, at the end.

The bare train step of this machine (the same as `bench/overhead.py`'s) is
printed first, next to every figure.

Not a test: numbers depend on the machine and its load (this one: 2 shared cores).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import resource
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def bare_step_ms() -> float:
    """The compiled default train step alone on full MNIST batches (median of 3x100)."""
    import subprocess

    code = (
        f"import sys, time, statistics; sys.path.insert(0, {HERE!r})\n"
        "from end_to_end import BareStep\n"
        "b = BareStep(None)\n"
        "print(statistics.median(b.seconds(100) for _ in range(3)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        return 1000 * float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(out.stderr[-2000:], file=sys.stderr)
        return float("nan")


def worker_seconds(directory: str) -> list[dict]:
    from tbkit.search.worker import SECONDS_LINE

    out = []
    for path in sorted(glob.glob(os.path.join(directory, ".workers", "*.log"))):
        with open(path) as f:
            for line in f:
                if line.startswith(SECONDS_LINE):
                    out.append(json.loads(line[len(SECONDS_LINE) :]))
    return out


def run(directory: str, flags: list[str]) -> dict:
    """Runs the search's orchestrator in this process; returns its figures."""
    from tbkit.app import search as app_search
    from tbkit.search.study import run_search

    args = app_search.build_parser().parse_args(["--logdir", directory, *flags])
    spec = app_search.spec_from_args(args)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    rows = run_search(spec, log=lambda line: print("   ", line, flush=True))
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"spec": spec, "rows": rows, "wall": wall, "orchestrator_cpu": cpu,
            "workers": worker_seconds(directory)}  # fmt: skip


def throughput(root: str, trials: int, iterations: int, seed: int) -> None:
    print(f"\n## Two workers against one ({trials} trials of {iterations} iterations, "
          "no pruning, the same seed)")  # fmt: skip
    results = {}
    for workers in (1, 2):
        d = os.path.join(root, f"throughput-{workers}")
        flags = ["--trials", str(trials), "--workers", str(workers), "--seed", str(seed),
                 "--pruner", "none", "--fix", f"num_iterations={iterations}"]  # fmt: skip
        results[workers] = r = run(d, flags)
        per_hour = 3600 * len(r["rows"]) / r["wall"]
        train = sum(w["train"] for w in r["workers"])
        print(
            f"  --workers {workers}: wall {r['wall']:.1f} s, {per_hour:.1f} trials/hour, "
            f"one trial's training {train / max(1, len(r['workers'])):.1f} s on average"
        )
    ratio = results[1]["wall"] / results[2]["wall"]
    print(f"  throughput of two workers / one: {ratio:.2f}x")


def _kind(reason: str | None) -> str:
    """The kind of a pruned trial's reason: the pruner's, or which diagnosis."""
    reason = reason or ""
    if "(pruner)" in reason:
        return "the pruner (validation accuracy ranks low)"
    for words, kind in (("dead", "diagnosis: dead units"), ("non-finite", "diagnosis: non-finite"),
                        ("update ratio", "diagnosis: learning rate moves nothing")):  # fmt: skip
        if words in reason:
            return kind
    return reason or "?"


def search(directory: str, trials: int, workers: int, pruner: str, seed: int) -> None:
    print(f"\n## The search: {trials} trials, {workers} workers, {pruner} + diagnosis pruning, "
          f"seed {seed}, trial 0 the defaults")  # fmt: skip
    flags = ["--trials", str(trials), "--workers", str(workers), "--seed", str(seed),
             "--pruner", pruner, "--baseline"]  # fmt: skip
    r = run(directory, flags)
    rows, ws = r["rows"], r["workers"]
    counts = collections.Counter(row.status for row in rows)
    print("  trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    reasons = collections.Counter(_kind(row.reason) for row in rows if row.status == "pruned")
    for reason, n in reasons.most_common():
        print(f"    pruned, {n}x: {reason}")
    for row in rows:
        if row.status == "pruned":
            print(f"    trial {row.number}: pruned at step {row.steps}: {row.reason}")
    done = [row for row in rows if row.status == "complete"]
    if done:
        best = max(done, key=lambda row: row.value)
        base = rows[0]
        print(f"  best: trial {best.number}, validation {best.value:.4f}, {best.params}")
        print(f"  trial 0 (today's defaults): {base.status}, validation {base.value}")
    train = sum(w["train"] for w in ws)
    total = sum(w["total"] for w in ws)
    outside = total - train
    print(
        f"  wall {r['wall']:.0f} s; the trials' processes {total:.0f} s in all "
        f"({train:.0f} s training); wall x workers / process time "
        f"{r['wall'] * workers / total:.3f}"
    )
    steps = sum(row.steps or 0 for row in rows)
    print(f"  steps trained in all: {steps} (a default run: about 5,600)")
    print(
        f"  orchestration: orchestrator CPU {r['orchestrator_cpu']:.1f} s "
        f"= {r['orchestrator_cpu'] / train:.2%} of the training; the worker processes' "
        f"time outside training {outside:.0f} s = {outside / train:.2%} "
        f"({outside / max(1, len(ws)):.1f} s per trial: interpreter, TensorFlow import, "
        "claim, tell)"
    )
    if done:
        from tbkit.app.search import test_best

        name = f"trial-{best.number:04d}"
        result = test_best(directory, name, dict(r["spec"].fixed, **best.params))
        print(
            f"  the best trial's restored best on the test set (once): "
            f"{result['accuracy']:.2%} ({result['correct']} / {result['total']})"
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pruner", default="hyperband")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--throughput-trials", type=int, default=4)
    p.add_argument("--throughput-iterations", type=int, default=400)
    p.add_argument("--logdir", default=None, help="keep the searches here (default: a temp dir)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-search", action="store_true")
    args = p.parse_args(argv)
    root = args.logdir or tempfile.mkdtemp(prefix="tbkit-bench-search-")
    os.makedirs(root, exist_ok=True)
    print(f"# bench/search.py ({root})")
    print(f"bare train step: {bare_step_ms():.1f} ms; cores: {os.cpu_count()}")
    try:
        if not args.skip_throughput:
            throughput(root, args.throughput_trials, args.throughput_iterations, args.seed)
        if not args.skip_search:
            search(os.path.join(root, "search"), args.trials, args.workers, args.pruner,
                   args.seed)  # fmt: skip
    finally:
        if args.logdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
