"""Experiments: hyperparameter search on Optuna (issue 23; in progress).

Here so far: `domains` (what a searched setting may take, declared with the
setting) and `pruning` (the run-protocol hook that reports each validation to an
Optuna trial and prunes on the value or on a diagnosis). Needs the `search`
extra: `pip install "tbkit[search]"`.
"""
