import pytest
import torch

from mmanon.models.anonymizers import SolidMask


def test_scalar_fill(textured_crops):
    assert torch.equal(SolidMask()(textured_crops), torch.zeros_like(textured_crops))
    assert torch.equal(SolidMask(fill=128)(textured_crops), torch.full_like(textured_crops, 128))


def test_per_channel_fill(textured_crops):
    out = SolidMask(fill=[10, 20, 30])(textured_crops)
    for channel, value in enumerate((10, 20, 30)):
        assert torch.equal(out[:, channel], torch.full_like(out[:, channel], value))


def test_rejects_bad_fill(textured_crops):
    with pytest.raises(ValueError, match=r'in \[0, 255\], but got 300'):
        SolidMask(fill=300)
    with pytest.raises(ValueError, match=r'but got \(\)'):
        SolidMask(fill=())
    with pytest.raises(ValueError, match='2 fill values, but the crops have 3 channels'):
        SolidMask(fill=(1, 2))(textured_crops)
