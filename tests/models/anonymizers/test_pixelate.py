import pytest
import torch

from mmanon.models.anonymizers import Pixelate


def test_blocks_hold_their_mean():
    crops = torch.rand(2, 3, 5, 7) * 255
    out = Pixelate(block_size=2)(crops)
    # Blocks start at the top-left; the last row and column form partial blocks.
    for rows in (slice(0, 2), slice(2, 4), slice(4, 5)):
        for cols in (slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 7)):
            block = out[..., rows, cols]
            mean = crops[..., rows, cols].mean(dim=(-2, -1), keepdim=True)
            torch.testing.assert_close(block, mean.expand_as(block))


def test_crop_smaller_than_a_block_becomes_flat():
    crops = torch.rand(1, 3, 3, 5) * 255
    out = Pixelate(block_size=8)(crops)
    torch.testing.assert_close(out, crops.mean(dim=(-2, -1), keepdim=True).expand_as(crops))


def test_rejects_bad_block_size():
    with pytest.raises(ValueError, match='positive int, but got 0'):
        Pixelate(block_size=0)
