"""The search in TensorBoard's HParams tab: one experiment, one session per trial.

Written with TensorBoard's own protos and event-file writer: one event each, no
summary writer to open and close.
"""

from __future__ import annotations

import os
import time


def _write(directory: str, summary, suffix: str = "") -> None:
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(directory, filename_suffix=suffix)
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
    writer.close()


STATUSES = ("complete", "pruned", "failed")


def write_experiment(spec) -> None:
    """The HParams experiment at the top of the search directory: each searched setting
    with its domain, and the metrics every trial logs."""
    from tensorboard.plugins.hparams import summary_v2
    from tensorboard.plugins.hparams import summary_v2 as hp

    if any(n.startswith("events.out.tfevents") for n in os.listdir(spec.directory)):
        return
    hparams = [hp.HParam(name, d.hparam_domain()) for name, d in spec.space.items()]
    # The tab has no status column of its own: the trial's end is an hparam.
    hparams += [
        hp.HParam("status", hp.Discrete(list(STATUSES)), display_name="status"),
        hp.HParam("reason", display_name="pruned or failed because"),
        hp.HParam("steps", display_name="steps reached"),
    ]
    metrics = [
        hp.Metric(spec.metric, group="validation", display_name=f"validation {spec.metric}"),
        hp.Metric(f"best_{spec.metric}", group="validation",
                  display_name=f"best validation {spec.metric}"),
    ]  # fmt: skip
    if spec.metric != "loss":
        metrics.append(hp.Metric("loss", group="validation", display_name="validation loss"))
    _write(spec.directory, summary_v2.hparams_config_pb(hparams=hparams, metrics=metrics))


def write_session(run_dir: str, params: dict, status: str, reason: str = "", steps: int = 0):
    """The trial's HParams session (its settings, status, reason and steps) at the top of
    its run directory, written once, when the trial ends (TensorBoard keeps a session's
    first start info, so it is written when the status is known)."""
    from tensorboard.plugins.hparams import summary_v2

    values = {k: v for k, v in params.items() if isinstance(v, bool | int | float | str)}
    values.update(status=status, reason=reason or "", steps=int(steps))
    if any(".session" in n for n in os.listdir(run_dir)):
        return  # a trial's session is written once
    _write(run_dir, summary_v2.hparams_pb(values, trial_id=os.path.basename(run_dir)), ".session")
