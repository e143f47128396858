"""Policy and value operators: thin ``tensordict.nn`` layers that read and write TensorDict keys.

They are ``tensordict.nn`` modules (``ProbabilisticTensorDictSequential``, ``TensorDictModule``,
``TensorDictSequential``), so ppokit's and TorchRL's operators are interchangeable: TorchRL's
``ClipPPOLoss`` accepts these, and ppokit's loss accepts TorchRL's. The default keys follow TorchRL:
``observation`` in, ``action`` / ``action_log_prob`` / ``state_value`` out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictModuleBase,
    TensorDictSequential,
)
from tensordict.utils import NestedKey
from torch import nn

__all__ = [
    "ActorCriticOperator",
    "ActorValueOperator",
    "ProbabilisticActor",
    "ValueOperator",
]

Keys: TypeAlias = NestedKey | Sequence[NestedKey]


def _key_list(name: str, keys: Keys) -> list[NestedKey]:
    if isinstance(keys, (str, tuple)):
        keys = [keys]
    keys = list(keys)
    if not keys:
        raise ValueError(f"{name} must name at least one key, got an empty list.")
    for key in keys:
        if not (
            isinstance(key, str)
            or (isinstance(key, tuple) and key and all(isinstance(k, str) for k in key))
        ):
            raise TypeError(
                f"{name} must hold strings or tuples of strings (nested keys), got {key!r}."
            )
    return keys


def _log_prob_key_for(sample_key: NestedKey) -> NestedKey:
    # "action" -> "action_log_prob"; ("agent", "action") -> ("agent", "action_log_prob"),
    # which is what tensordict derives when composite_lp_aggregate() is False (its default).
    if isinstance(sample_key, str):
        return sample_key + "_log_prob"
    return (*sample_key[:-1], sample_key[-1] + "_log_prob")


class ProbabilisticActor(ProbabilisticTensorDictSequential):
    """A stochastic policy: a network that writes distribution parameters, then a sampler.

    It is ``ProbabilisticTensorDictSequential(TensorDictModule(module, ...),
    ProbabilisticTensorDictModule(...))``; ``actor(td)`` writes the parameters, the action and,
    with ``return_log_prob=True``, its log-prob; ``actor.get_dist(td)`` returns the distribution.
    ``actor.dist_sample_keys`` / ``actor.log_prob_keys`` name the action and log-prob keys; a PPO
    loss reads them from there.

    Two call forms, one per kind of ``module``:

    - plain ``nn.Module``: ``in_keys`` are the keys it reads (e.g. ``["observation"]``),
      ``out_keys`` the keys it writes, which are the distribution's parameters (default:
      ``distribution_class.param_keys``, e.g. ``["loc", "scale"]``). The action is written to
      ``"action"``.
    - ``TensorDictModule`` (TorchRL's form): the network's keys come from it. ``in_keys``
      optionally names the distribution parameters among its outputs (a list, or a dict
      ``{distribution kwarg: key}``; default: all its out_keys); ``out_keys`` optionally names the
      action key (default ``"action"``).

    Args:
        module: the network (see above).
        in_keys: see above.
        out_keys: see above.
        distribution_class: a callable building a ``torch.distributions.Distribution`` from
            keyword parameters, e.g. ``TanhNormal``, ``Categorical`` (ppokit's or TorchRL's).
        distribution_kwargs: extra keyword arguments for it (e.g. ``{"low": -2.0, "high": 2.0}``).
        return_log_prob: also write the log-prob of the sampled action, ``[*B]``.
        log_prob_key: where to write it; default ``"<action key>_log_prob"``
            (``"action_log_prob"``).
        default_interaction_type: how to act when no ``set_interaction_type`` context is active:
            ``RANDOM`` samples (training); ``DETERMINISTIC`` uses the distribution's
            ``deterministic_sample``. (TorchRL's default is ``DETERMINISTIC``.)
        spec: the action spec, stored as ``.spec`` for API compatibility with TorchRL; ppokit does
            not read it (pass action bounds through ``distribution_kwargs``).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from ppokit.modules.distributions import NormalParamExtractor, TanhNormal
        >>> net = nn.Sequential(nn.Linear(3, 4), NormalParamExtractor())
        >>> actor = ProbabilisticActor(net, in_keys=["observation"], distribution_class=TanhNormal,
        ...                            return_log_prob=True)
        >>> td = actor(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))
        >>> td["action"].shape, td["action_log_prob"].shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        in_keys: Keys | Mapping[str, NestedKey] | None = None,
        out_keys: Keys | None = None,
        distribution_class: Callable[..., Any],
        distribution_kwargs: Mapping[str, Any] | None = None,
        return_log_prob: bool = False,
        log_prob_key: NestedKey | None = None,
        default_interaction_type: InteractionType = InteractionType.RANDOM,
        spec: Any = None,
    ) -> None:
        if not callable(distribution_class):
            raise TypeError(
                "ProbabilisticActor: distribution_class must be a Distribution class (or a "
                f"callable returning one), got {distribution_class!r}."
            )
        if distribution_kwargs is not None and not isinstance(distribution_kwargs, Mapping):
            raise TypeError(
                "ProbabilisticActor: distribution_kwargs must be a dict, got "
                f"{type(distribution_kwargs).__name__}."
            )
        if isinstance(module, TensorDictModuleBase):
            net, dist_in_keys, action_key = self._from_td_module(module, in_keys, out_keys)
        elif isinstance(module, nn.Module):
            net, dist_in_keys, action_key = self._from_plain_module(
                module, in_keys, out_keys, distribution_class
            )
        else:
            raise TypeError(
                f"ProbabilisticActor: module must be an nn.Module, got {type(module).__name__}."
            )
        sampler = ProbabilisticTensorDictModule(
            in_keys=dist_in_keys,
            out_keys=[action_key],
            distribution_class=distribution_class,
            distribution_kwargs=dict(distribution_kwargs or {}),
            return_log_prob=return_log_prob,
            log_prob_key=_log_prob_key_for(action_key) if log_prob_key is None else log_prob_key,
            default_interaction_type=InteractionType(default_interaction_type),
        )
        super().__init__(net, sampler)
        self.spec = spec

    @property
    def log_prob_key(self) -> NestedKey:
        """Key of the action's log-prob (``"action_log_prob"`` by default)."""
        # tensordict's ProbabilisticTensorDictSequential.log_prob_key reads attributes only the
        # sampler has; ask the sampler directly.
        return self.module[-1].log_prob_key

    @staticmethod
    def _from_td_module(
        module: TensorDictModuleBase,
        in_keys: Keys | Mapping[str, NestedKey] | None,
        out_keys: Keys | None,
    ) -> tuple[TensorDictModuleBase, list[NestedKey] | dict[str, NestedKey], NestedKey]:
        produced = list(module.out_keys)
        if in_keys is None:
            dist_in_keys: list[NestedKey] | dict[str, NestedKey] = produced
            wanted = produced
        elif isinstance(in_keys, Mapping):
            dist_in_keys = dict(in_keys)
            wanted = list(dist_in_keys.values())
        else:
            dist_in_keys = wanted = _key_list("in_keys", in_keys)
        missing = [k for k in wanted if k not in produced]
        if missing:
            raise KeyError(
                f"ProbabilisticActor: with a TensorDictModule, in_keys name the distribution "
                f"parameters the module writes; {missing} are not among its out_keys {produced}. "
                "Pass in_keys=None to use all of them."
            )
        action_keys = ["action"] if out_keys is None else _key_list("out_keys", out_keys)
        if len(action_keys) != 1:
            raise ValueError(
                f"ProbabilisticActor: out_keys must name one action key, got {action_keys}."
            )
        return module, dist_in_keys, action_keys[0]

    @staticmethod
    def _from_plain_module(
        module: nn.Module,
        in_keys: Keys | Mapping[str, NestedKey] | None,
        out_keys: Keys | None,
        distribution_class: Callable[..., Any],
    ) -> tuple[TensorDictModule, list[NestedKey], NestedKey]:
        if in_keys is None or isinstance(in_keys, Mapping):
            raise ValueError(
                "ProbabilisticActor: with a plain nn.Module, in_keys must list the keys the "
                f"module reads, e.g. in_keys=['observation']; got {in_keys!r}."
            )
        if out_keys is None:
            out_keys = getattr(distribution_class, "param_keys", None)
            if out_keys is not None:
                out_keys = list(out_keys)  # a tuple would read as one nested key
            else:
                raise ValueError(
                    "ProbabilisticActor: cannot tell which parameters "
                    f"{getattr(distribution_class, '__name__', distribution_class)} takes; pass "
                    "out_keys naming the module's outputs, e.g. out_keys=['loc', 'scale']."
                )
        param_keys = _key_list("out_keys", out_keys)
        net = TensorDictModule(module, in_keys=_key_list("in_keys", in_keys), out_keys=param_keys)
        return net, param_keys, "action"


class ValueOperator(TensorDictModule):
    """A value network as a TensorDict module: reads ``in_keys``, writes ``out_keys``.

    With the defaults it maps ``observation`` ``[*B, *obs]`` to ``state_value`` ``[*B, 1]``.

    Args:
        module: the network.
        in_keys: keys read (default ``("observation",)``).
        out_keys: keys written (default ``("state_value",)``).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> critic = ValueOperator(nn.Linear(3, 1))
        >>> critic(TensorDict(observation=torch.zeros(4, 3), batch_size=[4]))["state_value"].shape
        torch.Size([4, 1])
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        in_keys: Keys = ("observation",),
        out_keys: Keys = ("state_value",),
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"ValueOperator: module must be an nn.Module, got {type(module).__name__}."
            )
        super().__init__(
            module, in_keys=_key_list("in_keys", in_keys), out_keys=_key_list("out_keys", out_keys)
        )


class ActorValueOperator(TensorDictSequential):
    """A policy and a value head on a shared trunk: ``common -> policy`` and ``common -> value``.

    Calling it runs the trunk, the policy head (which samples an action) and the value head.
    ``get_policy_operator()`` and ``get_value_operator()`` return standalone operators that share
    the same submodules (hence parameters), to hand to a PPO loss:
    ``ClipPPOLoss(op.get_policy_operator(), op.get_value_operator())``.

    Args:
        common_operator: the trunk, e.g. ``TensorDictModule(mlp, ["observation"], ["hidden"])``.
        policy_operator: the policy head reading the trunk's output; a ``ProbabilisticActor``
            (or any ``ProbabilisticTensorDictSequential``/``ProbabilisticTensorDictModule``).
        value_operator: the value head, e.g. ``ValueOperator(net, in_keys=["hidden"])``.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from ppokit.modules.distributions import Categorical
        >>> trunk = TensorDictModule(nn.Linear(3, 8), in_keys=["observation"], out_keys=["hidden"])
        >>> policy = ProbabilisticActor(nn.Linear(8, 2), in_keys=["hidden"],
        ...                             distribution_class=Categorical)
        >>> value = ValueOperator(nn.Linear(8, 1), in_keys=["hidden"])
        >>> op = ActorValueOperator(trunk, policy, value)
        >>> td = op(TensorDict(observation=torch.zeros(4, 3), batch_size=[4]))
        >>> td["action"].shape, td["state_value"].shape
        (torch.Size([4]), torch.Size([4, 1]))
    """

    def __init__(
        self,
        common_operator: TensorDictModuleBase,
        policy_operator: TensorDictModuleBase,
        value_operator: TensorDictModuleBase,
    ) -> None:
        for name, op in (
            ("common_operator", common_operator),
            ("policy_operator", policy_operator),
            ("value_operator", value_operator),
        ):
            if not isinstance(op, TensorDictModuleBase):
                raise TypeError(
                    f"{type(self).__name__}: {name} must be a tensordict.nn module (e.g. "
                    f"TensorDictModule(net, in_keys=..., out_keys=...)), got {type(op).__name__}."
                )
        if not isinstance(
            policy_operator, (ProbabilisticTensorDictSequential, ProbabilisticTensorDictModule)
        ):
            raise TypeError(
                f"{type(self).__name__}: policy_operator must be probabilistic (a "
                f"ProbabilisticActor), got {type(policy_operator).__name__}."
            )
        super().__init__(common_operator, policy_operator, value_operator)

    def get_policy_operator(self) -> ProbabilisticTensorDictSequential:
        """``ProbabilisticTensorDictSequential(common, *policy head)``, sharing the modules."""
        head = self.module[1]
        parts = list(head.module) if isinstance(head, ProbabilisticTensorDictSequential) else [head]
        return ProbabilisticTensorDictSequential(self.module[0], *parts)

    def get_value_operator(self) -> TensorDictSequential:
        """``TensorDictSequential(common, value head)``, sharing the modules."""
        return TensorDictSequential(self.module[0], self.module[2])

    def get_policy_head(self) -> TensorDictModuleBase:
        """The policy head alone (reads the trunk's output)."""
        return self.module[1]

    def get_value_head(self) -> TensorDictModuleBase:
        """The value head alone (reads the trunk's output)."""
        return self.module[2]


class ActorCriticOperator(ActorValueOperator):
    """Same as :class:`ActorValueOperator`, under the name the ClipPPOLoss docs use.

    The value head is a state-value ``V(s)`` head, as in those docs. (TorchRL's class of this
    name is meant for ``Q(s, a)`` heads; here a head that also reads ``"action"`` works too,
    because the policy head runs before the value head.) ``get_critic_operator()`` is
    ``get_value_operator()``.

    Example:
        >>> import torch
        >>> from ppokit.modules.distributions import Categorical
        >>> trunk = TensorDictModule(nn.Linear(3, 8), in_keys=["observation"], out_keys=["hidden"])
        >>> op = ActorCriticOperator(
        ...     trunk,
        ...     ProbabilisticActor(
        ...         nn.Linear(8, 2), in_keys=["hidden"], distribution_class=Categorical
        ...     ),
        ...     ValueOperator(nn.Linear(8, 1), in_keys=["hidden"]),
        ... )
        >>> op.get_critic_operator().out_keys
        ['hidden', 'state_value']
    """

    def get_critic_operator(self) -> TensorDictSequential:
        """Alias of :meth:`get_value_operator`."""
        return self.get_value_operator()
