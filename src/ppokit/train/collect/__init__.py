"""Rollout collection: stepping the vector env with the current policy into a TensorDict.

:mod:`~ppokit.train.collect.collector` the ``[num_envs, T]`` rollout;
:mod:`~ppokit.train.collect.acting` the policy on plain tensors;
:mod:`~ppokit.train.collect.device` a policy on another device and whole-game returns;
:mod:`~ppokit.train.collect.values` critic values recorded while collecting (image tasks).
"""
