"""LSTM and GRU TensorDict modules with TorchRL's state keys, in a step and a sequence mode.

Key layout (that of TorchRL's ``LSTMModule``/``GRUModule``, so data collected for one runs the
other):

- input ``in_key [*B, F]`` (step) or ``[*B, T, F]`` (sequence);
- ``"is_init" [*B, 1]`` / ``[*B, T, 1]`` bool: True at the first step of an episode, where
  the incoming state is replaced by zeros;
- the incoming state ``"recurrent_state_h"``/``"recurrent_state_c"`` (LSTM) or
  ``"recurrent_state"`` (GRU), each ``[*B, num_layers, hidden]`` (``[*B, T, L, H]`` in a
  sequence, where only the first step's state is read);
- outputs ``out_key [*B, H]`` (or ``[*B, T, H]``) and, in step mode, the state after the step
  under ``("next", <state key>)``, which the caller carries to the next step.

Step mode is the default. :class:`set_recurrent_mode` switches every ppokit recurrent module to
sequence mode inside a ``with`` block (a loss or an advantage estimator re-running stored
sequences). Unlike TorchRL, a missing state or ``is_init`` is an error, never a silent zero
state (pytorch/rl #4220: a missing primer dropped the memory without a word).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import TracebackType

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn

__all__ = [
    "GRUModule",
    "LSTMModule",
    "RecurrentModuleBase",
    "recurrent_mode",
    "recurrent_modules",
    "set_recurrent_mode",
]

_MODE = threading.local()


def recurrent_mode() -> bool | None:
    """The mode set by the innermost :class:`set_recurrent_mode` (None outside any)."""
    return getattr(_MODE, "value", None)


class set_recurrent_mode:  # noqa: N801 (a context manager, named like torch.no_grad)
    """Run ppokit's recurrent modules in sequence mode (``True``) or step mode inside a block.

    Example:
        >>> with set_recurrent_mode(True):
        ...     recurrent_mode()
        True
        >>> recurrent_mode() is None
        True
    """

    def __init__(self, mode: bool = True) -> None:
        self.mode = bool(mode)
        self._prev: bool | None = None

    def __enter__(self) -> set_recurrent_mode:
        self._prev = recurrent_mode()
        _MODE.value = self.mode
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _MODE.value = self._prev


class RecurrentModuleBase(TensorDictModuleBase):
    """What LSTM and GRU modules share: key handling, the two modes, the reset logic.

    Subclasses set ``self.rnn`` (a ``batch_first`` ``nn.LSTM``/``nn.GRU``) and
    ``state_keys`` and convert between the module's state tuple and torch's.
    """

    rnn: nn.RNNBase
    state_keys: tuple[str, ...]

    def __init__(
        self, *, in_key: NestedKey, out_key: NestedKey, default_recurrent_mode: bool
    ) -> None:
        super().__init__()
        self.in_key, self.out_key = in_key, out_key
        self.default_recurrent_mode = default_recurrent_mode
        self.in_keys = [in_key, *self.state_keys, "is_init"]
        self.out_keys = [out_key, *(("next", k) for k in self.state_keys)]

    @property
    def recurrent_mode(self) -> bool:
        """True: sequence mode (``[*B, T]`` input); False: one step."""
        mode = recurrent_mode()
        return self.default_recurrent_mode if mode is None else mode

    @property
    def num_layers(self) -> int:
        return int(self.rnn.num_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.rnn.hidden_size)

    def initial_state(
        self, *batch: int, device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]:
        """Zero states ``{key: [*batch, num_layers, hidden]}`` to start episodes from.

        Example:
            >>> m = GRUModule(3, 8, in_key="x", out_key="y")
            >>> {k: tuple(v.shape) for k, v in m.initial_state(4).items()}
            {'recurrent_state': (4, 1, 8)}
        """
        shape = (*batch, self.num_layers, self.hidden_size)
        return {k: torch.zeros(shape, device=device) for k in self.state_keys}

    # ------------------------------------------------------------------ reading inputs
    def _read(self, td: TensorDictBase, key: NestedKey, what: str) -> torch.Tensor:
        value = td.get(key, None)
        if value is None:
            raise KeyError(
                f"{type(self).__name__} needs {key!r} ({what}) in its input; it has "
                f"{sorted(map(str, td.keys(True, True)))}. Store the state the previous step "
                "wrote under ('next', key) and 'is_init' (True where an episode starts); "
                "`module.initial_state(batch)` gives the zero state of a fresh episode. "
                "A missing state is never replaced by zeros silently."
            )
        return value

    def _inputs(self, td: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        x = self._read(td, self.in_key, "the input features")
        is_init = self._read(td, "is_init", "the episode-start flags")
        states = [self._read(td, k, "the recurrent state") for k in self.state_keys]
        return x, is_init, states

    def _check_state(self, state: torch.Tensor, batch: torch.Size, key: str) -> None:
        expected = (*batch, self.num_layers, self.hidden_size)
        if tuple(state.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}: {key!r} has shape {tuple(state.shape)}, expected "
                f"{expected} ([*batch, num_layers, hidden_size])."
            )

    # ------------------------------------------------------------------ the two modes
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self.recurrent_mode:
            return self._sequence(tensordict)
        return self._step(tensordict)

    def _step(self, td: TensorDictBase) -> TensorDictBase:
        x, is_init, states = self._inputs(td)
        batch = x.shape[:-1]
        for key, s in zip(self.state_keys, states):
            self._check_state(s, batch, key)
        keep = ~is_init.reshape(-1).bool()  # [N]
        # torch's layout: [num_layers, N, H]; a new episode starts from zeros
        hx = [(s.reshape(-1, *s.shape[-2:]) * keep[:, None, None]).transpose(0, 1) for s in states]
        y, out = self.rnn(x.reshape(-1, 1, x.shape[-1]), self._to_torch(hx))
        td.set(self.out_key, y.reshape(*batch, y.shape[-1]))
        for key, s in zip(self.state_keys, self._from_torch(out)):
            td.set(("next", key), s.transpose(0, 1).reshape(*batch, s.shape[0], s.shape[-1]))
        return td

    def _sequence(self, td: TensorDictBase) -> TensorDictBase:
        x, is_init, states = self._inputs(td)
        if x.ndim < 3:
            raise ValueError(
                f"{type(self).__name__} in sequence mode expects {self.in_key!r} as "
                f"[*B, T, features], got {tuple(x.shape)}. Outside set_recurrent_mode(True) "
                "it runs one step."
            )
        lead, steps = x.shape[:-2], x.shape[-2]
        for key, s in zip(self.state_keys, states):
            self._check_state(s, x.shape[:-1], key)
        xs = x.reshape(-1, steps, x.shape[-1])  # [B, T, F]
        reset = is_init.reshape(-1, steps).bool()  # [B, T]
        hx = [s.reshape(-1, steps, *s.shape[-2:])[:, 0].transpose(0, 1) for s in states]
        ys = []
        # Run uninterrupted stretches in one call; split only at the times where some row's
        # episode starts, zeroing those rows' state there (as the step mode would).
        cuts = (torch.nonzero(reset[:, 1:].any(0)).flatten() + 1).tolist()
        for start, end in zip([0, *cuts], [*cuts, steps]):
            keep = (~reset[:, start]).to(xs.dtype)[None, :, None]
            hx = [h * keep for h in hx]
            y, out = self.rnn(xs[:, start:end], self._to_torch(hx))
            hx = self._from_torch(out)
            ys.append(y)
        y = torch.cat(ys, 1)
        td.set(self.out_key, y.reshape(*lead, steps, y.shape[-1]))
        return td

    def _to_torch(self, hx: list[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _from_torch(self, out: torch.Tensor | tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.rnn!r}, in_key={self.in_key!r}, out_key={self.out_key!r}"


class LSTMModule(RecurrentModuleBase):
    """An ``nn.LSTM`` as a TensorDict module with TorchRL's ``LSTMModule`` keys.

    Args:
        input_size: features of ``in_key``.
        hidden_size: LSTM hidden size ``H``.

    Keyword Args:
        in_key: the input features ``[*B, F]`` (``[*B, T, F]`` in sequence mode).
        out_key: where ``[*B, H]`` (``[*B, T, H]``) goes.
        num_layers: stacked LSTM layers ``L``.
        h_key, c_key: the state keys (``[*B, L, H]`` each).
        default_recurrent_mode: the mode outside :class:`set_recurrent_mode`.

    Example:
        >>> from tensordict import TensorDict
        >>> lstm = LSTMModule(3, 8, in_key="x", out_key="y")
        >>> td = TensorDict({"x": torch.randn(4, 3), "is_init": torch.ones(4, 1, dtype=torch.bool),
        ...                  **lstm.initial_state(4)}, [4])
        >>> td = lstm(td)
        >>> td["y"].shape, td["next", "recurrent_state_c"].shape
        (torch.Size([4, 8]), torch.Size([4, 1, 8]))
    """

    rnn: nn.LSTM

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        in_key: NestedKey = "embed",
        out_key: NestedKey = "features",
        num_layers: int = 1,
        h_key: str = "recurrent_state_h",
        c_key: str = "recurrent_state_c",
        default_recurrent_mode: bool = False,
    ) -> None:
        self.state_keys = (h_key, c_key)
        super().__init__(
            in_key=in_key, out_key=out_key, default_recurrent_mode=default_recurrent_mode
        )
        self.rnn = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)

    def _to_torch(self, hx: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return (hx[0].contiguous(), hx[1].contiguous())

    def _from_torch(self, out: torch.Tensor | tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return list(out)


class GRUModule(RecurrentModuleBase):
    """An ``nn.GRU`` as a TensorDict module with TorchRL's ``GRUModule`` keys.

    Args:
        input_size: features of ``in_key``.
        hidden_size: GRU hidden size ``H``.

    Keyword Args:
        in_key: the input features ``[*B, F]`` (``[*B, T, F]`` in sequence mode).
        out_key: where ``[*B, H]`` (``[*B, T, H]``) goes.
        num_layers: stacked GRU layers ``L``.
        state_key: the state key (``[*B, L, H]``).
        default_recurrent_mode: the mode outside :class:`set_recurrent_mode`.

    Example:
        >>> from tensordict import TensorDict
        >>> gru = GRUModule(3, 8, in_key="x", out_key="y")
        >>> td = TensorDict({"x": torch.randn(2, 5, 3),
        ...                  "is_init": torch.zeros(2, 5, 1, dtype=torch.bool),
        ...                  **gru.initial_state(2, 5)}, [2, 5])
        >>> with set_recurrent_mode(True):
        ...     gru(td)["y"].shape
        torch.Size([2, 5, 8])
    """

    rnn: nn.GRU

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        in_key: NestedKey = "embed",
        out_key: NestedKey = "features",
        num_layers: int = 1,
        state_key: str = "recurrent_state",
        default_recurrent_mode: bool = False,
    ) -> None:
        self.state_keys = (state_key,)
        super().__init__(
            in_key=in_key, out_key=out_key, default_recurrent_mode=default_recurrent_mode
        )
        self.rnn = nn.GRU(input_size, hidden_size, num_layers=num_layers, batch_first=True)

    def _to_torch(self, hx: list[torch.Tensor]) -> torch.Tensor:
        return hx[0].contiguous()

    def _from_torch(self, out: torch.Tensor | tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        assert isinstance(out, torch.Tensor)  # nn.GRU returns one state tensor
        return [out]


def recurrent_modules(*modules: nn.Module) -> Iterator[RecurrentModuleBase]:
    """The ppokit recurrent modules inside ``modules``, each once, in order.

    Example:
        >>> core = GRUModule(3, 4)
        >>> len(list(recurrent_modules(nn.Sequential(core), core)))
        1
    """
    seen: set[int] = set()
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, RecurrentModuleBase) and id(sub) not in seen:
                seen.add(id(sub))
                yield sub
