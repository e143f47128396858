"""The Nature CNN encoder: shapes, layouts, PPO's init, uint8 scaling, the shared-trunk memo."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ppokit.modules.cnn import NatureCNN, SharedTrunk, orthogonal_linear


def _gram(weight: torch.Tensor) -> torch.Tensor:
    w = weight.reshape(weight.shape[0], -1)
    return w @ w.T


def test_layer_shapes_follow_the_nature_network() -> None:
    cnn = NatureCNN((4, 84, 84))
    convs = [m for m in cnn.convs if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (4, 32, (8, 8), (4, 4)),
        (32, 64, (4, 4), (2, 2)),
        (64, 64, (3, 3), (1, 1)),
    ]
    # 84 -> (84 - 8) / 4 + 1 = 20 -> (20 - 4) / 2 + 1 = 9 -> (9 - 3) / 1 + 1 = 7: 64 * 7 * 7
    assert cnn.fc.in_features == 3136 and cnn.fc.out_features == 512
    assert sum(isinstance(m, nn.ReLU) for m in cnn.convs) == 3


@pytest.mark.parametrize(
    ("shape", "layout", "batch"),
    [((4, 84, 84), "CHW", (3,)), ((40, 44, 3), "HWC", (2, 5)), ((1, 36, 40), "CHW", ())],
)
def test_any_leading_batch_dims(shape, layout, batch) -> None:
    cnn = NatureCNN(shape, layout=layout)
    x = torch.randint(0, 256, (*batch, *shape), dtype=torch.uint8)
    assert cnn(x).shape == (*batch, 512)


def test_hwc_is_the_permuted_chw_network() -> None:
    torch.manual_seed(0)
    chw = NatureCNN((3, 40, 48))
    hwc = NatureCNN((40, 48, 3), layout="HWC")
    hwc.load_state_dict(chw.state_dict())
    x = torch.randint(0, 256, (2, 3, 40, 48), dtype=torch.uint8)
    torch.testing.assert_close(hwc(x.permute(0, 2, 3, 1)), chw(x))


def test_bytes_are_scaled_to_unit_range_inside() -> None:
    torch.manual_seed(0)
    scaled = NatureCNN((2, 36, 36))
    raw = NatureCNN((2, 36, 36), scale=1.0)
    raw.load_state_dict(scaled.state_dict())
    x = torch.randint(0, 256, (2, 2, 36, 36), dtype=torch.uint8)
    torch.testing.assert_close(scaled(x), raw(x.float() / 255.0))


def test_orthogonal_init_with_relu_gain_and_zero_bias() -> None:
    cnn = NatureCNN((4, 84, 84))
    layers = [m for m in cnn.convs if isinstance(m, nn.Conv2d)] + [cnn.fc]
    for layer in layers:
        # rows (filters) fewer than fan-in: orthonormal rows scaled by sqrt(2) -> W W^T = 2 I
        gram = _gram(layer.weight.detach())
        torch.testing.assert_close(gram, 2.0 * torch.eye(gram.shape[0]), atol=1e-4, rtol=0)
        assert float(layer.bias.detach().abs().sum()) == 0.0


@pytest.mark.parametrize("gain", [0.01, 1.0])
def test_head_gains(gain: float) -> None:
    head = orthogonal_linear(512, 6, gain=gain)
    gram = _gram(head.weight.detach())
    torch.testing.assert_close(gram, gain**2 * torch.eye(6), atol=1e-6, rtol=1e-4)
    assert math.isclose(
        float(orthogonal_linear(512, 1, gain=1.0).weight.detach().norm()), 1.0, rel_tol=1e-5
    )


def test_wrong_batch_shape_and_layout_are_refused() -> None:
    cnn = NatureCNN((4, 84, 84))
    with pytest.raises(ValueError, match=r"got a batch of shape \(2, 84, 84, 4\)"):
        cnn(torch.zeros(2, 84, 84, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="layout 'CHW' or 'HWC'"):
        NatureCNN((4, 84, 84), layout="NCHW")  # type: ignore[arg-type]


def test_shared_trunk_runs_once_for_two_readers_of_one_batch() -> None:
    calls = []
    inner = nn.Linear(3, 2)
    inner.register_forward_hook(lambda *a: calls.append(1))
    trunk = SharedTrunk(inner)
    x = torch.randn(4, 3)
    a, b = trunk(x), trunk(x)
    assert b is a and len(calls) == 1
    trunk(x.clone())  # other memory: computed
    assert len(calls) == 2
    with torch.no_grad():  # acting / GAE: never memoised
        trunk(x)
        trunk(x)
    assert len(calls) == 4


def test_shared_trunk_memo_is_dropped_when_parameters_or_input_change() -> None:
    trunk = SharedTrunk(nn.Linear(3, 2))
    opt = torch.optim.SGD(trunk.parameters(), lr=0.1)
    x = torch.randn(4, 3)
    first = trunk(x)
    first.sum().backward()
    opt.step()  # in-place parameter update: version counters move
    second = trunk(x)
    assert second is not first
    torch.testing.assert_close(second, trunk.trunk(x))
    x.add_(1.0)  # the input rewritten in place
    third = trunk(x)
    assert third is not second
    torch.testing.assert_close(third, trunk.trunk(x))


def test_shared_trunk_gradients_equal_two_separate_calls() -> None:
    # reference: the same network called twice (no memo); both heads' losses summed
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(5, 8), nn.ReLU())
    head_a, head_b = nn.Linear(8, 1), nn.Linear(8, 1)
    x = torch.randn(6, 5)
    memo = SharedTrunk(inner)
    (head_a(memo(x)).sum() + head_b(memo(x)).square().sum()).backward()
    memo_grads = [p.grad.clone() for p in inner.parameters()]
    inner.zero_grad()
    (head_a(inner(x)).sum() + head_b(inner(x)).square().sum()).backward()
    for got, want in zip(memo_grads, (p.grad for p in inner.parameters())):
        torch.testing.assert_close(got, want)
