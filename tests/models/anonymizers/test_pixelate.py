import numpy as np
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


@pytest.mark.parametrize('size,block', [((48, 64), 8), ((64, 48), 8), ((24, 10), 3), ((20, 10), 3), ((3, 3), 1)])
def test_block_ratio_is_a_fraction_of_the_longer_side(size, block):
    crops = torch.rand(1, 3, *size) * 255
    torch.testing.assert_close(Pixelate(block_ratio=0.125)(crops), Pixelate(block_size=block)(crops), rtol=0,
                               atol=0)


def test_block_ratio_is_the_default():
    assert Pixelate().block_size is None and Pixelate().block_ratio == Pixelate.default_block_ratio


def test_rejects_bad_block_size():
    with pytest.raises(ValueError, match='positive int, but got 0'):
        Pixelate(block_size=0)
    with pytest.raises(ValueError, match='block_ratio must be in'):
        Pixelate(block_ratio=0)
    with pytest.raises(ValueError, match='not both'):
        Pixelate(block_size=4, block_ratio=0.1)


@pytest.mark.parametrize('pixelate,size', [(Pixelate(block_size=2), (5, 7)), (Pixelate(block_size=8), (3, 5)),
                                           (Pixelate(block_ratio=0.2), (97, 64)), (Pixelate(block_ratio=0.2), (1, 1)),
                                           (Pixelate(block_ratio=0.125), (24, 10))])
def test_uint8_path_of_the_video_tool_has_the_same_blocks(pixelate, size):
    """``anonymize_bgr`` gives the blocks of the float path, partial ones included, their means rounded."""
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    out = pixelate.anonymize_bgr(image[:, ::-1][:, ::-1])  # a view with a stride, as a region of a frame is
    exact = pixelate(torch.from_numpy(image).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out, np.rint(exact.astype(np.float64)))
