"""Run ``tensordict.nn`` actors and critics on plain tensors: the loss's direct path.

This module reads private attributes of tensordict and torch (``TensorDictModule._kwargs``,
``TensorDictParams._param_td``, ``nn.Module._forward_hooks``, torch's global hook tables),
so it is used only with the tensordict releases it was checked against
(see :func:`ppokit.internals.versions.direct_path_supported`); with any other release
every plan is ``None`` and the losses run through tensordict. The choice is visible as
``loss.execution_path`` (``"direct"`` or ``"tensordict"``) and logged at DEBUG level by
``ppokit.objectives`` whenever it changes.

A ``TensorDictModule`` call reads its inputs from a TensorDict, calls the wrapped
``nn.Module`` and writes every output back through ``TensorDict.set`` (which in tensordict
0.14 also probes the import system for pandas on each tensor written). For a PPO minibatch
of 64 that bookkeeping costs as much as the networks themselves. The common actor and
critic are nothing but a chain of such modules ending in a distribution; for those,
:class:`ModulePlan` calls the wrapped networks directly on tensors kept in a dict, and
builds the distribution with the module's own ``get_dist``. The numbers are the very same
(the same ``nn.Module`` calls on the same tensors).

A plan is only made for the structures whose semantics it reproduces: ``TensorDictModule``
(and subclasses that keep its ``forward``, such as ``ValueOperator``) without ``method``,
keyword inputs or selected outputs; ``TensorDictSequential``\\ s of those; and
``ProbabilisticTensorDictSequential`` ending in one ``ProbabilisticTensorDictModule``.
A composite distribution's parameter sub-tree (``in_keys=["params"]``) is gathered from
what the steps wrote into one TensorDict, as tensordict's writes would have left it.
Anything else (hooks on the wrappers, ``set_skip_existing``, custom ``forward`` methods,
a wrapper whose network was swapped) runs through tensordict as before, so the fast path
is never less general than the slow one.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import (
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictSequential,
    set_interaction_type,
    skip_existing,
)
from tensordict.nn.probabilistic import interaction_type
from tensordict.utils import NestedKey
from torch import distributions as D
from torch import nn
from torch.nn.modules import module as _nn_module

from ppokit.internals.versions import direct_path_supported

__all__ = ["ModulePlan", "TensorReader"]

_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def _global_hooks_present() -> bool:
    return any(getattr(_nn_module, name, None) for name in _GLOBAL_HOOKS)


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


class TensorReader:
    """Tensors written by planned modules over the tensors of a TensorDict (or another reader).

    Behaves as the TensorDict would after the modules had written into it; the minimal
    ``get``/``keys`` interface is what ``ProbabilisticTensorDictModule.get_dist`` uses.

    Args:
        env: key -> tensor written by the modules run on this reader; never detached.
        source: what lies below: the input TensorDict, or the reader of an earlier network.
        detach: hand out the tensors of ``source`` detached (a critic under
            ``separate_losses`` sees the data and the actor's outputs without gradient, but
            its own outputs with it).
    """

    __slots__ = ("detach", "env", "source")

    def __init__(
        self, env: MutableMapping[NestedKey, Any], source: Any, *, detach: bool = False
    ) -> None:
        self.env, self.source, self.detach = env, source, detach

    def get(self, key: NestedKey, default: Any = None) -> Any:
        value = self.env.get(key)
        if value is not None:
            return value
        value = self.source.get(key, None)
        if value is None:
            return default
        if isinstance(self.source, TensorDictBase) and not isinstance(value, torch.Tensor):
            # non-tensor entries are handed over as their payload, as tensordict does
            value = self.source._get_tuple_maybe_non_tensor(
                key if isinstance(key, tuple) else (key,), default
            )
        if self.detach and isinstance(value, torch.Tensor) and value.requires_grad:
            value = value.detach()
        return value

    def keys(self) -> Iterator[NestedKey]:
        yield from self.env
        below = (
            self.source.keys(True, True)
            if isinstance(self.source, TensorDictBase)
            else self.source.keys()
        )
        yield from (k for k in below if k not in self.env)


def _tuple_key(key: NestedKey) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else tuple(key)


class _Step:
    __slots__ = ("in_keys", "net", "out_keys", "strict", "wrapper")

    def __init__(self, wrapper: TensorDictModule) -> None:
        self.wrapper = wrapper
        self.net = wrapper.module
        self.in_keys = tuple(wrapper.in_keys)
        self.out_keys = tuple(wrapper.out_keys)
        self.strict = bool(getattr(wrapper, "strict", False))


def _plain_td_module(module: nn.Module) -> bool:
    if not isinstance(module, TensorDictModule) or isinstance(
        module, ProbabilisticTensorDictModule
    ):
        return False
    return (
        type(module).forward is TensorDictModule.forward
        and type(module).__call__ is TensorDictModule.__call__
        and module.method is None
        and not module.method_kwargs
        and module._kwargs is None
        and not module._get_kwargs
        and module.inplace is True
        and list(module.out_keys) == list(module.out_keys_source)
        and isinstance(module.module, nn.Module)
    )


def _plain_sequence(module: nn.Module) -> bool:
    return (
        type(module).forward is TensorDictSequential.forward
        and type(module).__call__ is TensorDictSequential.__call__
        and isinstance(module.module, nn.ModuleList)
        and not module.partial_tolerant
        and not module._select_before_return
        and getattr(module, "inplace", None) is True
    )


def _flatten(module: nn.Module, steps: list[_Step], wrappers: list[nn.Module]) -> bool:
    """Append the steps of ``module``; False if it is not a plain chain of modules."""
    if _plain_td_module(module):
        steps.append(_Step(module))
        wrappers.append(module)
        return True
    if (
        isinstance(module, TensorDictSequential)
        and not isinstance(module, ProbabilisticTensorDictSequential)
        and _plain_sequence(module)
    ):
        wrappers.append(module)
        return all(_flatten(m, steps, wrappers) for m in module.module)
    return False


class ModulePlan:
    """A chain of ``TensorDictModule`` calls (and, for an actor, its distribution).

    Build one with :meth:`for_actor` / :meth:`for_critic`, which return ``None`` for
    structures the plan cannot reproduce; check :meth:`usable` before each call (hooks or a
    ``set_skip_existing`` context may have appeared since).

    Example:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> critic = TensorDictModule(nn.Linear(3, 1), ["observation"], ["state_value"])
        >>> plan = ModulePlan.for_critic(critic)
        >>> td = TensorDict(observation=torch.ones(2, 3), batch_size=[2])
        >>> env = plan.run(TensorReader({}, td), td.batch_size)
        >>> torch.equal(env["state_value"], critic(td)["state_value"])
        True
    """

    def __init__(
        self,
        steps: list[_Step],
        wrappers: list[nn.Module],
        dist_module: ProbabilisticTensorDictModule | None = None,
        default_interaction: Any = None,
    ) -> None:
        self.steps = steps
        self.wrappers = wrappers
        self.dist_module = dist_module
        self.default_interaction = default_interaction
        # a sub-tree in_key of the distribution, such as a composite distribution's
        # "params": (key, [(written key, its path below key)]), gathered into a TensorDict
        # after the steps, as tensordict's modules would have written it
        written = [k for step in steps for k in step.out_keys if k != "_"]
        self.subtrees: list[tuple[NestedKey, list[tuple[NestedKey, tuple[str, ...]]]]] = []
        for key in dist_module.in_keys if dist_module is not None else ():
            n = len(_tuple_key(key))
            below = [
                (w, _tuple_key(w)[n:])
                for w in written
                if len(_tuple_key(w)) > n and _tuple_key(w)[:n] == _tuple_key(key)
            ]
            if below:
                self.subtrees.append((key, below))

    @classmethod
    def for_critic(cls, critic: nn.Module) -> ModulePlan | None:
        """The plan of a critic, or ``None`` when the direct path cannot reproduce it."""
        if not direct_path_supported():
            return None
        steps: list[_Step] = []
        wrappers: list[nn.Module] = []
        if not _flatten(critic, steps, wrappers) or not steps:
            return None
        return cls(steps, wrappers)

    @classmethod
    def for_actor(cls, actor: nn.Module) -> ModulePlan | None:
        """The plan of a probabilistic actor, or ``None`` (see :meth:`for_critic`)."""
        if not direct_path_supported() or not isinstance(actor, ProbabilisticTensorDictSequential):
            return None
        seq_type = type(actor)
        if (
            seq_type.get_dist is not ProbabilisticTensorDictSequential.get_dist
            or seq_type.get_dist_params is not ProbabilisticTensorDictSequential.get_dist_params
            or seq_type.build_dist_from_params
            is not ProbabilisticTensorDictSequential.build_dist_from_params
            or actor.return_composite
            or not isinstance(actor.module, nn.ModuleList)
            or len(actor.module) < 2
        ):
            return None
        *det, last = list(actor.module)
        if not isinstance(last, ProbabilisticTensorDictModule) or (
            type(last).get_dist is not ProbabilisticTensorDictModule.get_dist
        ):
            return None
        steps: list[_Step] = []
        wrappers: list[nn.Module] = [actor, last]
        if not all(_flatten(m, steps, wrappers) for m in det):
            return None
        # get_dist builds from the LAST probabilistic module anywhere in the tree: make sure
        # that is ``last`` (the det part holds none, as _flatten accepted only plain modules).
        default = getattr(last, "default_interaction_type", None)
        if default is None:
            return None
        return cls(steps, wrappers, last, default)

    def interaction(self) -> Any:
        """The interaction type the deterministic part runs under (as in tensordict)."""
        current = interaction_type()
        return self.default_interaction if current is None else current

    def external_keys(self, produced: set | None = None) -> list[NestedKey]:
        """Keys the plan reads that none of its steps (nor ``produced``) writes, in order."""
        produced = set(produced or ())
        needed: list[NestedKey] = []
        for step in self.steps:
            needed += [k for k in step.in_keys if k not in produced and k not in needed]
            produced.update(step.out_keys)
        if self.dist_module is not None:
            needed += [k for k in self.dist_module.in_keys if k not in produced and k not in needed]
        return needed

    def written_keys(self) -> set:
        """Keys the plan's steps write."""
        return {k for step in self.steps for k in step.out_keys}

    def usable(self) -> bool:
        """False when something the plan does not reproduce is active."""
        if skip_existing() or _global_hooks_present():
            return False
        for wrapper in self.wrappers:
            if _has_hooks(wrapper):
                return False
        return all(step.wrapper.module is step.net for step in self.steps)

    def run(self, reader: TensorReader, batch: torch.Size) -> MutableMapping[NestedKey, Any]:
        """Run the steps, writing every output into ``reader.env``; returns that dict."""
        env = reader.env
        n = len(batch)
        for step in self.steps:
            inputs = []
            for key in step.in_keys:
                value = reader.get(key)
                if value is None and step.strict:
                    raise KeyError(
                        f"{type(step.wrapper).__name__} reads {key!r}, which the input "
                        "TensorDict does not have."
                    )
                inputs.append(value)
            out = step.net(*inputs)
            if isinstance(out, (dict, TensorDictBase)) and all(k in out for k in step.out_keys):
                out = tuple(out.get(k) for k in step.out_keys)
            elif not isinstance(out, tuple):
                out = (out,) if out is not None else ()
            if len(out) != len(step.out_keys):
                raise RuntimeError(
                    f"{type(step.wrapper).__name__} declares out_keys {list(step.out_keys)} "
                    f"but its module returned {len(out)} value(s)."
                )
            for key, value in zip(step.out_keys, out):
                if key == "_":
                    continue
                if not isinstance(value, torch.Tensor):
                    value = TensorDict.from_any(value)
                if value.shape[:n] != batch:
                    raise ValueError(
                        f"{type(step.wrapper).__name__} wrote {key!r} with shape "
                        f"{tuple(value.shape)}, which does not start with the batch shape "
                        f"{tuple(batch)}."
                    )
                env[key] = value
        for key, below in self.subtrees:
            tree = TensorDict({}, batch_size=batch)
            for written, path in below:
                tree.set(path, env[written])
            env[key] = tree
        return env

    def get_dist(
        self, reader: TensorReader, batch: torch.Size, *, set_interaction: bool = True
    ) -> D.Distribution:
        """Run the deterministic part and build the actor's distribution.

        ``set_interaction=False`` leaves the interaction type alone (the caller has set it,
        as :meth:`interaction` says, outside a traced region).
        """
        if set_interaction and interaction_type() is None:
            # as ProbabilisticTensorDictSequential.get_dist_params: the det part runs under
            # the sampler's default interaction type when none is set
            with set_interaction_type(self.default_interaction):
                self.run(reader, batch)
        else:
            self.run(reader, batch)
        return self.build_dist(reader)

    def build_dist(self, reader: TensorReader) -> D.Distribution:
        """The actor's distribution from the parameters ``reader`` holds (no network runs;
        e.g. the behaviour policy from the parameters stored with the data)."""
        if self.dist_module is None:
            raise TypeError("build_dist() needs an actor's plan (ModulePlan.for_actor).")
        return self.dist_module.get_dist(reader)
