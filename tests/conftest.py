"""Shared fixtures: the committed real-MNIST fixture and an event-file reader."""

from __future__ import annotations

import glob
import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "data", "mnist_fixture")


@pytest.fixture
def fixture_dir() -> str:
    return FIXTURE


def load_events(logdir: str):
    """Loads one run directory with TensorBoard's own EventAccumulator."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(logdir, size_guidance={ea.TENSORS: 0, ea.GRAPH: 1})
    acc.Reload()
    return acc


def tensor_tags(logdir: str) -> set[str]:
    return set(load_events(logdir).Tags()["tensors"])


def scalars(acc, tag: str) -> dict[int, float]:
    """`{step: value}` of a v2 scalar summary."""
    import tensorflow as tf

    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}


def decode_image_events(acc, tag: str):
    """`[(step, HxWxC uint8 array)]` of a v2 image summary, decoded from PNG."""
    import tensorflow as tf
    from PIL import Image

    out = []
    for e in acc.Tensors(tag):
        blobs = tf.make_ndarray(e.tensor_proto)  # [width, height, png...]
        width, height = int(blobs[0]), int(blobs[1])
        for png in blobs[2:]:
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            picture = Image.open(io.BytesIO(png))
            if picture.mode == "P":  # palette PNGs (filter grids) show as RGB
                picture = picture.convert("RGB")
            image = np.asarray(picture)
            assert image.shape[:2] == (height, width)
            out.append((e.step, image))
    return out


def event_files(logdir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))


def damage_checkpoint(prefix, damage: str) -> None:
    """Damages checkpoint `prefix` on disk: "truncated index" or "flipped byte in data"."""
    prefix = str(prefix)
    if damage == "truncated index":
        with open(prefix + ".index", "r+b") as f:
            f.truncate(40)
    elif damage == "flipped byte in data":
        with open(prefix + ".data-00000-of-00001", "r+b") as f:
            data = bytearray(f.read())
            data[len(data) // 2] ^= 0xFF
            f.seek(0)
            f.write(bytes(data))
    else:
        raise ValueError(f"unknown damage {damage!r}")
