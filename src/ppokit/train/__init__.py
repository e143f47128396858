"""Training on Gymnasium tasks: configuration, the loop and what it is made of.

- :mod:`~ppokit.train.config` the run's configuration and the iteration count;
  :mod:`~ppokit.train.config_files` reading ``--config`` files;
  :mod:`~ppokit.train.validation` every field's allowed range (quoted by ``--help``);
  :mod:`~ppokit.train.presets` the published settings per task family
- :mod:`~ppokit.train.setup` config, env sources and networks checked before any work;
  :mod:`~ppokit.train.build` networks, loss and optimizer from the config
- :mod:`~ppokit.train.trainer` ``PPOTrainer`` (collect, advantages, update);
  :mod:`~ppokit.train.api` ``train()`` in one call;
  :mod:`~ppokit.train.loop` the loop around them; :mod:`~ppokit.train.update` the update step
- :mod:`~ppokit.train.collector` acting; :mod:`~ppokit.train.guards` the environment's
  NaN/Inf named before GAE; :mod:`~ppokit.train.normalization` running statistics
- :mod:`~ppokit.train.state` random state; :mod:`~ppokit.train.checkpoint` files;
  :mod:`~ppokit.train.rundir` the run dir (checks, lock, manifest, atomic writes);
  :mod:`~ppokit.train.signals` Ctrl-C/SIGTERM; :mod:`~ppokit.train.policy` a trained policy
- :mod:`~ppokit.train.evaluate`, :mod:`~ppokit.train.metrics`, :mod:`~ppokit.train.plot`,
  :mod:`~ppokit.train.cli` (``ppokit train | eval | plot | export | tune``, a thin layer over
  the trainer); :mod:`~ppokit.train.arguments` ``ppokit train``'s arguments, checked before
  torch loads; :mod:`~ppokit.train.cli_export`, :mod:`~ppokit.train.cli_tune` the others'
- :mod:`~ppokit.train.periodic_eval` evaluation during training and ``best.pt``;
  :mod:`~ppokit.train.export` the deployable policy (ONNX, TorchScript, ExportedProgram);
  :mod:`~ppokit.train.tracking` experiment trackers (:mod:`~ppokit.train.tracking_wandb`);
  :mod:`~ppokit.train.tune` Optuna search
"""
