import pytest
import torch

from mmanon.models.anonymizers import GaussianNoise


def test_same_pattern_for_same_size(textured_crops):
    anonymizer = GaussianNoise(sigma=40., seed=3)
    first = anonymizer(textured_crops)
    assert torch.equal(anonymizer(textured_crops), first)
    assert torch.equal(GaussianNoise(sigma=40., seed=3)(textured_crops), first)
    assert not torch.equal(GaussianNoise(sigma=40., seed=4)(textured_crops), first)


def test_one_pattern_for_every_crop_of_a_batch():
    # Mid-grey crops and a small sigma keep the noise away from the clamp.
    crops = torch.full((4, 3, 16, 16), 128.)
    noise = GaussianNoise(sigma=5.)(crops) - crops
    assert torch.equal(noise, noise[:1].expand_as(noise))


def test_independent_of_global_random_state(textured_crops):
    torch.manual_seed(1)
    first = GaussianNoise()(textured_crops)
    state = torch.get_rng_state()
    torch.manual_seed(2)
    torch.rand(10)
    assert torch.equal(GaussianNoise()(textured_crops), first)
    torch.set_rng_state(state)
    expected_next = torch.rand(3)
    torch.set_rng_state(state)
    GaussianNoise()(textured_crops)
    assert torch.equal(torch.rand(3), expected_next)


def test_noise_level_and_range():
    crops = torch.full((1, 3, 64, 64), 128.)
    noise = GaussianNoise(sigma=10.)(crops) - crops
    assert noise.std().item() == pytest.approx(10., rel=0.05)
    assert abs(noise.mean().item()) < 0.5
    extremes = torch.cat([torch.zeros(1, 3, 32, 32), torch.full((1, 3, 32, 32), 255.)])
    out = GaussianNoise(sigma=40.)(extremes)
    assert out.min() == 0 and out.max() == 255
    assert out[0].mean() > 10 and out[1].mean() < 245


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match='sigma must be non-negative, but got -1.0'):
        GaussianNoise(sigma=-1.)
    with pytest.raises(ValueError, match='seed must be a non-negative int, but got 0.5'):
        GaussianNoise(seed=0.5)
