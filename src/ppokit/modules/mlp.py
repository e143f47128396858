"""A plain multi-layer perceptron with the initialisation PPO implementations rely on.

The "implementation details" studies of PPO (Engstrom et al. 2020, "Implementation Matters in Deep
Policy Gradients"; Andrychowicz et al. 2021, "What Matters in On-Policy RL"; Huang et al. 2022,
"The 37 Implementation Details of PPO") found that orthogonal weights with gain ``sqrt(2)`` on the
hidden layers, zero biases, and a *small* policy output layer (gain ``0.01``) measurably help: the
initial policy is then close to uniform / zero-mean, so early updates are not dominated by an
arbitrary initial preference. The value head uses gain ``1.0``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

__all__ = ["MLP", "orthogonal_init_"]

#: output_gain recommended for a policy head (logits or Gaussian loc/scale parameters).
POLICY_OUTPUT_GAIN = 0.01
#: output_gain recommended for a value head.
VALUE_OUTPUT_GAIN = 1.0

_DEFAULT_HIDDEN_GAIN = math.sqrt(2.0)
_DEFAULT_OUTPUT_GAIN = 1.0
_DEFAULT_BIAS_INIT = 0.0


def orthogonal_init_(layer: nn.Linear, *, gain: float, bias: float = 0.0) -> nn.Linear:
    """Set ``layer.weight`` to a (semi-)orthogonal matrix times ``gain`` and fill its bias.

    For a weight ``W`` of shape ``[out, in]`` the rows (if ``out <= in``) or the columns are
    orthonormal, scaled by ``gain``: ``W @ W.T == gain**2 * I`` when ``out <= in``.

    Args:
        layer: the linear layer to initialise in place.
        gain: multiplier of the orthogonal matrix.
        bias: constant the bias is filled with (ignored if the layer has no bias).

    Returns:
        The same layer, for chaining.

    Example:
        >>> layer = orthogonal_init_(nn.Linear(8, 3), gain=2.0)
        >>> torch.allclose(layer.weight @ layer.weight.T, 4.0 * torch.eye(3), atol=1e-5)
        True
    """
    nn.init.orthogonal_(layer.weight, gain=gain)
    if layer.bias is not None:
        nn.init.constant_(layer.bias, bias)
    return layer


def _check_positive_int(name: str, value: object) -> int:
    # bool is an int subclass: MLP(True, 2) is almost surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"MLP: {name} must be a positive int, got {value!r} ({type(value).__name__}). "
            f"Pass the number of features, e.g. {name}=4."
        )
    return value


class MLP(nn.Sequential):
    """Fully connected network ``Linear -> [LayerNorm] -> activation -> ... -> Linear``.

    Input ``[*B, in_features]``, output ``[*B, out_features]``. The last layer has no activation.

    Args:
        in_features: size of the input's last dim.
        out_features: size of the output's last dim.
        num_cells: widths of the hidden layers; ``()`` gives a single linear layer.
        activation_class: class of the hidden activation, instantiated once per hidden layer.
        init: ``"orthogonal"`` (orthogonal weights, constant biases; the PPO default) or
            ``"default"`` (keep PyTorch's initialisation; then the gains and ``bias_init`` must
            stay at their defaults, because they would otherwise be silently ignored).
        hidden_gain: gain of the hidden layers' orthogonal weights (``sqrt(2)``, suited to
            tanh/ReLU).
        output_gain: gain of the output layer. Recommended: ``0.01`` for a policy head
            (near-uniform initial policy), ``1.0`` for a value head.
        bias_init: value all biases are filled with.
        layer_norm: add a ``LayerNorm`` after each hidden linear layer, before its activation.

    Example:
        >>> policy_net = MLP(4, 2, num_cells=(64, 64), output_gain=0.01)
        >>> policy_net(torch.zeros(5, 4)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        num_cells: Sequence[int] = (64, 64),
        activation_class: Callable[[], nn.Module] = nn.Tanh,
        init: Literal["orthogonal", "default"] = "orthogonal",
        hidden_gain: float = _DEFAULT_HIDDEN_GAIN,
        output_gain: float = _DEFAULT_OUTPUT_GAIN,
        bias_init: float = _DEFAULT_BIAS_INIT,
        layer_norm: bool = False,
    ) -> None:
        _check_positive_int("in_features", in_features)
        _check_positive_int("out_features", out_features)
        if isinstance(num_cells, (int, str)) or not isinstance(num_cells, Sequence):
            raise TypeError(
                f"MLP: num_cells must be a sequence of ints (one width per hidden layer), got "
                f"{num_cells!r}. For one hidden layer of 64 units pass num_cells=(64,)."
            )
        for i, width in enumerate(num_cells):
            _check_positive_int(f"num_cells[{i}]", width)
        if init not in ("orthogonal", "default"):
            raise ValueError(f"MLP: init must be 'orthogonal' or 'default', got {init!r}.")
        if init == "default":
            changed = [
                name
                for name, value, default in (
                    ("hidden_gain", hidden_gain, _DEFAULT_HIDDEN_GAIN),
                    ("output_gain", output_gain, _DEFAULT_OUTPUT_GAIN),
                    ("bias_init", bias_init, _DEFAULT_BIAS_INIT),
                )
                if value != default
            ]
            if changed:
                raise ValueError(
                    f"MLP: {', '.join(changed)} only apply to init='orthogonal', but "
                    f"init='default' was given. Use init='orthogonal' or drop {changed}."
                )
        for name, gain in (("hidden_gain", hidden_gain), ("output_gain", output_gain)):
            if not math.isfinite(gain) or gain < 0:
                raise ValueError(f"MLP: {name} must be a finite number >= 0, got {gain!r}.")

        layers: list[nn.Module] = []
        widths = [in_features, *num_cells]
        for fan_in, fan_out in itertools.pairwise(widths):
            linear = nn.Linear(fan_in, fan_out)
            if init == "orthogonal":
                orthogonal_init_(linear, gain=hidden_gain, bias=bias_init)
            layers.append(linear)
            if layer_norm:
                layers.append(nn.LayerNorm(fan_out))
            layers.append(activation_class())
        head = nn.Linear(widths[-1], out_features)
        if init == "orthogonal":
            orthogonal_init_(head, gain=output_gain, bias=bias_init)
        layers.append(head)
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"MLP: expected an input of shape [*B, {self.in_features}], got "
                f"{list(input.shape)}. Check the observation size the network was built for."
            )
        return super().forward(input)
