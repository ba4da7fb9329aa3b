import torch

from mmanon.models.anonymizers import IdentityAnonymizer


def test_returns_bit_identical_copy(textured_crops):
    out = IdentityAnonymizer()(textured_crops)
    assert torch.equal(out, textured_crops)
    out[0, 0, 0, 0] += 1
    assert not torch.equal(out, textured_crops)
