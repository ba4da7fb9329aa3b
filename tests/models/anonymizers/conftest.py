import pytest
import torch


@pytest.fixture
def textured_crops():
    """Two 3-channel 16x16 crops of seeded uniform noise in [0, 255]: texture that every anonymizer must
    change."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 16, 16, generator=generator) * 255
