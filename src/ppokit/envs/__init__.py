"""Gymnasium environments as torch tensors and TensorDict steps.

:mod:`ppokit.envs.sources` turns an id, a callable or a VectorEnv into one vector env;
:mod:`ppokit.envs.gym` steps it with tensors.
"""

from ppokit.envs.gym import GymVecEnv, StepResult, check_spaces
from ppokit.envs.sources import EnvSource, check_env_id, env_label, make_vector_env

__all__ = ["EnvSource", "GymVecEnv", "StepResult", "check_env_id", "check_spaces", "env_label",
           "make_vector_env"]
