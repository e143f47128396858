"""Gymnasium vector environments as torch tensors and TensorDict steps (:mod:`ppokit.envs.gym`)."""

from ppokit.envs.gym import GymVecEnv, StepResult, check_env_id, check_spaces

__all__ = ["GymVecEnv", "StepResult", "check_env_id", "check_spaces"]
