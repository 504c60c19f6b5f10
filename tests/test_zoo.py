"""Models nobody wrote for tbkit, through both doors: `tbkit.Trainer` and `TensorBoardRun`.

For each: every variable has its own tags by the documented rule, every 4-D kernel a
filter grid, the best checkpoint restores into a fresh model with the recorded value,
and a second call resumes where the first stopped. Read back with TensorBoard's loader.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tbkit
import tbkit.keras as tbk
import zoo
from conftest import decode_image_events, load_events, scalars

STATS = ("mean", "stddev", "min", "max", "histogram")
SCALARS = {"loss", "accuracy"}
# The training dynamics: per trainable variable, and once per model.
DYNAMICS = ("gradient_norm", "update_ratio", "gradient")
MODEL_DYNAMICS = {"gradient_global_norm", "learning_rate", "health", "custom_scalars__config__"}
NON_TRAINABLE = {"bn/moving_mean", "bn/moving_variance"}


def loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def split(x, y):
    take = lambda a, s: tuple(v[s] for v in a) if isinstance(a, tuple) else a[s]  # noqa: E731
    return (take(x, slice(0, 64)), y[:64]), (take(x, slice(64, None)), y[64:])


def _dynamic(tag: str) -> bool:
    return tag.rsplit("/", 1)[-1] in DYNAMICS or "/activations/" in tag


def variable_tags_written(logdir) -> set[str]:
    tags = set(load_events(logdir).Tags()["tensors"])
    return {
        t for t in tags
        if t not in SCALARS | MODEL_DYNAMICS and not t.endswith("/activations") and not _dynamic(t)
    }  # fmt: skip


def expected_tags(tags, filters) -> set[str]:
    return {f"{t}/{s}" for t in tags for s in STATS} | set(filters)


def check_dynamics(logdir, kind, model, tags) -> None:
    """Gradient norm, histogram and update ratio for every trainable variable; the model's
    own dynamics tags; zero / dead fractions for the probed layers (not for a subclassed model)."""
    written = set(load_events(logdir).Tags()["tensors"])
    gradients = {t for t in written if t.rsplit("/", 1)[-1] in DYNAMICS}
    assert gradients == {f"{t}/{s}" for t in tags - NON_TRAINABLE for s in DYNAMICS}
    assert written >= MODEL_DYNAMICS
    fractions = {t.split("/activations/")[0] for t in written if "/activations/" in t}
    if kind == "subclassed":
        assert not fractions
    else:
        assert fractions and fractions <= {la.name for la in model.layers}


def check_filters(train, model, filters):
    for tag in filters:
        layer = tag.rsplit("/", 1)[0]
        kernel = model.get_layer(layer).kernel.numpy()
        [*_, (_, grid)] = decode_image_events(train, tag)
        assert grid.shape[:2] == tbkit.filter_grid(kernel).shape[:2]


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


@pytest.mark.parametrize("kind", list(zoo.ZOO))
def test_trainer_on_the_zoo(kind, tmp_path):
    model, x, y, tags, filters = zoo.make(kind)
    (xt, yt), (xv, yv) = split(x, y)
    run = tmp_path / "run"

    def trainer_for(m):
        return tbkit.Trainer(
            m, keras.optimizers.Adam(1e-2), loss(), run, eval_every=2, summary_every=2,
            checkpoint_every=2, patience=None, progress=False, log=lambda _: None,
        )  # fmt: skip

    result = trainer_for(model).fit(zoo.dataset(xt, yt), zoo.dataset(xv, yv), steps=6)
    assert result.steps == 6 and result.monitor == "accuracy" and result.resumed_from is None
    train = load_events(str(run / "train"))
    assert variable_tags_written(str(run / "train")) == expected_tags(tags, filters)
    check_dynamics(str(run / "train"), kind, model, tags)
    some = sorted(tags)[0]
    assert sorted(scalars(train, f"{some}/mean")) == [2, 4, 6]
    check_filters(train, model, filters)
    val = scalars(load_events(str(run / "validation")), "accuracy")
    assert sorted(val) == [2, 4, 6] and result.best_value == max(val.values())

    # The best checkpoint restores into a fresh model and gives the recorded accuracy.
    fresh, *_ = zoo.make(kind, seed=1)
    tf.train.Checkpoint(model=fresh).restore(result.best_checkpoint).expect_partial()
    assert accuracy(fresh, xv, yv) == pytest.approx(result.best_value, abs=1e-6)

    # A second call (a new process would build everything anew) resumes at step 6.
    again, *_ = zoo.make(kind, seed=2)
    second = trainer_for(again).fit(zoo.dataset(xt, yt), zoo.dataset(xv, yv), steps=8)
    assert second.resumed_from == 6 and second.steps == 8
    assert sorted(scalars(load_events(str(run / "validation")), "accuracy")) == [2, 4, 6, 8]


@pytest.mark.parametrize("kind", list(zoo.ZOO))
def test_keras_callback_on_the_zoo(kind, tmp_path):
    model, x, y, tags, filters = zoo.make(kind)
    (xt, yt), (xv, yv) = split(x, y)

    def fit(m, epochs):
        m.compile(keras.optimizers.Adam(1e-2), loss(), metrics=["accuracy"])
        cb = tbk.TensorBoardRun(str(tmp_path), validation_data=(xv, yv), summary_every=2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = m.fit(xt, yt, batch_size=16, epochs=epochs, validation_data=(xv, yv),
                            callbacks=[cb], verbose=0)  # fmt: skip
        return cb, history, [str(w.message) for w in caught if "TensorBoardRun" in str(w.message)]

    cb, history, warned = fit(model, 2)
    train = load_events(str(tmp_path / "train"))
    assert variable_tags_written(str(tmp_path / "train")) == expected_tags(tags, filters)
    check_dynamics(str(tmp_path / "train"), kind, model, tags)
    check_filters(train, model, filters)
    val_tags = set(load_events(str(tmp_path / "validation")).Tags()["tensors"])
    assert {"accuracy", "loss", "best_accuracy", "confusion_matrix"} <= val_tags
    images = kind == "sequential"  # the only one whose input is one batch of images
    # Example errors only for one batch of images; anything else: one warning, no crash.
    assert ("example_errors" in val_tags) == images
    assert len(warned) == (0 if images else 1), warned

    best_epoch = int(np.argmax(history.history["val_accuracy"])) + 1
    assert cb.best.best_path.endswith(f"best-{best_epoch}")
    fresh, *_ = zoo.make(kind, seed=1)
    tf.train.Checkpoint(model=fresh).restore(cb.best.best_path).expect_partial()
    assert accuracy(fresh, xv, yv) == pytest.approx(max(history.history["val_accuracy"]), abs=1e-6)

    again, *_ = zoo.make(kind, seed=2)
    _, history2, _ = fit(again, 3)
    assert len(history2.history["loss"]) == 1  # epochs 1-2 were done: only epoch 3 runs
    steps = sorted(scalars(load_events(str(tmp_path / "validation")), "accuracy"))
    assert steps == [4, 8, 12]  # 64 examples / 16 = 4 steps per epoch, continued


def test_tag_rule_never_shortens_a_sub_layer():
    """The MultiHeadAttention case that used to write `mha/kernel` for its query projection."""
    model, *_ = zoo.make("attention")
    tags = tbkit.variable_tags(model)
    assert "mha/kernel" not in tags and "mha/query/kernel" in tags
    assert len({id(v) for v in tags.values()}) == len(tags) == len(model.weights)
