"""A `tbkit.search` build for the tests (importable by name from a trial's process): a small
dense classifier whose first attempt at trial 0 is SIGKILLed mid-run when asked to."""

from __future__ import annotations

import os
import signal

import keras
import numpy as np
import tensorflow as tf

import tbkit
from tbkit.search import TrialSetup

#: When this environment variable names a file that does not exist yet, the trial's
#: process creates it and kills itself with SIGKILL after step `KILL_AT`.
KILL_MARKER = "TBKIT_TEST_KILL_MARKER"
KILL_AT = 50
#: The same, for a trial whose learning rate is below 1e-5: killed in `on_end`, after the
#: search's pruning hook decided but before its process told the study.
KILL_ON_END = "TBKIT_TEST_KILL_ON_END_MARKER"


class KillOnce(tbkit.Hook):
    def __init__(self, marker: str):
        self.marker = marker

    def on_step_end(self, run, step):
        if step == KILL_AT and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


class KillOnEnd(tbkit.Hook):
    def __init__(self, marker: str):
        self.marker = marker

    def on_end(self, run, event):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


def build(params):
    keras.utils.set_random_seed(params["seed"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(640, 8)).astype("float32")
    y = (x[:, :4].sum(axis=1) > 0).astype("int32") + 2 * (x[:, 4] > 0).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x[:512], y[:512])).shuffle(512, seed=1)
    val = tf.data.Dataset.from_tensor_slices((x[512:], y[512:])).batch(128)
    inputs = keras.Input((8,))
    h = keras.layers.Dense(params["units"], activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(h))
    marker = os.environ.get(KILL_MARKER)
    setup = TrialSetup(
        model=model,
        optimizer=keras.optimizers.Adam(params["learning_rate"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        train_data=train.repeat().batch(32),
        validation_data=val,
        steps=80,
        trainer=dict(
            eval_every=20,
            summary_every=20,
            checkpoint_every=20,
            patience=None,
            projector_examples=0,
            images=False,
        ),
        hooks=[KillOnce(marker)] if marker else [],
    )
    end_marker = os.environ.get(KILL_ON_END)
    if end_marker and params["learning_rate"] < 1e-5:
        setup.hooks.append(KillOnEnd(end_marker))
    return setup
