"""What the train step's loss guard found, as the lines TensorBoard shows and the error says.

The compiled train step notes, at the first step of a window whose loss was not
finite, which variables held non-finite values and which got non-finite
gradients (`TrainStep.first_nonfinite`). `loss_divergence` names the first of
them in layer order.
"""

from __future__ import annotations


def loss_divergence(loss_sum: float, guard, checked: int, step: int, recorder, kept: str):
    """`(health lines, one-line message)` of a non-finite training loss.

    Args:
      loss_sum: the window's summed loss (non-finite).
      guard: `(batch, value indices, gradient indices)` from the train step, or None.
      checked: the last step known good (the window started after it).
      step: the step of this check.
      recorder: the layer recorder (tags, in layer order).
      kept: what the message says of the best checkpoint kept.
    """
    where, lines = f"between steps {checked + 1} and {step}", []
    if guard is not None:
        batch, values, grads = guard
        bad_step = checked + batch
        where = f"at step {bad_step}"
        by_index = recorder.trainable_tags
        order = list(recorder.tags)

        def first(indices):
            return min((by_index[i] for i in indices if i in by_index), key=order.index)

        if any(i in by_index for i in values):
            tag = first(values)
            where += f" (first non-finite value: {tag})"
            lines.append(f"{tag}: non-finite values (NaN or Inf) at step {bad_step}")
        elif any(i in by_index for i in grads):
            tag = first(grads)
            where += f" (first non-finite gradient: {tag}; every value was finite)"
            lines.append(f"{tag}: non-finite gradient at step {bad_step}")
    message = (
        f"the training loss became {loss_sum} {where}; stopping (lower the learning rate?). "
        f"Best checkpoint kept: {kept}"
    )
    return lines or [f"the training loss became {loss_sum} {where}"], message
