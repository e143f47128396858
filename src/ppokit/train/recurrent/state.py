"""The hidden state a recurrent policy carries from step to step while acting.

:class:`PolicyState` holds, per environment, the state of every recurrent core of the given
modules (ppokit's :class:`~ppokit.modules.recurrent.LSTMModule`/``GRUModule``) and the
``is_init`` flags. Each step it fills a step TensorDict with them, and after the step takes the
state the cores wrote under ``("next", key)``, zeroed where the episode ended (so the next step
starts it afresh, with ``is_init`` True). The collector, the evaluation and a user's own loop
with a policy from :func:`~ppokit.train.deploy.policy.load_policy` all carry it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from torch import nn

from ppokit.modules.recurrent import recurrent_modules

__all__ = ["PolicyState"]


class PolicyState:
    """Per-env recurrent state of ``modules``' cores, carried across steps.

    Args:
        modules: the TensorDict modules run at each step (the actor; also a critic whose
            core is its own, so its state follows the same episodes).

    Keyword Args:
        batch: the number of environments ``N``.

    Example:
        >>> from tensordict import TensorDict
        >>> from ppokit.modules.recurrent import GRUModule
        >>> core = GRUModule(3, 4, in_key="observation", out_key="y")
        >>> state = PolicyState.for_modules(core, batch=2)
        >>> td = state.fill(TensorDict({"observation": torch.randn(2, 3)}, [2]))
        >>> state.advance(core(td), np.array([True, False]))
        >>> state.is_init.flatten().tolist(), bool(state.states["recurrent_state"][0].abs().sum())
        ([True, False], False)
    """

    def __init__(self, *modules: nn.Module, batch: int) -> None:
        self.cores = list(recurrent_modules(*modules))
        if not self.cores:
            raise ValueError("PolicyState needs at least one ppokit LSTMModule/GRUModule.")
        keys = [k for core in self.cores for k in core.state_keys]
        if len(set(keys)) != len(keys):
            raise ValueError(
                f"Two recurrent cores share the state keys {keys}: give each its own keys "
                "(e.g. h_key='critic_recurrent_state_h') so one does not overwrite the other."
            )
        self.batch = batch
        self.states: dict[str, torch.Tensor] = {}
        self.is_init = torch.ones(batch, 1, dtype=torch.bool)
        #: the latest filled step TensorDict (where the cores wrote the next state)
        self.step_td: TensorDictBase | None = None
        self.reset()

    @classmethod
    def for_modules(cls, *modules: nn.Module, batch: int) -> PolicyState | None:
        """The state of ``modules``' recurrent cores, or ``None`` when they have none."""
        if not any(True for _ in recurrent_modules(*modules)):
            return None
        return cls(*modules, batch=batch)

    @property
    def keys(self) -> list[str]:
        """The state keys of all cores, in order."""
        return list(self.states)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """``{key: (num_layers, hidden)}`` of each state (per env)."""
        return {k: tuple(v.shape[1:]) for k, v in self.states.items()}

    def reset(self) -> None:
        """Every env starts a new episode: zero states, ``is_init`` True."""
        self.states = {}
        for core in self.cores:
            self.states.update(core.initial_state(self.batch))
        self.is_init.fill_(True)

    def fill(self, td: TensorDictBase) -> TensorDictBase:
        """Write ``is_init [N, 1]`` and the states ``[N, L, H]`` into the step ``td``."""
        td.set("is_init", self.is_init.clone())
        for key, value in self.states.items():
            td.set(key, value)
        self.step_td = td
        return td

    def advance(
        self, td: TensorDictBase | Mapping[Any, torch.Tensor], done: np.ndarray | torch.Tensor
    ) -> None:
        """Take the states the cores wrote under ``("next", key)`` in ``td`` (a TensorDict or
        a dict of tensors); where ``done [N]`` the next step starts a new episode (state
        zeroed, ``is_init`` True)."""
        done_t = torch.as_tensor(np.asarray(done) if not isinstance(done, torch.Tensor) else done)
        done_t = done_t.reshape(self.batch, 1).bool()
        keep = (~done_t).to(torch.float32)[:, :, None]
        for key in self.states:
            nxt = td.get(("next", key), None)
            if nxt is None:
                raise KeyError(
                    f"The policy did not write ('next', {key!r}): run the recurrent core "
                    "in step mode (outside set_recurrent_mode(True)) on the filled TensorDict."
                )
            self.states[key] = nxt.detach() * keep
        self.is_init = done_t.clone()
