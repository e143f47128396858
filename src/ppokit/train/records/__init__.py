"""What a run leaves on disk: the run directory, checkpoints, provenance, metrics and plots.

:mod:`~ppokit.train.records.rundir` checks, locks and writes the run directory safely;
:mod:`~ppokit.train.records.checkpoint` checkpoint files;
:mod:`~ppokit.train.records.provenance` the code and library versions of each start;
:mod:`~ppokit.train.records.metrics` TensorBoard and ``progress.csv``;
:mod:`~ppokit.train.records.tracking` other experiment trackers
(:mod:`~ppokit.train.records.tracking_wandb`); :mod:`~ppokit.train.records.plot` learning curves.
"""
