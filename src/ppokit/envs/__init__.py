"""Gymnasium environments as torch tensors and TensorDict steps.

:mod:`ppokit.envs.sources` turns an id, a callable or a VectorEnv into one vector env;
:mod:`ppokit.envs.spaces` says which spaces the networks take; :mod:`ppokit.envs.gym` steps
the env with tensors. The names load lazily: ``ppokit.envs.sources`` and
``ppokit.envs.spaces`` do not import torch (the command line checks an env id with them
before torch is loaded).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "EnvSource",
    "GymVecEnv",
    "StepResult",
    "check_env_id",
    "check_spaces",
    "env_label",
    "make_vector_env",
]

_WHERE = {
    "EnvSource": "sources",
    "check_env_id": "sources",
    "env_label": "sources",
    "make_vector_env": "sources",
    "check_spaces": "spaces",
    "GymVecEnv": "gym",
    "StepResult": "gym",
}


def _register_pomdp() -> None:
    # ppokit's own ids (ppokit/CartPoleNoVel-v1, ...) are known wherever ppokit.envs is
    # imported, as a Gymnasium id of any installed package would be
    try:
        from ppokit.envs.pomdp import register_pomdp_envs
    except ImportError:  # Gymnasium is an optional extra; the loss alone does not need it
        return
    register_pomdp_envs()


_register_pomdp()


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"ppokit.envs.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
