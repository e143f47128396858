"""Evaluating a policy: deterministic episodes, during and after training, with video.

:mod:`~ppokit.train.evaluation.evaluate` the episodes (and the mp4);
:mod:`~ppokit.train.evaluation.periodic` evaluation during training and ``best.pt``;
:mod:`~ppokit.train.evaluation.success` the success rate from ``info["is_success"]``;
:mod:`~ppokit.train.evaluation.video` the single rendered env of ``ppokit eval --video``.
"""
