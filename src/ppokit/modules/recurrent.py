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
from typing import Any, cast

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn

__all__ = [
    "GRUModule",
    "LSTMModule",
    "RecurrentModuleBase",
    "ResettableRNN",
    "recurrent_mode",
    "recurrent_modules",
    "set_recurrent_mode",
]

_MODE = threading.local()


def recurrent_mode() -> bool | None:
    """The mode set by the innermost :class:`set_recurrent_mode` (None outside any)."""
    return getattr(_MODE, "value", None)


class set_recurrent_mode:
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


class ResettableRNN(nn.Module):
    """``nn.LSTM``/``nn.GRU`` over ``[B, T]`` sequences whose rows may restart mid-way.

    ``forward(x [B, T, F], state, reset [B, T] bool) -> (y [B, T, H], final state)``, the
    states in torch's layout (``[L, B, H]``; a pair for the LSTM). Where ``reset[b, t]`` the
    state entering step ``t`` of row ``b`` is replaced by zeros. One module call runs the
    whole sequence, so a ``DistributedDataParallel`` wrapper sees one forward per loss.

    Example:
        >>> core = ResettableRNN(nn.GRU(3, 4, batch_first=True))
        >>> reset = torch.zeros(2, 5, dtype=torch.bool)
        >>> y, h = core(torch.randn(2, 5, 3), torch.zeros(1, 2, 4), reset)
        >>> y.shape, h.shape
        (torch.Size([2, 5, 4]), torch.Size([1, 2, 4]))
    """

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        if not isinstance(rnn, (nn.LSTM, nn.GRU)) or not rnn.batch_first or rnn.bidirectional:
            raise TypeError(
                "ResettableRNN wraps a unidirectional nn.LSTM or nn.GRU built with "
                f"batch_first=True, got {rnn!r}."
            )
        self.rnn = rnn

    def forward(
        self, x: torch.Tensor, state: torch.Tensor | tuple[torch.Tensor, ...], reset: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, ...]]:
        steps = x.shape[1]
        # Run uninterrupted stretches in one call; split only at the times where some row's
        # episode starts, zeroing those rows' state there (as a step-by-step loop would).
        cuts = (torch.nonzero(reset[:, 1:].any(0)).flatten() + 1).tolist() if steps > 1 else []
        ys = []
        for start, end in zip([0, *cuts], [*cuts, steps]):
            keep = (~reset[:, start]).to(x.dtype)[None, :, None]
            state = tuple(s * keep for s in state) if isinstance(state, tuple) else state * keep
            y, state = self.rnn(x[:, start:end], state)
            ys.append(y)
        return (ys[0] if len(ys) == 1 else torch.cat(ys, 1)), state


class RecurrentModuleBase(TensorDictModule):
    """What LSTM and GRU modules share: key handling, the two modes, the state checks.

    ``self.module`` is a :class:`ResettableRNN` (a data-parallel launcher may wrap it);
    subclasses give the state keys.
    """

    state_keys: tuple[str, ...]

    def __init__(
        self,
        rnn: nn.RNNBase,
        *,
        in_key: NestedKey,
        out_key: NestedKey,
        state_keys: tuple[str, ...],
        default_recurrent_mode: bool,
    ) -> None:
        super().__init__(
            ResettableRNN(rnn),
            in_keys=[in_key, *state_keys, "is_init"],
            out_keys=[out_key, *(("next", k) for k in state_keys)],
        )
        self.state_keys = state_keys
        self.in_key, self.out_key = in_key, out_key
        self.default_recurrent_mode = default_recurrent_mode

    @property
    def rnn(self) -> nn.RNNBase:
        """The wrapped ``nn.LSTM``/``nn.GRU`` (through a data-parallel wrapper, if any)."""
        core: Any = self.module
        core = getattr(core, "module", core)  # DistributedDataParallel(core)
        return cast(nn.RNNBase, core.rnn)

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

    def forward(self, tensordict: TensorDictBase, *args: Any, **kwargs: Any) -> TensorDictBase:
        td = tensordict
        x = self._read(td, self.in_key, "the input features")
        is_init = self._read(td, "is_init", "the episode-start flags")
        states = [self._read(td, k, "the recurrent state") for k in self.state_keys]
        y, finals = self.run_tensors(x, is_init, states, sequence=self.recurrent_mode)
        td.set(self.out_key, y)
        for key, s in zip(self.state_keys, finals or ()):
            td.set(("next", key), s)
        return td

    def run_tensors(
        self,
        x: torch.Tensor,
        is_init: torch.Tensor,
        states: list[torch.Tensor],
        *,
        sequence: bool,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The module's computation on tensors (what :meth:`forward` reads and writes).

        Step: ``x [*B, F]``, ``is_init [*B, 1]``, states ``[*B, L, H]`` -> ``y [*B, H]`` and
        the next states. Sequence: ``x [*B, T, F]``, ``is_init [*B, T, 1]``, states
        ``[*B, T, L, H]`` (the first step's read) -> ``y [*B, T, H]`` and ``None`` (a
        sequence's intermediate states are not kept).
        """
        if sequence and x.ndim < 3:
            raise ValueError(
                f"{type(self).__name__} in sequence mode expects {self.in_key!r} as "
                f"[*B, T, features], got {tuple(x.shape)}. Outside set_recurrent_mode(True) "
                "it runs one step."
            )
        steps = x.shape[-2] if sequence else 1
        lead = x.shape[:-2] if sequence else x.shape[:-1]
        expected = (*x.shape[:-1], self.num_layers, self.hidden_size)
        for key, s in zip(self.state_keys, states):
            if tuple(s.shape) != expected:
                raise ValueError(
                    f"{type(self).__name__}: {key!r} has shape {tuple(s.shape)}, expected "
                    f"{expected} ([*batch, num_layers, hidden_size])."
                )
        # torch's layout [L, B, H]; a sequence starts from the state stored at its first step
        hx = [
            s.reshape(-1, steps, *s.shape[-2:])[:, 0].transpose(0, 1).contiguous() for s in states
        ]
        y, out = self.module(
            x.reshape(-1, steps, x.shape[-1]),
            hx[0] if len(hx) == 1 else tuple(hx),
            is_init.reshape(-1, steps).bool(),
        )
        y = y.reshape(*lead, *((steps,) if sequence else ()), y.shape[-1])
        if sequence:
            return y, None
        finals = out if isinstance(out, tuple) else (out,)
        return y, [s.transpose(0, 1).reshape(*lead, *s.shape[::2]) for s in finals]


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
        super().__init__(
            nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True),
            in_key=in_key,
            out_key=out_key,
            state_keys=(h_key, c_key),
            default_recurrent_mode=default_recurrent_mode,
        )


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
        super().__init__(
            nn.GRU(input_size, hidden_size, num_layers=num_layers, batch_first=True),
            in_key=in_key,
            out_key=out_key,
            state_keys=(state_key,),
            default_recurrent_mode=default_recurrent_mode,
        )


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
