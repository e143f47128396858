"""MLP: forward against a hand-written forward, orthogonal init, argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ppokit.modules.mlp import MLP, orthogonal_init_


def _linears(mlp: nn.Module) -> list[nn.Linear]:
    return [m for m in mlp if isinstance(m, nn.Linear)]


def test_forward_matches_hand_written_forward():
    torch.manual_seed(0)
    mlp = MLP(3, 2, num_cells=(5, 4))
    x = torch.randn(7, 3)
    lin = _linears(mlp)
    assert len(lin) == 3
    # x -> tanh(x W1^T + b1) -> tanh(. W2^T + b2) -> . W3^T + b3, written without nn.Linear
    h = x
    for i, layer in enumerate(lin):
        w, b = layer.weight.detach(), layer.bias.detach()
        h = torch.stack(
            [torch.stack([(row * w[j]).sum() + b[j] for j in range(w.shape[0])]) for row in h]
        )
        if i < len(lin) - 1:
            h = torch.tanh(h)
    torch.testing.assert_close(mlp(x), h, rtol=1e-5, atol=1e-6)


def test_forward_with_layer_norm_and_relu_matches_hand_written_forward():
    torch.manual_seed(1)
    mlp = MLP(4, 3, num_cells=(6,), activation_class=nn.ReLU, layer_norm=True)
    assert [type(m) for m in mlp] == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear]
    # give the LayerNorm non-trivial affine parameters so they are exercised
    with torch.no_grad():
        mlp[1].weight.uniform_(0.5, 1.5)
        mlp[1].bias.uniform_(-0.5, 0.5)
    x = torch.randn(5, 4)
    h = x @ mlp[0].weight.T + mlp[0].bias
    mean = h.mean(-1, keepdim=True)
    var = ((h - mean) ** 2).mean(-1, keepdim=True)  # biased variance, as LayerNorm uses
    h = (h - mean) / torch.sqrt(var + 1e-5) * mlp[1].weight + mlp[1].bias
    h = torch.clamp(h, min=0.0)
    expected = h @ mlp[3].weight.T + mlp[3].bias
    torch.testing.assert_close(mlp(x), expected)


def test_orthogonal_init_gains_and_biases():
    torch.manual_seed(2)
    mlp = MLP(3, 2, num_cells=(16, 16), output_gain=0.01, bias_init=0.1)
    first, hidden, out = _linears(mlp)
    # [16, 3]: more rows than columns, so the columns are orthonormal: W^T W = gain^2 I
    torch.testing.assert_close(first.weight.T @ first.weight, 2.0 * torch.eye(3), atol=1e-5, rtol=0)
    # square [16, 16]: W W^T = gain^2 I
    torch.testing.assert_close(
        hidden.weight @ hidden.weight.T, 2.0 * torch.eye(16), atol=1e-5, rtol=0
    )
    # [2, 16] output with gain 0.01: W W^T = 1e-4 I
    torch.testing.assert_close(out.weight @ out.weight.T, 1e-4 * torch.eye(2), atol=1e-8, rtol=0)
    for layer in (first, hidden, out):
        torch.testing.assert_close(layer.bias, torch.full_like(layer.bias, 0.1))


def test_default_gains_are_the_ppo_ones():
    mlp = MLP(8, 8, num_cells=(8,))
    first, out = _linears(mlp)
    torch.testing.assert_close(first.weight @ first.weight.T, 2.0 * torch.eye(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.weight @ out.weight.T, torch.eye(8), atol=1e-5, rtol=0)
    assert torch.equal(first.bias.detach(), torch.zeros(8))


def test_orthogonal_init_helper():
    layer = orthogonal_init_(nn.Linear(5, 5), gain=3.0, bias=-1.0)
    torch.testing.assert_close(layer.weight @ layer.weight.T, 9.0 * torch.eye(5), atol=1e-5, rtol=0)
    assert torch.equal(layer.bias, torch.full((5,), -1.0))


def test_default_init_keeps_pytorch_init():
    torch.manual_seed(3)
    mlp = MLP(4, 2, num_cells=(3,), init="default")
    torch.manual_seed(3)
    ref = nn.Linear(4, 3)  # same RNG stream, same PyTorch init
    torch.testing.assert_close(mlp[0].weight, ref.weight)


def test_no_hidden_layers_is_a_linear_map():
    mlp = MLP(3, 2, num_cells=())
    assert len(mlp) == 1 and isinstance(mlp[0], nn.Linear)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(in_features=0, out_features=2), ValueError, r"in_features must be a positive int"),
        (dict(in_features=3, out_features=-1), ValueError, r"out_features must be a positive int"),
        (dict(in_features=2.5, out_features=1), ValueError, r"in_features .*float"),
        (dict(in_features=True, out_features=1), ValueError, r"in_features .*bool"),
        (dict(in_features=3, out_features=1, num_cells=64), TypeError, r"num_cells=\(64,\)"),
        (dict(in_features=3, out_features=1, num_cells=(64, 0)), ValueError, r"num_cells\[1\]"),
        (dict(in_features=3, out_features=1, init="xavier"), ValueError, r"'orthogonal' or"),
        (
            dict(in_features=3, out_features=1, init="default", output_gain=0.01),
            ValueError,
            r"output_gain only apply to init='orthogonal'",
        ),
        (dict(in_features=3, out_features=1, hidden_gain=-1.0), ValueError, r"hidden_gain"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MLP(**kwargs)


def test_wrong_input_width_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"expected an input of shape \[\*B, 3\], got \[2, 4\]"):
        MLP(3, 1)(torch.zeros(2, 4))
