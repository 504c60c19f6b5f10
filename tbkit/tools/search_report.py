"""`python -m tbkit.report SEARCH_DIR` on a search: its trials, best, test result, importances."""

from __future__ import annotations

import json
import os

#: Parameter importances need this many finished trials to say anything.
IMPORTANCE_TRIALS = 4


def is_search(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, "search.json"))


def format_search(directory: str) -> str:
    """The search's trials sorted by value (best first; then pruned and failed ones), with
    status, reason, steps and settings; the best; the test result; the importances."""
    from tbkit.search.study import load_spec, open_study, optuna_module, trial_table

    spec = load_spec(directory)
    study = open_study(spec)
    rows = trial_table(study)
    sign = -1 if spec.direction == "maximize" else 1
    done = sorted((r for r in rows if r.value is not None), key=lambda r: sign * r.value)
    others = [r for r in rows if r.value is None]
    names = list(spec.space)
    lines = [f"Search {directory}: {len(rows)} of {spec.trials} trials, {spec.direction} "
             f"validation {spec.metric}"]  # fmt: skip
    head = f"{'trial':>10}  {'status':<9} {spec.metric:>9} {'steps':>6}  " + "  ".join(names)
    lines += ["", head]
    for r in done + others:
        value = f"{r.value:9.4f}" if r.value is not None else f"{'':>9}"
        steps = f"{r.steps:>6}" if r.steps is not None else f"{'':>6}"
        params = "  ".join(_fmt(r.params.get(n)) for n in names)
        name = f"trial-{r.number:04d}"
        lines.append(f"{name:>10}  {r.status:<9} {value} {steps}  {params}")
        if r.reason:
            lines.append(f"{'':>12}reason: {r.reason}")
    if done:
        best = done[0]
        lines += ["", f"Best: trial-{best.number:04d} ({spec.metric} {best.value:.4f})"]
    result = os.path.join(directory, "test_result.json")
    if os.path.exists(result):
        with open(result) as f:
            test = json.load(f)
        lines.append(
            f"Test set (once, {test['trial']}): {test['accuracy']:.2%} "
            f"({test['correct']} / {test['total']})"
        )
    complete = [r for r in rows if r.status == "complete"]
    if len(complete) >= IMPORTANCE_TRIALS and len(names) > 1:
        optuna = optuna_module()
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as e:
            lines.append(f"Importances: not computable ({e})")
        else:
            lines.append(
                "Importances: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items())
            )
    else:
        lines.append(f"Importances: after {IMPORTANCE_TRIALS} complete trials")
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
