import numpy as np
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


def test_uint8_path_of_the_video_tool_puts_rgb_fill_values_in_bgr_order():
    image = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    out = SolidMask(fill=[10, 20.4, 30.6]).anonymize_bgr(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out, np.broadcast_to(np.array([31, 20, 10], np.uint8), image.shape))
    np.testing.assert_array_equal(SolidMask(fill=127.6).anonymize_bgr(image), np.full_like(image, 128))
    with pytest.raises(ValueError, match='2 fill values, but the crops have 3 channels'):
        SolidMask(fill=(1, 2)).anonymize_bgr(image)
