"""Every setting does something: changing it changes the run.

The settings are declared once (`tbkit/app/settings.py`); these tests list every
declared setting and fail when one is added without a check here, so a setting that
is parsed, documented and recorded but never used cannot come back.
"""

from __future__ import annotations

import dataclasses
import glob
import os

import pytest

from conftest import FIXTURE, load_events, scalars
from tbkit.app import settings
from tbkit.app.program import train
from tbkit.app.settings import TrainConfig

pytestmark = pytest.mark.slow

BASE = dict(data_dir=FIXTURE, validation_size=500, num_iterations=20, eval_every=5,
            summary_every=10, checkpoint_every=10, image_every=5, require_improvement=1000,
            seed=3)  # fmt: skip

#: For each trajectory setting, another value; the logged train loss must differ.
TRAJECTORY = {
    "batch_size": 32,
    "learning_rate": 1e-3,
    "lr_decay": 1.0,
    "augment_shift": 0,
    "eval_every": 10,
    "validation_size": 400,
    "seed": 4,
    "model": "mlp",
}


def run(tmp_path, name: str, **changes):
    config = TrainConfig(**{**BASE, **changes, "logdir": str(tmp_path), "run_name": name})
    result = train(config, log=lambda _: None)
    return tmp_path / name, result


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    path, result = run(tmp_path_factory.mktemp("base"), "base")
    return path, result, scalars(load_events(str(path / "train")), "loss")


def test_every_trajectory_setting_is_checked_here():
    assert set(TRAJECTORY) == set(settings.trajectory_settings())
    for name, value in TRAJECTORY.items():
        assert BASE.get(name, getattr(TrainConfig(), name)) != value, name


@pytest.mark.parametrize("name", sorted(TRAJECTORY))
def test_changing_a_trajectory_setting_changes_the_train_loss(name, baseline, tmp_path):
    _, _, base_loss = baseline
    path, _ = run(tmp_path, name, **{name: TRAJECTORY[name]})
    loss = scalars(load_events(str(path / "train")), "loss")
    assert loss != base_loss, f"{name}={TRAJECTORY[name]} left the train loss as it was"


def test_augment_shift_reaches_the_pipeline(baseline, tmp_path):
    """The outside check of issue 13: 0 against 2 gave identical curves before."""
    _, _, base_loss = baseline  # augment_shift 2, the default
    path, _ = run(tmp_path, "flat", augment_shift=0)
    loss = scalars(load_events(str(path / "train")), "loss")
    assert sorted(loss) == sorted(base_loss) == [5, 10, 15, 20]
    assert all(loss[s] != base_loss[s] for s in loss)


def tags(path, run_name="train") -> set[str]:
    return set(load_events(str(path / run_name)).Tags()["tensors"])


def latest_numbers(path) -> list[int]:
    found = glob.glob(str(path / "checkpoints" / "latest" / "latest-*.index"))
    return sorted(int(os.path.basename(f)[7:-6]) for f in found)


#: Every other setting: a changed value, and what the run shows for it.
OTHERS = {
    "num_iterations": (30, lambda p, r: r.iterations == 30),
    "require_improvement": (5, lambda p, r: r.early_stopped),
    "summary_every": (5, lambda p, r: sorted(scalars(load_events(str(p / "train")),
                                                    "layer_fc1/weights/mean")) == [5, 10, 15, 20]),
    "checkpoint_every": (5, lambda p, r: latest_numbers(p) == [15, 20]),
    # the first and the final best confusion matrix; filter grids at the first summary only
    # (every summary step with BASE's image_every=5)
    "image_every": (1000, lambda p, r: len(load_events(str(p / "validation")).Tensors("confusion_matrix")) == 2
                    and len(load_events(str(p / "train")).Tensors("layer_conv1/filters")) == 1),
    "images": (False, lambda p, r: not any(t.endswith("/filters") for t in tags(p))
               and "confusion_matrix" not in tags(p, "validation")),
    "histograms": (False, lambda p, r: not any(t.endswith("histogram") or t.endswith("/activations")
                                               for t in tags(p))),
    "deterministic": (False, lambda p, r: not _determinism_on()),
    "run_name": ("other", lambda p, r: p.name == "other" and p.is_dir()),
    # a trace of TensorFlow's profiler in the train run, where the Profile tab looks
    "profile_steps": ("3:4", lambda p, r: bool(glob.glob(str(p / "train" / "plugins" / "profile" / "*" / "*.xplane.pb")))),
    # the Embedding Projector's files in the validation run
    "projector_examples": (40, lambda p, r: len(embedding_rows(p)) == 40),
    "projector_layer": ("layer_conv2", lambda p, r: embedding_names(p)[0].startswith("layer_conv2 @ best step")),
    "projector_every": (10, lambda p, r: any(n.endswith(" @ step 10") for n in embedding_names(p))),
    "logdir": (None, None),  # where every run above went: tmp_path (checked by run_name)
    # Checked elsewhere, where the machinery they need is: data sources in test_mnist_data.py,
    # strategies (two logical CPUs, two processes) in test_distribute.py.
    "data_dir": (None, None),
    "strategy": (None, None),
}  # fmt: skip


def embedding_names(path) -> list[str]:
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    config = projector.ProjectorConfig()
    text_format.Parse((path / "validation" / "projector_config.pbtxt").read_text(), config)
    return [e.tensor_name for e in config.embeddings]


def embedding_rows(path) -> list[str]:
    """The best embedding's metadata rows (its first one is the header)."""
    found = glob.glob(str(path / "validation" / "projector" / "*_best_step_*.metadata.tsv"))
    assert len(found) == 1, found
    return open(found[0]).read().splitlines()[1:]


def _determinism_on() -> bool:
    from tensorflow.python.framework import config

    return config.is_op_determinism_enabled()


def test_every_setting_has_a_check():
    assert set(OTHERS) | set(TRAJECTORY) == {f.name for f in dataclasses.fields(TrainConfig)}


#: The other settings are changed a few at a time: each group's checks look at different
#: parts of the run, so one run shows each setting's own effect (and the baseline none).
GROUPS = [
    (
        "summary_every",
        "checkpoint_every",
        "image_every",
        "deterministic",
        "run_name",
        "projector_examples",
    ),
    (
        "num_iterations",
        "images",
        "histograms",
        "profile_steps",
        "projector_layer",
        "projector_every",
    ),
    ("require_improvement",),
]


def test_every_checked_setting_is_in_a_group():
    checked = {n for n, (_, check) in OTHERS.items() if check}
    assert sorted(checked) == sorted(n for g in GROUPS for n in g)


@pytest.mark.parametrize("group", GROUPS, ids="+".join)
def test_changing_any_other_setting_shows_in_the_run(group, baseline, tmp_path):
    base_path, base_result, _ = baseline
    for name in group:
        value, check = OTHERS[name]
        assert not check(base_path, base_result), f"the baseline already shows {name}={value}"
    changes = {name: OTHERS[name][0] for name in group}
    path, result = run(tmp_path, changes.pop("run_name", "changed"), **changes)
    for name in group:
        value, check = OTHERS[name]
        assert check(path, result), f"{name}={value!r} did not show in the run"
