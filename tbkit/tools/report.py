"""A terminal summary of the runs under a logdir: `python -m tbkit.report LOGDIR`.

Reads what TensorBoard reads (event files, through TensorBoard's own
`EventAccumulator`) and the checkpoints, so runs can be compared without a
browser:

  run               iterations  best val acc  at step  test acc  status         best checkpoint
  20261122-103201         6000        99.30%     5000    99.16%  early-stopped  logs/.../best-5000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from tbkit.errors import TbkitError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclasses.dataclass
class RunSummary:
    name: str
    iterations: int | None
    best_accuracy: float | None
    best_step: int | None
    test_accuracy: float | None
    status: str
    best_checkpoint: str | None
    health: str | None = None  # the run's latest `health` text (training dynamics findings)
    most_images: int = 0  # the most images one image tag of the run recorded


def _scalars(logdir: str, tag: str) -> dict[int, float]:
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator as ea

    if not os.path.isdir(logdir):
        return {}
    acc = ea.EventAccumulator(logdir, size_guidance={ea.TENSORS: 0})
    acc.Reload()
    if tag not in acc.Tags()["tensors"]:
        return {}
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}


def _last_text(logdir: str, tag: str) -> str | None:
    """The text of the last `tag` text summary in `logdir` (None if there is none)."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator as ea

    if not os.path.isdir(logdir):
        return None
    acc = ea.EventAccumulator(logdir, size_guidance={ea.TENSORS: 0})
    acc.Reload()
    if tag not in acc.Tags()["tensors"]:
        return None
    last = max(acc.Tensors(tag), key=lambda e: (e.step, e.wall_time))
    value = tf.make_ndarray(last.tensor_proto)
    return (value.item() if value.shape == () else value.reshape(-1)[0]).decode()


def images_per_tag(logdir: str) -> dict[str, int]:
    """How many images each image tag in `logdir` recorded (TensorBoard shows 10)."""
    import glob

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    image_tags: set[str] = set()
    counts: dict[str, int] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    image_tags.add(value.tag)
                if value.tag in image_tags:
                    counts[value.tag] = counts.get(value.tag, 0) + 1
    return counts


def _read_var(path: str | None, name: str):
    import tensorflow as tf

    if not path:
        return None
    try:
        return tf.train.load_variable(path, f"{name}/.ATTRIBUTES/VARIABLE_VALUE")
    except (tf.errors.OpError, ValueError):
        return None


def summarize_run(run_dir: str) -> RunSummary:
    """Reads one run directory into a `RunSummary`."""
    import tensorflow as tf

    from tbkit.run.rundir import RunDir

    path = os.path.normpath(run_dir)
    run = RunDir(os.path.dirname(path), os.path.basename(path))
    name = run.name
    validation = _scalars(os.path.join(run_dir, "validation"), "accuracy")
    test = _scalars(os.path.join(run_dir, "test"), "accuracy")
    best_path = tf.train.latest_checkpoint(run.best_dir)
    latest_path = tf.train.latest_checkpoint(run.latest_dir)
    best_step = _read_var(best_path, "best_step")
    best_value = _read_var(best_path, "best_value")
    if best_step is None and validation:
        best_value, best_step = max((v, -s) for s, v in validation.items())
        best_step = -best_step
    iterations = max(validation) if validation else None
    stored_it = _read_var(latest_path, "step")
    if stored_it is not None:
        iterations = max(int(stored_it), iterations or 0)
    finished = bool(_read_var(latest_path, "finished"))

    if run.holder() is not None:
        status = "running"
    elif finished:
        status = "finished"
        try:
            limit = (run.read_config() or {})["flags"]["num_iterations"]
            if iterations is not None and iterations < limit:
                status = "early-stopped"
        except (TbkitError, KeyError, TypeError):
            pass
    else:
        status = "interrupted"
    return RunSummary(
        name=name,
        iterations=iterations,
        best_accuracy=None if best_value is None else float(best_value),
        best_step=None if best_step is None else int(best_step),
        test_accuracy=next(iter(test.values())) if test else None,
        status=status,
        best_checkpoint=best_path,
        health=_last_text(os.path.join(run_dir, "train"), "health"),
        most_images=max(
            (
                n
                for sub in ("train", "validation", "test")
                for n in images_per_tag(os.path.join(run_dir, sub)).values()
            ),
            default=0,
        ),  # fmt: skip
    )


def find_runs(logdir: str) -> list[str]:
    """Run directories under `logdir` (those with a config.json or checkpoints), sorted."""
    runs = []
    for root, dirs, files in os.walk(logdir):
        if "config.json" in files or "checkpoints" in dirs:
            runs.append(root)
            dirs[:] = []
    return sorted(runs)


def format_table(rows: list[RunSummary]) -> str:
    pct = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
    num = lambda v: "-" if v is None else str(v)  # noqa: E731
    header = (
        "run",
        "iterations",
        "best val acc",
        "at step",
        "test acc",
        "status",
        "best checkpoint",
    )
    table = [header] + [
        (
            r.name,
            num(r.iterations),
            pct(r.best_accuracy),
            num(r.best_step),
            pct(r.test_accuracy),
            r.status,
            r.best_checkpoint or "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {1, 2, 3, 4}
    lines = []
    for row in table:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_health(rows: list[RunSummary]) -> str:
    """Each run's latest `health` findings, as the train run's Text dashboard shows them."""
    lines = ["", "Health (training dynamics at each run's latest validation):"]
    for r in rows:
        text = r.health or "no training dynamics recorded"
        first, *rest = text.splitlines()
        lines.append(f"  {r.name}: {first}")
        lines.extend(f"    {line}" for line in rest if line.strip())
    return "\n".join(lines)


def format_images(rows: list[RunSummary], logdir: str) -> str:
    """Which `--samples_per_plugin` shows every image: TensorBoard keeps 10 per tag."""
    most = max((r.most_images for r in rows), default=0)
    if most <= 10:
        return f"\nImages: at most {most} per tag; TensorBoard shows them all."
    return (
        f"\nImages: up to {most} per tag; TensorBoard keeps 10 per tag by default. To see every "
        f"one: tensorboard --logdir {logdir} --samples_per_plugin images={most}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tbkit.report", description="Summarise the tbkit runs under a logdir."
    )
    parser.add_argument("logdir", help="the --logdir of train_mnist.py")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.logdir):
        print(f"tbkit.report: error: {args.logdir} is not a directory", file=sys.stderr)
        return 1
    from tbkit.tools.search_report import format_search, is_search

    if is_search(args.logdir):
        from tbkit.errors import TbkitError

        try:
            print(format_search(args.logdir))
        except TbkitError as e:
            print(f"tbkit.report: error: {e}", file=sys.stderr)
            return 1
        print()
    runs = find_runs(args.logdir)
    if not runs:
        print(f"tbkit.report: no runs under {args.logdir}", file=sys.stderr)
        return 1
    rows = [summarize_run(r) for r in runs]
    print(format_table(rows))
    print(format_health(rows))
    print(format_images(rows, args.logdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
