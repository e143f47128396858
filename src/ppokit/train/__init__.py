"""Training on Gymnasium tasks: configuration, the loop and what it is made of.

The loop, in this package:

- :mod:`~ppokit.train.trainer` ``PPOTrainer`` (collect, advantages, update);
  :mod:`~ppokit.train.api` ``train()`` in one call; :mod:`~ppokit.train.loop` the loop around
  them; :mod:`~ppokit.train.setup` config, env sources and networks checked before any work
- :mod:`~ppokit.train.build` networks, loss and optimizer from the config
  (:mod:`~ppokit.train.build_cnn` for images); :mod:`~ppokit.train.epochs` and
  :mod:`~ppokit.train.update` the update half of an iteration
- :mod:`~ppokit.train.normalization` running statistics; :mod:`~ppokit.train.guards` the
  environment's NaN/Inf named before GAE; :mod:`~ppokit.train.state` random state;
  :mod:`~ppokit.train.signals` Ctrl-C/SIGTERM; :mod:`~ppokit.train.device` and
  :mod:`~ppokit.train.precision` where and in which precision a run computes;
  :mod:`~ppokit.train.tune` Optuna search

What it is made of, one subpackage per concern:

- :mod:`~ppokit.train.settings` the configuration, its checks, presets and config files
- :mod:`~ppokit.train.collect` rollout collection
- :mod:`~ppokit.train.recurrent` and :mod:`~ppokit.train.structured` the recurrent and
  structured variants
- :mod:`~ppokit.train.records` run directory, checkpoints, provenance, metrics, plots
- :mod:`~ppokit.train.evaluation` deterministic evaluation, during and after training
- :mod:`~ppokit.train.deploy` a trained policy loaded back or exported
- :mod:`~ppokit.train.sweep` multi-seed sweeps and their statistics
- :mod:`~ppokit.train.cli` the ``ppokit`` command line, a thin layer over all of the above
"""
