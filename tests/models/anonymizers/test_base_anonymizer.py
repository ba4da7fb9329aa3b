"""The contract shared by all anonymizers (see BaseAnonymizer)."""
import pytest
import torch

from mmanon.models.anonymizers import (BaseAnonymizer, BoxBlur, GaussianBlur, GaussianNoise, IdentityAnonymizer,
                                       Pixelate, ResNetAnonymizer, SolidMask)
from mmanon.registry import MODELS

HANDCRAFTED = [IdentityAnonymizer, BoxBlur, GaussianBlur, Pixelate, SolidMask, GaussianNoise]


@pytest.mark.parametrize('cls', HANDCRAFTED + [ResNetAnonymizer])
def test_registered(cls):
    assert issubclass(cls, BaseAnonymizer)
    assert MODELS.get(cls.__name__) is cls


@pytest.mark.parametrize('cls', HANDCRAFTED)
def test_handcrafted_take_any_size(cls):
    anonymizer = cls()
    assert anonymizer.crop_size is None
    for shape in [(0, 3, 16, 16), (1, 3, 1, 1), (2, 3, 1, 7), (2, 3, 5, 2), (3, 1, 23, 31)]:
        crops = torch.rand(shape) * 255
        out = anonymizer(crops)
        assert out.shape == crops.shape and out.dtype == crops.dtype
        if crops.numel():
            assert 0 <= out.min() and out.max() <= 255
            assert out.data_ptr() != crops.data_ptr()


@pytest.mark.parametrize('cls', HANDCRAFTED)
def test_handcrafted_same_operation_on_every_crop(cls, textured_crops):
    anonymizer = cls()
    batch = anonymizer(textured_crops)
    for i, crop in enumerate(textured_crops):
        torch.testing.assert_close(anonymizer(crop[None])[0], batch[i], rtol=0, atol=1e-4)
    torch.testing.assert_close(anonymizer(textured_crops), batch, rtol=0, atol=0)


@pytest.mark.parametrize('cls', [BoxBlur, GaussianBlur, Pixelate, SolidMask, GaussianNoise])
def test_changes_textured_crop(cls, textured_crops):
    difference = (cls()(textured_crops) - textured_crops).abs().mean()
    assert difference > 10


@pytest.mark.parametrize('crops, error', [(torch.zeros(3, 16, 16), ValueError),
                                          (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), TypeError)])
def test_rejects_bad_input(crops, error):
    with pytest.raises(error, match='BoxBlur expects'):
        BoxBlur()(crops)


def test_rejects_bad_crop_size():
    with pytest.raises(ValueError, match='pair of positive ints'):
        ResNetAnonymizer(crop_size=(64, ))
