"""Command line of `train_mnist.py`: flags -> `tbkit.app.program.train`, nothing else.

Every flag is derived from a `TrainConfig` declaration (help, default, check).
Expected failures (bad data, unwritable or locked run directory, checkpoint of
another network, bad flag values) print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from tbkit.app.parsing import OneLineParser as _Parser


def _argument_type(kind, check):
    """An argparse `type` converting text to `kind` and accepting what `check` accepts."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {check.text}, got {text!r}") from None
        if not check.ok(value):
            raise argparse.ArgumentTypeError(f"must be {check.text}, got {text}")
        return value

    return parse


def _kind(field: dataclasses.Field):
    annotation = str(field.type)
    for name, kind in (("int", int), ("float", float)):
        if annotation.startswith(name):
            return kind
    return str


def build_parser() -> argparse.ArgumentParser:
    from tbkit.app.settings import TrainConfig, fields

    defaults = TrainConfig()
    p = _Parser(
        prog="train_mnist.py",
        description="Train the tutorial's MNIST CNN with full TensorBoard instrumentation, "
        "early stopping and best checkpoints. View with: tensorboard --logdir LOGDIR",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in fields():
        meta, default = f.metadata, getattr(defaults, f.name)
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            # A switch that is on by default: the flag turns it off.
            p.add_argument(flag, dest=f.name, action="store_false", help=meta["help"])
        elif meta["choices"]:
            p.add_argument(flag, dest=f.name, choices=meta["choices"], default=default,
                           help=meta["help"])  # fmt: skip
        elif meta["check"]:
            p.add_argument(flag, dest=f.name, type=_argument_type(_kind(f), meta["check"]),
                           default=default, help=meta["help"])  # fmt: skip
        else:
            p.add_argument(flag, dest=f.name, default=default, help=meta["help"])
    p.add_argument("--best-of", default=None, metavar="SEARCH_DIR",
                   help="train with the settings of the best trial of a search (flags given "
                   "here still win); config.json names the search and the trial")  # fmt: skip
    # Not a training setting (nothing about the run changes): only what the console shows.
    p.add_argument("--verbose", action="store_true",
                   help="also show TensorFlow's native start-up lines (absl, CUDA, CPU "
                   "features), hidden by default; TBKIT_VERBOSE=1 does the same")  # fmt: skip
    return p


def main(argv=None) -> int:
    """Parses `argv` (default `sys.argv[1:]`), trains, returns the exit code.

    `train_mnist.py search ...` runs a hyperparameter search instead (`tbkit.app.search`),
    `predict RUN FILE...` predicts people's digit images (`tbkit.app.predict`) and
    `export RUN OUT_DIR` writes a run's best model for serving (`tbkit.app.export`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["search"]:
        from tbkit.app import search

        return search.main(argv[1:])
    if argv[:1] in (["predict"], ["export"]):
        from tbkit.app import export, predict

        return {"predict": predict, "export": export}[argv[0]].main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = args.__dict__.pop("verbose")
    best_of, extra = args.__dict__.pop("best_of"), None
    if best_of is not None:
        from tbkit.app.search import best_of as find_best
        from tbkit.errors import TbkitError

        try:
            best = find_best(best_of)
        except TbkitError as e:
            print(f"train_mnist.py: error: {e}", file=sys.stderr, flush=True)
            return 1
        parser.set_defaults(**best.settings)  # the flags given on the command line still win
        args = parser.parse_args(argv)
        for key in ("verbose", "best_of"):
            args.__dict__.pop(key)
        extra = {"best_of": {"search": best.search, "trial": best.trial}}

    from tbkit.tools.quiet import import_tensorflow

    import_tensorflow(verbose)
    from tbkit.app.program import train
    from tbkit.app.settings import TrainConfig
    from tbkit.errors import TbkitError
    from tbkit.loop.interrupt import Interrupted

    config = TrainConfig(**vars(args))
    try:
        train(config, log=lambda line: print(line, flush=True), extra_config=extra)
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
