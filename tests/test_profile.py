"""profile_steps: TensorFlow's profiler over a window of steps, into `train/` (issue 15)."""

from __future__ import annotations

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tbkit
import tbkit.keras as tbk
from tbkit.hooks import Profile
from tbkit.summary.profiling import Profiler, parse_steps


def traces(run_dir) -> list[str]:
    return glob.glob(os.path.join(str(run_dir), "train", "plugins", "profile", "*", "*.xplane.pb"))


def small_model():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])  # fmt: skip
    model(tf.zeros((1, 6)))
    return model


def data(n=64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, size=n).astype(np.int32)


def test_parse_steps_accepts_windows_and_refuses_the_rest():
    assert (
        parse_steps("3:5") == (3, 5) and parse_steps((2, 2)) == (2, 2) and parse_steps(None) is None
    )
    for bad in ("5", "5:3", "0:2", "a:b", (1,), "1:2:3"):
        with pytest.raises(ValueError, match="profile_steps"):
            parse_steps(bad)


def test_trainer_traces_only_its_window(tmp_path):
    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)

    def fit(name, **kw):
        trainer = tbkit.Trainer(small_model(), keras.optimizers.SGD(0.1),
                                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                tmp_path / name, eval_every=5, summary_every=5, progress=False,
                                log=lambda _: None, **kw)  # fmt: skip
        trainer.fit(ds, val, steps=10)

    fit("profiled", profile_steps="3:4")
    fit("plain")
    assert len(traces(tmp_path / "profiled")) == 1
    assert traces(tmp_path / "plain") == []
    with pytest.raises(ValueError, match="profile_steps"):
        fit("bad", profile_steps="4:3")


def test_trainer_window_past_the_end_still_writes_the_trace(tmp_path):
    """Training that ends inside the window (early stop, fewer steps) stops the trace."""
    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    trainer = tbkit.Trainer(small_model(), keras.optimizers.SGD(0.1),
                            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                            tmp_path / "r", eval_every=5, progress=False, log=lambda _: None,
                            profile_steps=(8, 100))  # fmt: skip
    trainer.fit(ds, tf.data.Dataset.from_tensor_slices((x, y)).batch(32), steps=10)
    assert len(traces(tmp_path / "r")) == 1


def test_callback_traces_its_window_across_epochs(tmp_path):
    x, y = data()
    model = small_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    run = tbk.TensorBoardRun(str(tmp_path / "cb"), validation_data=(x, y), profile_steps="7:9",
                             log=lambda _: None)  # fmt: skip
    model.fit(x, y, batch_size=16, epochs=3, callbacks=[run], verbose=0)  # 4 steps per epoch
    assert len(traces(tmp_path / "cb")) == 1
    (hook,) = [h for h in run.hooks.hooks if isinstance(h, Profile)]
    assert hook._profiler.done and not hook._profiler.active


def test_profiler_skips_a_window_that_resume_already_passed(tmp_path):
    profiler = Profiler("2:3", str(tmp_path))
    profiler.begin(5)  # resumed after the window: nothing to trace
    profiler.end(5)
    assert profiler.done and not profiler.active and not os.path.exists(tmp_path / "plugins")
