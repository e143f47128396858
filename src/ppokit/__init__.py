"""ppokit: clipped PPO on PyTorch and tensordict.

Public names are imported lazily, so ``import ppokit`` stays cheap and the loss can be
used without the training extras (Gymnasium, TensorBoard) installed.

Example:
    >>> import ppokit
    >>> ppokit.ClipPPOLoss.__name__
    'ClipPPOLoss'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # objectives
    "PPOLoss": "ppokit.objectives.ppo",
    "ClipPPOLoss": "ppokit.objectives.ppo",
    "KLPENPPOLoss": "ppokit.objectives.klpen",
    "compile_loss": "ppokit.fast.compile",
    "FusedPPOUpdate": "ppokit.fast.update",
    # training
    "PPOTrainer": "ppokit.train.trainer",
    "load_policy": "ppokit.train.trainer",
    "build_actor_critic": "ppokit.train.trainer",
    "TrainConfig": "ppokit.train.config",
    "preset_config": "ppokit.train.config",
    "GymVecEnv": "ppokit.envs.gym",
    "RolloutCollector": "ppokit.train.collector",
    "ObservationNormalizer": "ppokit.train.normalization",
    "RewardScaler": "ppokit.train.normalization",
    "RunningMeanStd": "ppokit.train.normalization",
    "evaluate_policy": "ppokit.train.evaluate",
    "save_checkpoint": "ppokit.train.checkpoint",
    "load_checkpoint": "ppokit.train.checkpoint",
    "CheckpointError": "ppokit.train.checkpoint",
    # multi-process training (torch.distributed)
    "World": "ppokit.distributed.core",
    "init_distributed": "ppokit.distributed.core",
    "shutdown_distributed": "ppokit.distributed.core",
    "wrap_ddp": "ppokit.distributed.core",
    "unwrap_ddp": "ppokit.distributed.core",
    "global_standardize": "ppokit.distributed.core",
    "global_moments": "ppokit.distributed.core",
    "RunningStatsMerger": "ppokit.distributed.core",
    "rank_seed": "ppokit.distributed.core",
    # value estimators
    "GAE": "ppokit.value.estimators",
    "TDLambdaEstimate": "ppokit.value.estimators",
    "TD0Estimate": "ppokit.value.estimators",
    "TD1Estimate": "ppokit.value.estimators",
    "ValueEstimators": "ppokit.value.estimators",
    "VTrace": "ppokit.value.estimators",
    "MultiAgentGAE": "ppokit.value.estimators",
    "vtrace_advantage_estimate": "ppokit.value.functional_vtrace",
    "multi_agent_generalized_advantage_estimate": "ppokit.value.functional_multiagent",
    "generalized_advantage_estimate": "ppokit.value.functional",
    "td_lambda_return_estimate": "ppokit.value.functional",
    "td0_return_estimate": "ppokit.value.functional",
    "td1_return_estimate": "ppokit.value.functional",
    # modules
    "MLP": "ppokit.modules.mlp",
    "ProbabilisticActor": "ppokit.modules.actors",
    "ValueOperator": "ppokit.modules.actors",
    "ActorValueOperator": "ppokit.modules.actors",
    "ActorCriticOperator": "ppokit.modules.actors",
    "NormalParamExtractor": "ppokit.modules.distributions",
    "TanhNormal": "ppokit.modules.distributions",
    "IndependentNormal": "ppokit.modules.distributions",
    "Categorical": "ppokit.modules.distributions",
    "OneHotCategorical": "ppokit.modules.distributions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ppokit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next lookup is a plain attribute access
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
