"""ppokit: clipped PPO on PyTorch and tensordict.

Public names are imported lazily, so ``import ppokit`` stays cheap (no Gymnasium, TensorBoard
or torch.distributed import) and the loss can be used without the training extras installed.
Type checkers and IDEs see the same names through the ``TYPE_CHECKING`` imports and the
literal ``__all__`` below; a test keeps both in step with the lazy map.

Example:
    >>> import ppokit
    >>> ppokit.ClipPPOLoss.__name__
    'ClipPPOLoss'
    >>> from importlib.metadata import version
    >>> ppokit.__version__ == version("ppokit")
    True
"""

from __future__ import annotations

import importlib
from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

try:
    # single source: the version in pyproject.toml, as installed
    __version__ = _metadata.version("ppokit")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from ppokit.distributed.ddp import (
        unwrap_ddp,
        wrap_ddp,
    )
    from ppokit.distributed.stats import (
        RunningStatsMerger,
        global_mean_weight,
        global_moments,
        global_standardize,
    )
    from ppokit.distributed.world import (
        World,
        init_distributed,
        rank_seed,
        shutdown_distributed,
    )
    from ppokit.envs.gym import (
        GymVecEnv,
    )
    from ppokit.envs.structured import (
        StructuredVecEnv,
        open_env,
    )
    from ppokit.fast.compile import (
        compile_loss,
    )
    from ppokit.fast.update import (
        FusedPPOUpdate,
    )
    from ppokit.modules.actors import (
        ActorCriticOperator,
        ActorValueOperator,
        ProbabilisticActor,
        ValueOperator,
    )
    from ppokit.modules.cnn import (
        NatureCNN,
    )
    from ppokit.modules.distributions import (
        Categorical,
        IndependentNormal,
        MaskedCategorical,
        NormalParamExtractor,
        OneHotCategorical,
        TanhNormal,
    )
    from ppokit.modules.distributions.bernoulli import (
        IndependentBernoulli,
    )
    from ppokit.modules.distributions.masked_bernoulli import (
        MaskedBernoulli,
    )
    from ppokit.modules.mlp import (
        MLP,
    )
    from ppokit.modules.recurrent import (
        GRUModule,
        LSTMModule,
        set_recurrent_mode,
    )
    from ppokit.objectives.klpen import (
        KLPENPPOLoss,
    )
    from ppokit.objectives.network_inputs import (
        NetworkInputError,
    )
    from ppokit.objectives.objective import (
        ppo_objective,
    )
    from ppokit.objectives.ppo import (
        ClipPPOLoss,
        PPOLoss,
    )
    from ppokit.train.build import (
        build_actor_critic,
    )
    from ppokit.train.build_cnn import (
        build_cnn_actor_critic,
    )
    from ppokit.train.collect.collector import (
        RolloutCollector,
    )
    from ppokit.train.deploy.policy import (
        load_policy,
    )
    from ppokit.train.evaluation.evaluate import (
        evaluate_policy,
    )
    from ppokit.train.normalization import (
        ObservationNormalizer,
        RewardScaler,
        RunningMeanStd,
    )
    from ppokit.train.records.checkpoint import (
        CheckpointError,
        load_checkpoint,
        save_checkpoint,
    )
    from ppokit.train.recurrent.state import (
        PolicyState,
    )
    from ppokit.train.settings.config import (
        TrainConfig,
    )
    from ppokit.train.settings.presets import (
        preset_config,
    )
    from ppokit.train.structured.training import (
        build_structured_actor_critic,
    )
    from ppokit.train.trainer import (
        PPOTrainer,
    )
    from ppokit.value.estimators import (
        GAE,
        MultiAgentGAE,
        TD0Estimate,
        TD1Estimate,
        TDLambdaEstimate,
        ValueEstimators,
        VTrace,
    )
    from ppokit.value.functional import (
        generalized_advantage_estimate,
        td0_return_estimate,
        td1_return_estimate,
        td_lambda_return_estimate,
    )
    from ppokit.value.functional_multiagent import (
        multi_agent_generalized_advantage_estimate,
    )
    from ppokit.value.functional_vtrace import (
        vtrace_advantage_estimate,
    )

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # loss
    "PPOLoss": "ppokit.objectives.ppo",
    "ClipPPOLoss": "ppokit.objectives.ppo",
    "ppo_objective": "ppokit.objectives.objective",
    "NetworkInputError": "ppokit.objectives.network_inputs",
    "KLPENPPOLoss": "ppokit.objectives.klpen",
    "compile_loss": "ppokit.fast.compile",
    "FusedPPOUpdate": "ppokit.fast.update",
    # value estimators
    "GAE": "ppokit.value.estimators",
    "TDLambdaEstimate": "ppokit.value.estimators",
    "TD0Estimate": "ppokit.value.estimators",
    "TD1Estimate": "ppokit.value.estimators",
    "ValueEstimators": "ppokit.value.estimators",
    "generalized_advantage_estimate": "ppokit.value.functional",
    "td_lambda_return_estimate": "ppokit.value.functional",
    "td0_return_estimate": "ppokit.value.functional",
    "td1_return_estimate": "ppokit.value.functional",
    "VTrace": "ppokit.value.estimators",
    "MultiAgentGAE": "ppokit.value.estimators",
    "vtrace_advantage_estimate": "ppokit.value.functional_vtrace",
    "multi_agent_generalized_advantage_estimate": "ppokit.value.functional_multiagent",
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
    "MaskedCategorical": "ppokit.modules.distributions",
    "NatureCNN": "ppokit.modules.cnn",
    "LSTMModule": "ppokit.modules.recurrent",
    "GRUModule": "ppokit.modules.recurrent",
    "set_recurrent_mode": "ppokit.modules.recurrent",
    "IndependentBernoulli": "ppokit.modules.distributions.bernoulli",
    "MaskedBernoulli": "ppokit.modules.distributions.masked_bernoulli",
    # environments and training
    "GymVecEnv": "ppokit.envs.gym",
    "StructuredVecEnv": "ppokit.envs.structured",
    "open_env": "ppokit.envs.structured",
    "TrainConfig": "ppokit.train.settings.config",
    "preset_config": "ppokit.train.settings.presets",
    "PPOTrainer": "ppokit.train.trainer",
    "load_policy": "ppokit.train.deploy.policy",
    "build_actor_critic": "ppokit.train.build",
    "RolloutCollector": "ppokit.train.collect.collector",
    "ObservationNormalizer": "ppokit.train.normalization",
    "RewardScaler": "ppokit.train.normalization",
    "RunningMeanStd": "ppokit.train.normalization",
    "evaluate_policy": "ppokit.train.evaluation.evaluate",
    "save_checkpoint": "ppokit.train.records.checkpoint",
    "load_checkpoint": "ppokit.train.records.checkpoint",
    "CheckpointError": "ppokit.train.records.checkpoint",
    "build_structured_actor_critic": "ppokit.train.structured.training",
    "build_cnn_actor_critic": "ppokit.train.build_cnn",
    "PolicyState": "ppokit.train.recurrent.state",
    # multi-process training (torch.distributed)
    "World": "ppokit.distributed.world",
    "init_distributed": "ppokit.distributed.world",
    "shutdown_distributed": "ppokit.distributed.world",
    "rank_seed": "ppokit.distributed.world",
    "wrap_ddp": "ppokit.distributed.ddp",
    "unwrap_ddp": "ppokit.distributed.ddp",
    "global_standardize": "ppokit.distributed.stats",
    "global_moments": "ppokit.distributed.stats",
    "global_mean_weight": "ppokit.distributed.stats",
    "RunningStatsMerger": "ppokit.distributed.stats",
}

__all__ = [
    "GAE",
    "MLP",
    "ActorCriticOperator",
    "ActorValueOperator",
    "Categorical",
    "CheckpointError",
    "ClipPPOLoss",
    "FusedPPOUpdate",
    "GRUModule",
    "GymVecEnv",
    "IndependentBernoulli",
    "IndependentNormal",
    "KLPENPPOLoss",
    "LSTMModule",
    "MaskedBernoulli",
    "MaskedCategorical",
    "MultiAgentGAE",
    "NatureCNN",
    "NetworkInputError",
    "NormalParamExtractor",
    "ObservationNormalizer",
    "OneHotCategorical",
    "PPOLoss",
    "PPOTrainer",
    "PolicyState",
    "ProbabilisticActor",
    "RewardScaler",
    "RolloutCollector",
    "RunningMeanStd",
    "RunningStatsMerger",
    "StructuredVecEnv",
    "TD0Estimate",
    "TD1Estimate",
    "TDLambdaEstimate",
    "TanhNormal",
    "TrainConfig",
    "VTrace",
    "ValueEstimators",
    "ValueOperator",
    "World",
    "build_actor_critic",
    "build_cnn_actor_critic",
    "build_structured_actor_critic",
    "compile_loss",
    "evaluate_policy",
    "generalized_advantage_estimate",
    "global_mean_weight",
    "global_moments",
    "global_standardize",
    "init_distributed",
    "load_checkpoint",
    "load_policy",
    "multi_agent_generalized_advantage_estimate",
    "open_env",
    "ppo_objective",
    "preset_config",
    "rank_seed",
    "save_checkpoint",
    "set_recurrent_mode",
    "shutdown_distributed",
    "td0_return_estimate",
    "td1_return_estimate",
    "td_lambda_return_estimate",
    "unwrap_ddp",
    "vtrace_advantage_estimate",
    "wrap_ddp",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ppokit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next lookup is a plain attribute access
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
