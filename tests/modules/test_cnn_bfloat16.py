"""NatureCNN with ``compute_dtype=torch.bfloat16``: the layers in bfloat16, the rest float32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ppokit.modules.cnn import NatureCNN, SharedTrunk


def _pixels(n: int = 6) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 4, 36, 36), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )


def _bfloat16_by_hand(cnn: NatureCNN, pixels: torch.Tensor) -> torch.Tensor:
    # the reference: every layer's input, weight and bias rounded to bfloat16 by hand
    h = (pixels.float() / 255.0).bfloat16()
    for conv in cnn.convs[::2]:
        h = torch.relu(F.conv2d(h, conv.weight.bfloat16(), conv.bias.bfloat16(), conv.stride))
    fc = cnn.fc
    return torch.relu(F.linear(h.flatten(1), fc.weight.bfloat16(), fc.bias.bfloat16())).float()


def test_bfloat16_features_are_the_bfloat16_arithmetic() -> None:
    torch.manual_seed(0)
    cnn = NatureCNN((4, 36, 36), compute_dtype=torch.bfloat16)
    pixels = _pixels()
    with torch.no_grad():
        out = cnn(pixels)
        by_hand = _bfloat16_by_hand(cnn, pixels)
        cnn.compute_dtype = None
        f32 = cnn(pixels)
    assert out.dtype == torch.float32 and out.shape == (6, 512)
    # bfloat16 keeps 8 significant bits: the features move off float32's by about 2^-8 of
    # their size, and sit (up to kernel rounding) on the by-hand bfloat16 computation
    off_f32 = float((out - f32).abs().max())
    assert 1e-4 < off_f32 < 0.02 * float(f32.abs().max())
    assert float((out - by_hand).abs().max()) <= 0.1 * off_f32


def test_weights_and_gradients_stay_float32_and_near_float32_gradients() -> None:
    torch.manual_seed(0)
    cnn = NatureCNN((4, 36, 36), compute_dtype=torch.bfloat16)
    pixels = _pixels()
    target = torch.randn(6, 512, generator=torch.Generator().manual_seed(4))

    def grads() -> list[torch.Tensor]:
        cnn.zero_grad()
        (cnn(pixels) * target).sum().backward()
        return [p.grad.clone() for p in cnn.parameters()]

    bf16 = grads()
    cnn.compute_dtype = None
    f32 = grads()
    for p, g, ref in zip(cnn.parameters(), bf16, f32, strict=True):
        assert p.dtype == g.dtype == torch.float32
        cosine = float(F.cosine_similarity(g.flatten(), ref.flatten(), dim=0))
        assert cosine > 0.99, cosine
        assert not torch.equal(g, ref)  # really computed in bfloat16


def test_shared_trunk_reuses_the_bfloat16_output() -> None:
    trunk = SharedTrunk(NatureCNN((4, 36, 36), compute_dtype=torch.bfloat16))
    pixels = _pixels(2)
    first = trunk(pixels)
    assert trunk(pixels) is first and first.dtype == torch.float32


def test_float16_and_other_dtypes_are_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"compute_dtype must be None \(float32\) or torch.bfloat16, got torch.float16",
    ):
        NatureCNN((4, 36, 36), compute_dtype=torch.float16)
