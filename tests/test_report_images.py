"""TensorBoard keeps 10 images per tag: tbkit.report names the flag that shows them all."""

from __future__ import annotations

import urllib.parse

import numpy as np
import pytest
import tensorflow as tf

from helpers import get, tensorboard_server
from tbkit.summary import images as tbi
from tbkit.tools import report

pytestmark = pytest.mark.e2e


def test_report_names_the_samples_flag_and_tensorboard_then_serves_every_image(tmp_path, capsys):
    run = tmp_path / "logs" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    writer = tf.summary.create_file_writer(str(run / "train"))
    kernel = np.random.default_rng(0).normal(size=(3, 3, 1, 4))
    with writer.as_default():
        for step in range(1, 13):
            tbi.filters_summary("layer/filters", kernel * step, step=step)
    writer.close()

    assert report.main([str(tmp_path / "logs")]) == 0
    out = capsys.readouterr().out
    assert "--samples_per_plugin images=12" in out

    query = urllib.parse.urlencode({"run": "r/train", "tag": "layer/filters"})

    def steps(base):
        return [e["step"] for e in get(f"{base}/data/plugin/images/images?{query}", timeout=5)]

    def loaded(base):  # the last image is served once the whole file is read
        return 12 in steps(base)

    # (Without the flag TensorBoard serves a sample of 10; the flag is what shows all 12.)
    flag = out.split("--samples_per_plugin ")[1].split()[0]
    with tensorboard_server(str(tmp_path / "logs"), ready=loaded,
                            extra=["--samples_per_plugin", flag]) as base:  # fmt: skip
        assert steps(base) == list(range(1, 13))
