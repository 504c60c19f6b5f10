"""The Embedding Projector's files (issue 16): what they hold is the kept model's view."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins import projector

import tbkit
from conftest import load_events
from tbkit.errors import TbkitError


def data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10, 10, 1)).astype(np.float32)
    y = ((x[:, :5].mean(axis=(1, 2, 3)) > 0) + 2 * (x[:, 5:].mean(axis=(1, 2, 3)) > 0)).astype(
        np.int32
    )
    return x, y


def functional():
    inp = keras.Input((10, 10, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(16, activation="relu", name="hidden")(h)
    h = keras.layers.Dropout(0.2)(h)
    return keras.Model(inp, keras.layers.Dense(4, name="head")(h))


def config(run_dir) -> projector.ProjectorConfig:
    out = projector.ProjectorConfig()
    text_format.Parse((run_dir / "validation" / "projector_config.pbtxt").read_text(), out)
    return out


def read(run_dir, embedding):
    folder = run_dir / "validation"
    tensor = np.loadtxt(folder / embedding.tensor_path, delimiter="\t", ndmin=2)
    rows = [
        line.split("\t") for line in (folder / embedding.metadata_path).read_text().splitlines()
    ]
    assert rows[0] == ["label", "prediction", "correct", "index"]
    return tensor, rows[1:]


def make_trainer(model, run_dir, **kw):
    return tbkit.Trainer(model, keras.optimizers.Adam(0.05),
                         keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                         run_dir, eval_every=10, summary_every=10, progress=False,
                         log=lambda _: None, **{**QUIET, **kw})  # fmt: skip


# The layer summaries are tested elsewhere: here they would only add tracing time.
QUIET = dict(histograms=False, images=False, dynamics=False)


def test_trainer_projects_the_best_checkpoint_and_keeps_the_last_weights(tmp_path):
    x, y = data()
    model = functional()
    model(x[:1])
    last = {}
    trainer = make_trainer(model, tmp_path / "r", projector_examples=25, class_names=list("abcd"),
                           on_validation=lambda v: last.update(w=[w.numpy() for w in model.weights]))  # fmt: skip
    train = tf.data.Dataset.from_tensor_slices((x[:100], y[:100])).batch(10).repeat()
    val = tf.data.Dataset.from_tensor_slices((x[100:], y[100:])).batch(16)
    fit = trainer.fit(train, val, steps=40)
    # fit leaves the model as training left it (the projector borrowed the best weights).
    for a, b in zip(last["w"], model.weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())

    (best,) = config(tmp_path / "r").embeddings
    assert best.tensor_name == f"hidden @ best step {fit.best_step}"
    tensor, rows = read(tmp_path / "r", best)
    index = np.array([int(r[3]) for r in rows])
    assert len(index) == 25 and np.all(np.diff(index) > 0) and index.max() < 60
    assert list(best.tensor_shape) == [25, 16] and tensor.shape == (25, 16)

    trainer.evaluate(val)  # restores the best checkpoint into the model
    hidden = keras.Model(model.inputs, model.get_layer("hidden").output)
    np.testing.assert_allclose(tensor, hidden(x[100:][index]).numpy(), rtol=1e-5, atol=1e-5)
    pred = np.argmax(model(x[100:][index]).numpy(), axis=-1)
    assert [r[0] for r in rows] == ["abcd"[c] for c in y[100:][index]]
    assert [r[1] for r in rows] == ["abcd"[c] for c in pred]
    assert [r[2] for r in rows] == [
        "yes" if p == t else "no" for p, t in zip(pred, y[100:][index], strict=True)
    ]

    sprite = Image.open(
        io.BytesIO((tmp_path / "r" / "validation" / best.sprite.image_path).read_bytes())
    )
    assert sprite.size == (5 * 10, 5 * 10) and list(best.sprite.single_image_dim) == [10, 10]
    first = np.asarray(sprite)[:10, :10].astype(float)
    assert np.corrcoef(first.ravel(), x[100:][index[0]].ravel())[0, 1] > 0.99

    # A longer fit of the same run: the projector follows the best, one best embedding.
    fit2 = make_trainer(model, tmp_path / "r", projector_examples=25).fit(train, val, steps=60)
    names = [e.tensor_name for e in config(tmp_path / "r").embeddings]
    assert names == [f"hidden @ best step {fit2.best_step}"]


def test_the_sample_is_seeded_and_the_options_change_it(tmp_path):
    x, y = data()
    train = tf.data.Dataset.from_tensor_slices((x[:100], y[:100])).batch(10).repeat()
    val = tf.data.Dataset.from_tensor_slices((x[100:], y[100:])).batch(16)
    runs = {}
    for name, kw in {"a": {"projector_examples": 20}, "b": {"projector_examples": 20},
                     "layer": {"projector_layer": "flat", "projector_every": 10},
                     "none": {"projector_examples": 0}}.items():  # fmt: skip
        model = functional()
        model(x[:1])
        make_trainer(model, tmp_path / name, **kw).fit(train, val, steps=20)
        runs[name] = tmp_path / name
    index = lambda run: [r[3] for r in read(run, config(run).embeddings[0])[1]]  # noqa: E731
    assert index(runs["a"]) == index(runs["b"]) and len(index(runs["a"])) == 20
    names = [e.tensor_name for e in config(runs["layer"]).embeddings]
    assert names[0].startswith("flat @ best step") and {"flat @ step 10", "flat @ step 20"} <= set(
        names
    )
    assert list(config(runs["layer"]).embeddings[0].tensor_shape) == [60, 8 * 8 * 4]
    assert not (runs["none"] / "validation" / "projector_config.pbtxt").exists()


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.flat = keras.layers.Flatten()
        self.body = keras.layers.Dense(12, activation="relu")
        self.out = keras.layers.Dense(4)

    def call(self, x, training=False):
        return self.out(self.body(self.flat(x)))


def nested():
    head = keras.Sequential([keras.Input((20,)), keras.layers.Dense(4)], name="head")
    inp = keras.Input((10, 10, 1))
    h = keras.layers.Dense(20, activation="tanh", name="encode")(keras.layers.Flatten()(inp))
    return keras.Model(inp, head(h))


@pytest.mark.parametrize(("build", "name", "width"),
                         [(Subclassed, "input of dense_", 12), (nested, "encode", 20)],
                         ids=["subclassed", "nested head"])  # fmt: skip
def test_models_of_other_kinds(tmp_path, build, name, width):
    x, y = data()
    model = build()
    model(x[:1])
    train = tf.data.Dataset.from_tensor_slices((x[:100], y[:100])).batch(10).repeat()
    val = tf.data.Dataset.from_tensor_slices((x[100:], y[100:])).batch(16)
    make_trainer(model, tmp_path / "r").fit(train, val, steps=10)
    (best,) = config(tmp_path / "r").embeddings
    assert best.tensor_name.startswith(name) and list(best.tensor_shape) == [60, width]


def test_a_wrong_layer_name_fails_before_training(tmp_path):
    x, y = data()
    model = functional()
    model(x[:1])
    with pytest.raises(TbkitError, match="no layer named 'hiden'"):
        make_trainer(model, tmp_path / "r", projector_layer="hiden")
    model.compile("adam", "sparse_categorical_crossentropy")
    cb = tbkit.keras.TensorBoardRun(tmp_path / "k", validation_data=(x[100:], y[100:]),
                                    projector_layer="hiden", log=lambda _: None)  # fmt: skip
    with pytest.raises(TbkitError, match="no layer named 'hiden'"):
        model.fit(x[:100], y[:100], epochs=1, verbose=0, callbacks=[cb])
    assert not (tmp_path / "k" / "checkpoints").exists()


def test_callback_projector_options(tmp_path):
    """`projector_every` (epochs), `projector_layer`, `projector_examples` under `model.fit`."""
    x, y = data()
    runs = {}
    for name, kw in {"every": {"projector_every": 1, "projector_layer": "flat"},
                     "few": {"projector_examples": 7}, "none": {"projector_examples": 0, "class_metrics": False}}.items():  # fmt: skip
        keras.utils.set_random_seed(1)
        model = functional()
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])  # fmt: skip
        cb = tbkit.keras.TensorBoardRun(tmp_path / name, validation_data=(x[100:], y[100:]),
                                        dynamics=False, log=lambda _: None, **kw)  # fmt: skip
        model.fit(x[:100], y[:100], epochs=2, batch_size=25, verbose=0,
                  validation_data=(x[100:], y[100:]), callbacks=[cb])  # fmt: skip
        runs[name] = tmp_path / name
    names = [e.tensor_name for e in config(runs["every"]).embeddings]
    assert names[0].startswith("flat @ best epoch ") and names[1:] == [
        "flat @ epoch 1",
        "flat @ epoch 2",
    ]
    (best,) = config(runs["few"]).embeddings
    assert best.tensor_name.startswith("hidden @ best epoch ") and list(best.tensor_shape) == [
        7,
        16,
    ]
    assert not (runs["none"] / "validation" / "projector_config.pbtxt").exists()
    # class_metrics: per-class scalars and PR curves, or (False) none of them
    tags = lambda run: set(load_events(str(runs[run] / "validation")).Tags()["tensors"])  # noqa: E731
    assert {"per_class/accuracy/0", "per_class/precision/3", "pr_curves/2"} <= tags("few")
    assert not any(t.startswith(("per_class/", "pr_curves/")) for t in tags("none"))
    assert "confusion_matrix" in tags("none")  # still pictured at improvements


def test_files_half_written_by_a_killed_process_are_cleared(tmp_path):
    """A process killed inside `atomic_write` leaves a temporary; the next write removes it
    (the run directory must hold no `.tmp-` files, as the kill tests check)."""
    from tbkit.summary import projector as tbp

    x, y = data()
    model = functional()
    model(x[:1])
    folder = tmp_path / "validation" / "projector"
    folder.mkdir(parents=True)
    (folder / ".tmp-hidden_step_1.tsv-abc").write_text("half")
    (tmp_path / "validation" / ".tmp-projector_config.pbtxt-xyz").write_text("half")
    name = tbp.write_embedding(str(tmp_path), model, (x[:20], y[:20]), step=1, examples=10)
    assert name == "hidden @ step 1"
    assert not list(tmp_path.rglob(".tmp-*"))
    assert [e.tensor_name for e in config(tmp_path).embeddings] == [name]


@pytest.mark.parametrize(("option", "value"), [("projector_examples", -1), ("projector_examples", True),
                                               ("projector_every", 0), ("projector_every", 2.5)])  # fmt: skip
def test_bad_projector_options_are_refused_at_both_doors(tmp_path, option, value):
    x, _ = data()
    model = functional()
    model(x[:1])
    with pytest.raises(ValueError, match=f"{option} must be"):
        make_trainer(model, tmp_path / "r", **{option: value})
    with pytest.raises(ValueError, match=f"{option} must be"):
        tbkit.keras.TensorBoardRun(tmp_path / "k", **{option: value})
