"""Search foundations (#23): domains, and pruning on a value or on a diagnosis at both doors.

A real Optuna study (in memory) receives the reports; the diagnoses are read from the
run's own health, so a trial whose layers die or whose learning rate barely moves the
weights is pruned with that finding as its reason.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tbkit
import tbkit.keras as tbk
from conftest import FIXTURE
from tbkit.datasets import mnist

optuna = pytest.importorskip("optuna", reason="the search extra (pip install 'tbkit[search]')")

from tbkit.search import domains as sd  # noqa: E402
from tbkit.search.pruning import DEAD_VALIDATIONS, STALLED_VALIDATIONS, Pruning  # noqa: E402

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
QUIET = dict(progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def digits():
    data = mnist.load(FIXTURE, validation_size=200, download=False, log=lambda _: None)
    x = data.train_images[:512].reshape(512, -1).astype("float32") / 255.0
    return x, data.train_labels[:512].astype("int32")


def mlp(seed=0, bias=0.0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((784,)),
         keras.layers.Dense(32, activation="relu", name="hidden",
                            bias_initializer=keras.initializers.Constant(bias)),
         keras.layers.Dense(10, name="head")]
    )  # fmt: skip


def study(pruner=None):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", pruner=pruner or optuna.pruners.NopPruner())


def test_domains_sample_check_and_parse():
    s = study()
    trial = s.ask()
    lr = sd.Uniform(1e-4, 1e-2, log=True)
    assert lr.contains(lr.suggest(trial, "lr")) and not lr.contains(0.5)
    assert lr.parse("1e-3:1e-1") == sd.Uniform(1e-3, 1e-1, log=True)
    assert sd.Choice((32, 64)).parse("16,128") == sd.Choice((16, 128))
    assert sd.IntRange(0, 3).parse("1:2") == sd.IntRange(1, 2)
    for bad in ("0.1", "b:c", "1e-1:1e-3", "-1:1"):
        with pytest.raises(sd.DomainError) as err:
            lr.parse(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(sd.DomainError):
        sd.Choice(())


def test_every_validation_is_reported_once_and_a_resumed_trial_skips_its_steps(tmp_path, digits):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    s = study()
    trial = s.ask()
    hook = Pruning(trial)
    trainer = tbkit.Trainer(mlp(), keras.optimizers.Adam(1e-3), SCCE, tmp_path / "t",
                            eval_every=4, hooks=[hook], **QUIET)  # fmt: skip
    trainer.fit(ds, ds, steps=8)
    # Resumed in a new process: the steps already reported are skipped, not sent twice.
    again = Pruning(
        optuna.trial.Trial(s, trial._trial_id), reported=s.trials[0].intermediate_values
    )
    tbkit.Trainer(mlp(), keras.optimizers.Adam(1e-3), SCCE, tmp_path / "t", eval_every=4,
                  hooks=[again], **QUIET).fit(ds, ds, steps=12)  # fmt: skip
    values = s.trials[0].intermediate_values
    assert sorted(values) == [4, 8, 12] and hook.reason is None and again.reason is None


def test_a_trial_whose_layer_dies_is_pruned_with_the_finding(tmp_path, digits):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    s = study()
    hook = Pruning(s.ask())
    # A hidden layer whose biases start far below zero: every ReLU unit is dead.
    trainer = tbkit.Trainer(mlp(bias=-50.0), keras.optimizers.SGD(1e-3), SCCE, tmp_path / "t",
                            eval_every=2, summary_every=2, hooks=[hook], **QUIET)  # fmt: skip
    result = trainer.fit(ds, ds, steps=40)
    assert hook.reason.startswith("hidden: 100% of its units dead")
    assert result.steps == 2 * DEAD_VALIDATIONS  # stopped at the third dead validation


def test_a_learning_rate_that_barely_moves_is_pruned_through_the_callback(tmp_path, digits):
    x, y = digits
    s = study()
    hook = Pruning(s.ask())
    model = mlp()
    model.compile(keras.optimizers.SGD(1e-9), SCCE, metrics=["accuracy"])
    cb = tbk.TensorBoardRun(str(tmp_path / "k"), validation_data=(x, y), hooks=[hook],
                            log=lambda _: None)  # fmt: skip
    history = model.fit(x, y, batch_size=128, epochs=10, validation_data=(x, y), verbose=0,
                        callbacks=[cb])  # fmt: skip
    assert "update ratio below 1e-05" in hook.reason
    assert len(history.history["loss"]) == STALLED_VALIDATIONS
    assert sorted(s.trials[0].intermediate_values) == [1, 2, 3]  # epochs, one report each


def test_value_pruning_asks_the_studys_pruner(tmp_path, digits):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    # Two good trials first; a third with a learning rate of zero ranks below their median.
    s = study(optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    for lr in (3e-3, 2e-3):
        t = s.ask()
        tbkit.Trainer(mlp(), keras.optimizers.Adam(lr), SCCE, tmp_path / f"g{lr}", eval_every=4,
                      hooks=[Pruning(t)], **QUIET).fit(ds, ds, steps=8)  # fmt: skip
        s.tell(t, s.trials[t.number].intermediate_values[8])
    hook = Pruning(s.ask())
    result = tbkit.Trainer(mlp(), keras.optimizers.SGD(0.0), SCCE, tmp_path / "bad",
                           eval_every=4, hooks=[hook], **QUIET).fit(ds, ds, steps=40)  # fmt: skip
    assert hook.reason == "the accuracy at step 4 ranks low (pruner)"
    assert result.steps == 4 and np.isfinite(s.trials[2].intermediate_values[4])


def test_a_diverging_trial_is_pruned_at_once(tmp_path, digits):
    x, y = digits
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    hook = Pruning(study().ask())
    model = mlp()

    class Poison(tbkit.Hook):
        def on_validation(self, run, event):
            if event.step == 2:
                model.get_layer("head").bias.assign(np.full(10, np.nan, "float32"))

    trainer = tbkit.Trainer(model, keras.optimizers.Adam(1e-3), SCCE, tmp_path / "t",
                            eval_every=2, hooks=[Poison(), hook], **QUIET)  # fmt: skip
    with pytest.raises(tbkit.TrainingError):
        trainer.fit(ds, ds, steps=20)
    assert hook.reason.startswith("non-finite values:")
