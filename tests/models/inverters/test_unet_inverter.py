import pytest
import torch

from mmanon.models import UNetInverter
from mmanon.registry import MODELS, build_in_scope


def test_shapes_range_and_gradients():
    inverter = build_in_scope(MODELS, dict(type='UNetInverter', base_channels=4, num_stages=2, crop_size=(16, 12)))
    assert isinstance(inverter, UNetInverter)
    crops = (torch.rand(3, 3, 16, 12) * 255).requires_grad_()
    restored = inverter(crops)
    assert restored.shape == crops.shape and restored.dtype == torch.float32
    assert restored.min() >= 0 and restored.max() <= 255
    restored.mean().backward()
    assert crops.grad.abs().sum() > 0
    assert all(p.grad is not None for p in inverter.parameters())


def test_learns_to_undo_a_fixed_change():
    # Colour inversion (255 - x) of random crops: the inverter must learn a mapping, not only copy its input
    # through the skips.
    torch.manual_seed(0)
    inverter = UNetInverter(base_channels=8, num_stages=1, crop_size=(4, 4))
    raw = torch.rand(8, 3, 4, 4) * 255
    optimizer = torch.optim.Adam(inverter.parameters(), lr=2e-2)
    losses = []
    for _ in range(60):
        loss = (inverter(255 - raw) - raw).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5


def test_invalid_arguments_are_explained():
    with pytest.raises(ValueError, match='multiple of 2 \\*\\* num_stages = 4'):
        UNetInverter(num_stages=2, crop_size=(30, 32))
    with pytest.raises(ValueError, match='must be positive'):
        UNetInverter(base_channels=0)
    with pytest.raises(ValueError, match=r'crops must be \(N, 3, 32, 32\)'):
        UNetInverter()(torch.zeros(1, 3, 16, 16))
