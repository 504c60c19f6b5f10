"""`train_mnist.py search`: a hyperparameter search over the MNIST run's settings.

The space comes from the settings' declarations (`settings.search_space`): each
searched setting declares its domain once. `--fix NAME=VALUE` pins settings,
`--domain NAME=LOW:HIGH` (or `NAME=A,B,C`) narrows or widens one. Each trial is
an ordinary run directory `SEARCH/trial-NNNN/` trained by `program.train`
without the test set; when the search finishes, the best trial's restored best
checkpoint is evaluated on the test set once (`SEARCH/test/`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from tbkit.app import settings

TEST_RESULT = "test_result.json"


def run_trial(params: dict, run_dir: str, hooks) -> float:
    """The runner of one trial (`tbkit.search.worker` imports it by name)."""
    from tbkit.app.program import train

    config = settings.TrainConfig(
        logdir=os.path.dirname(run_dir), run_name=os.path.basename(run_dir), **params
    )
    search_dir = os.path.dirname(run_dir)
    result = train(
        config,
        log=lambda line: print(line, flush=True),
        hooks=hooks,
        test=False,
        hparams=False,
        extra_config={"search": os.path.abspath(search_dir), "trial": os.path.basename(run_dir)},
    )
    return result.best_accuracy


def test_best(search_dir: str, trial_name: str, params: dict) -> dict:
    """Evaluates the trial's restored best checkpoint on the test set, once per search:
    writes `SEARCH/test/` (accuracy, confusion matrix) and `SEARCH/test_result.json`."""
    import tensorflow as tf

    from tbkit.app.restore import load_best
    from tbkit.datasets import eval_dataset, mnist
    from tbkit.loop.evaluation import write_test_run
    from tbkit.summary import images as tbi

    path = os.path.join(search_dir, TEST_RESULT)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    config = settings.TrainConfig(**{k: v for k, v in params.items() if k != "seed"})
    data = mnist.load(config.data_dir, config.validation_size, log=lambda _: None)
    restored = load_best(os.path.join(search_dir, trial_name))
    model, best = restored.model, restored.checkpoint
    import numpy as np

    scores, labels = [], []
    for x, y in eval_dataset(data.test_images, data.test_labels):
        scores.append(model(x, training=False).numpy())
        labels.append(y.numpy())
    scores, labels = np.concatenate(scores), np.concatenate(labels).astype(np.int64)
    pred = scores.argmax(axis=-1)
    step = int(best.rsplit("-", 1)[1])
    loss = float(np.mean(tf.keras.losses.sparse_categorical_crossentropy(
        labels, scores, from_logits=True)))  # fmt: skip
    write_test_run(search_dir, step, loss, (labels, pred, scores), classes=10)
    result = {
        "trial": trial_name,
        "checkpoint": best,
        "accuracy": float((pred == labels).mean()),
        "correct": int((pred == labels).sum()),
        "total": int(len(labels)),
        "confusion_matrix": tbi.confusion_matrix(labels, pred, 10).tolist(),
    }
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
    return result


def build_parser() -> argparse.ArgumentParser:
    from tbkit.app.parsing import OneLineParser as _Parser
    from tbkit.search.study import PRUNERS

    p = _Parser(
        prog="train_mnist.py search",
        description="Search the MNIST run's hyperparameters with Optuna; each trial is a run "
        "directory under --logdir. View with: tensorboard --logdir LOGDIR",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--logdir", required=True, help="the search directory")
    p.add_argument("--trials", type=int, default=12, help="trials in all")
    p.add_argument("--workers", type=int, default=1, help="trial processes at once")
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                   help="pin a setting for every trial (repeatable)")  # fmt: skip
    p.add_argument("--domain", action="append", default=[], metavar="NAME=LOW:HIGH|A,B",
                   help="narrow or widen a searched setting's domain (repeatable)")  # fmt: skip
    p.add_argument("--pruner", choices=PRUNERS, default="median",
                   help="Optuna's pruner on the validation accuracy (diagnosis pruning always)")  # fmt: skip
    p.add_argument("--storage", default=None,
                   help="an Optuna RDB URL (e.g. postgresql://...) for several machines "
                   "(default: a journal file in the search directory)")  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="seeds the sampler and each trial")
    p.add_argument("--baseline", action="store_true",
                   help="trial 0 trains today's defaults of the searched settings, so the "
                   "table says whether the search beats them")  # fmt: skip
    return p


def spec_from_args(args) -> object:
    from tbkit.search.study import SearchSpec

    fixed = settings.parse_fixed(args.fix)
    narrowed = {}
    for item in args.domain:
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--domain takes NAME=LOW:HIGH or NAME=A,B. Received: {item!r}")
        narrowed[name.strip().replace("-", "_")] = text
    space = settings.search_space(narrowed, fixed)
    first = ()
    if args.baseline:
        defaults = {f.name: f.default for f in dataclasses.fields(settings.TrainConfig)}
        first = ({n: defaults[n] for n, d in space.items() if d.contains(defaults[n])},)
    return SearchSpec(
        directory=os.path.abspath(args.logdir), runner="tbkit.app.search:run_trial",
        space=space, fixed=fixed, metric="accuracy", direction="maximize", trials=args.trials,
        workers=args.workers, pruner=args.pruner, storage=args.storage, seed=args.seed,
        first=first,
    )  # fmt: skip


def main(argv) -> int:
    from tbkit.errors import TbkitError

    args = build_parser().parse_args(argv)
    try:
        spec = spec_from_args(args)
        from tbkit.search.study import run_search

        rows = run_search(spec, log=lambda line: print(line, flush=True))
        done = [r for r in rows if r.status == "complete" and r.value is not None]
        if not done:
            print("No trial completed: nothing to evaluate on the test set.", flush=True)
            return 0
        best = max(done, key=lambda r: r.value)
        name = f"trial-{best.number:04d}"
        print(f"Best: {name}, validation accuracy {best.value:.2%}", flush=True)
        if not os.path.isdir(os.path.join(spec.directory, name, "checkpoints", "best")):
            # Several machines on one study: the machine that trained it tests it.
            print(f"{name} ran on another machine: its search directory evaluates it.")
            return 0
        params = dict(spec.fixed, **best.params)
        result = test_best(spec.directory, name, params)
        print(
            f"Accuracy on Test-Set: {result['accuracy']:.1%} "
            f"({result['correct']} / {result['total']})",
            flush=True,
        )
    except (TbkitError, ValueError) as e:
        print(f"train_mnist.py search: error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


@dataclasses.dataclass(frozen=True)
class BestOf:
    """The best trial of a search: its settings and where they came from."""

    search: str
    trial: str
    settings: dict


def best_of(search_dir: str) -> BestOf:
    """The best completed trial's settings (`--best-of DIR`)."""
    from tbkit.errors import TbkitError
    from tbkit.search.study import load_spec, open_study, trial_table

    if not os.path.exists(os.path.join(search_dir, "search.json")):
        raise TbkitError(f"{search_dir} is not a search directory (no search.json)")
    spec = load_spec(search_dir)
    rows = [r for r in trial_table(open_study(spec)) if r.status == "complete"]
    if not rows:
        raise TbkitError(f"{search_dir}: no completed trial yet")
    pick = max if spec.direction == "maximize" else min
    best = pick(rows, key=lambda r: r.value)
    return BestOf(os.path.abspath(search_dir), f"trial-{best.number:04d}",
                  dict(spec.fixed, **best.params))  # fmt: skip
